"""The deploy configuration: which components share a process, how many replicas each
process group runs, and how callers reach each component (picker, cluster strategy, retries).

    [app]        main = "examples.shop:App"          # optional; the CLI argument wins
    [cluster]    endpoints = ["127.0.0.1:2379"]      # optional; omitted: a local 3-node Shoal
    [groups.NAME]      components = [...], replicas = N
    [components.NAME]  picker, strategy, retries, grpc, deadline_ms, forks
    [images]     app = "shoal-app:latest"            # for the Kubernetes manifests

Pure: `parse_deploy` takes the decoded TOML; `load_deploy` only adds reading the file. Every
refusal is a `ConfigError` naming the key at fault, since a typo in a deploy file otherwise
surfaces as a component that silently runs with defaults."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# "p2c", the contract's example, is the registry's least-request (power of two choices).
PICKER_ALIASES = {"p2c": "least-request"}
STRATEGIES = ("failover", "failfast", "failsafe", "failback", "forking", "broadcast")
MAX_REPLICAS = 64
MAX_RETRIES = 10


class ConfigError(ValueError):
    """The deploy file is malformed; the message names the key."""


@dataclass(frozen=True, slots=True)
class GroupConfig:
    components: tuple[str, ...]
    replicas: int = 1


@dataclass(frozen=True, slots=True)
class ComponentConfig:
    picker: str = "least-request"
    strategy: str = "failover"
    retries: int = 2  # extra attempts after the first (idempotent methods only)
    grpc: bool = False  # also serve it over gRPC (shoal.app.grpc_bridge)
    deadline_ms: int | None = None  # a default for methods that declare none
    forks: int = 2  # how many replicas a "forking" call asks at once


@dataclass(frozen=True, slots=True)
class DeployConfig:
    main: str | None = None
    endpoints: tuple[str, ...] = ()  # empty: start a local cluster
    groups: dict[str, GroupConfig] = field(default_factory=dict)
    components: dict[str, ComponentConfig] = field(default_factory=dict)
    image: str = "shoal-app:latest"

    def component(self, name: str) -> ComponentConfig:
        return self.components.get(name) or ComponentConfig()

    def group_of(self, component: str) -> str | None:
        return next((g for g, cfg in self.groups.items() if component in cfg.components), None)


def load_deploy(path: str | Path) -> DeployConfig:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as exc:
        raise ConfigError(f"{p}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    try:
        return parse_deploy(data)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def parse_deploy(data: dict[str, Any]) -> DeployConfig:
    _keys("top level", data, {"app", "cluster", "groups", "components", "images"})
    app = _table(data, "app")
    _keys("[app]", app, {"main"})
    main = app.get("main")
    if main is not None and (not isinstance(main, str) or ":" not in main):
        raise ConfigError(f"app.main: expected 'module:Name', got {main!r}")
    cluster = _table(data, "cluster")
    _keys("[cluster]", cluster, {"endpoints"})
    endpoints = cluster.get("endpoints", [])
    if not isinstance(endpoints, list) or not all(isinstance(e, str) and ":" in e
                                                  for e in endpoints):
        raise ConfigError(f"cluster.endpoints: expected a list of 'host:port', got {endpoints!r}")
    groups = {name: _group(name, g) for name, g in _table(data, "groups").items()}
    seen: dict[str, str] = {}
    for name, g in groups.items():
        for c in g.components:
            if c in seen:
                raise ConfigError(f"groups.{name}.components: {c!r} is also in group {seen[c]!r}")
            seen[c] = name
    components = {name: _component(name, c) for name, c in _table(data, "components").items()}
    images = _table(data, "images")
    _keys("[images]", images, {"app"})
    image = images.get("app", "shoal-app:latest")
    if not isinstance(image, str) or not image:
        raise ConfigError(f"images.app: expected an image name, got {image!r}")
    return DeployConfig(main, tuple(endpoints), groups, components, image)


def _group(name: str, g: Any) -> GroupConfig:
    where = f"groups.{name}"
    if not isinstance(g, dict):
        raise ConfigError(f"{where}: expected a table")
    _keys(f"[{where}]", g, {"components", "replicas"})
    comps = g.get("components")
    if not isinstance(comps, list) or not comps or not all(isinstance(c, str) for c in comps):
        raise ConfigError(f"{where}.components: expected a non-empty list of component names")
    replicas = g.get("replicas", 1)
    if isinstance(replicas, bool) or not isinstance(replicas, int) \
            or not 1 <= replicas <= MAX_REPLICAS:
        raise ConfigError(f"{where}.replicas: expected an int in 1..{MAX_REPLICAS}, "
                          f"got {replicas!r}")
    return GroupConfig(tuple(comps), replicas)


def _component(name: str, c: Any) -> ComponentConfig:
    from ..balance.registry import PICKERS

    where = f"components.{name}"
    if not isinstance(c, dict):
        raise ConfigError(f"{where}: expected a table")
    _keys(f"[{where}]", c, {"picker", "strategy", "retries", "grpc", "deadline_ms", "forks"})
    d = ComponentConfig()
    picker = c.get("picker", d.picker)
    picker = PICKER_ALIASES.get(picker, picker) if isinstance(picker, str) else picker
    if picker not in PICKERS:
        raise ConfigError(f"{where}.picker: unknown picker {picker!r}; valid: "
                          f"{', '.join(PICKERS)}")
    strategy = c.get("strategy", d.strategy)
    if strategy not in STRATEGIES:
        raise ConfigError(f"{where}.strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}")
    retries = _int(c, "retries", d.retries, 0, MAX_RETRIES, where)
    forks = _int(c, "forks", d.forks, 1, MAX_REPLICAS, where)
    grpc = c.get("grpc", d.grpc)
    if not isinstance(grpc, bool):
        raise ConfigError(f"{where}.grpc: expected true or false, got {grpc!r}")
    deadline_ms = c.get("deadline_ms")
    if deadline_ms is not None:
        deadline_ms = _int(c, "deadline_ms", 0, 1, 3_600_000, where)
    return ComponentConfig(picker, strategy, retries, grpc, deadline_ms, forks)


def _int(table: dict[str, Any], key: str, default: int, low: int, high: int, where: str) -> int:
    v = table.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise ConfigError(f"{where}.{key}: expected an int in {low}..{high}, got {v!r}")
    return v


def _table(data: dict[str, Any], key: str) -> dict[str, Any]:
    v = data.get(key, {})
    if not isinstance(v, dict):
        raise ConfigError(f"{key}: expected a table, got {type(v).__name__}")
    return v


def _keys(where: str, table: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(allowed))})")
