"""Node configuration from a TOML file and command-line flags (flags win). Every mistake is
reported by name: an unknown key, a malformed address, a missing peer, a port in use."""

from __future__ import annotations

import socket
import tomllib
import types
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from ..kv.watch_queue import DEFAULT_WATCH_QUEUE_BYTES, DEFAULT_WATCH_QUEUE_EVENTS
from ..net.tls import TLSConfig

DEFAULT_MAX_REQUEST_BYTES = 1536 * 1024  # 1.5 MiB, as etcd
DEFAULT_QUOTA_BACKEND_BYTES = 2 * 1024**3  # 2 GiB, etcd's --quota-backend-bytes default


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which setting and why."""


@dataclass(frozen=True)
class Member:
    id: int
    peer: tuple[str, int]
    client: tuple[str, int]
    etcd: tuple[str, int] | None = None  # where this member serves etcd's gRPC API, if it does
    kafka: tuple[str, int] | None = None  # where it serves Kafka's protocol, if it does

    def describe(self) -> str:
        spec = f"{self.id}={self.peer[0]}:{self.peer[1]}/{self.client[0]}:{self.client[1]}"
        if self.kafka:
            etcd = f"{self.etcd[0]}:{self.etcd[1]}" if self.etcd else "-"
            return spec + f"/{etcd}/{self.kafka[0]}:{self.kafka[1]}"
        return spec + (f"/{self.etcd[0]}:{self.etcd[1]}" if self.etcd else "")


@dataclass(frozen=True)
class NodeConfig:
    id: int
    data_dir: Path
    members: tuple[Member, ...]  # the initial cluster (bootstrap), including this node
    cluster_id: str = "shoal"
    http: tuple[str, int] = ("127.0.0.1", 0)
    etcd_gateway: tuple[str, int] | None = None  # an extra HTTP-only listener; the etcd port has HTTP
    engine: str = "raft"
    join: bool = False  # start as a new member of a running cluster (no bootstrap)
    tick_ms: int = 50
    election_ticks: int = 10
    snapshot_entries: int = 10_000  # applied entries between snapshots
    auto_compact_revisions: int = 100_000  # history kept; older revisions compacted (0 = never)
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_pending_requests: int = 10_000  # per node, proposals + reads in flight
    max_connections: int = 1_000
    # A watch whose unsent responses (client port or etcd Watch stream) pass either bound is
    # canceled with "watcher could not keep up ... re-create it from revision R".
    watch_queue_events: int = DEFAULT_WATCH_QUEUE_EVENTS
    watch_queue_bytes: int = DEFAULT_WATCH_QUEUE_BYTES
    fsync: bool = True
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    repair: bool = False
    # Security (docs/security.md). /faults exists only with allow_faults, and then only for
    # requests carrying the admin token; the peer secret authenticates peers without TLS.
    allow_faults: bool = False
    admin_token_file: Path | None = None
    peer_secret_file: Path | None = None
    quota_backend_bytes: int = DEFAULT_QUOTA_BACKEND_BYTES  # past it, writes that add data fail
    client_idle_timeout_s: float = 300.0  # a client connection silent this long is closed
    max_connections_per_address: int = 256  # client connections from one IP address

    def tls(self) -> TLSConfig | None:
        """This node's certificate, key and CA, when TLS is configured (then on every port)."""
        if self.tls_cert and self.tls_key and self.tls_ca:
            return TLSConfig(self.tls_cert, self.tls_key, self.tls_ca)
        return None

    @property
    def me(self) -> Member:
        return next(m for m in self.members if m.id == self.id)

    def validate(self) -> NodeConfig:
        if self.id <= 0:
            raise ConfigError(f"id must be a positive integer, not {self.id}")
        ids = [m.id for m in self.members]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"duplicate member ids in members: {ids}")
        if self.id not in ids:
            raise ConfigError(f"this node's id {self.id} is not among the members {sorted(ids)}")
        if self.engine not in ("raft", "paxos"):
            raise ConfigError(f"engine must be 'raft' or 'paxos', not {self.engine!r}")
        for name in ("tick_ms", "election_ticks", "snapshot_entries", "max_request_bytes",
                     "max_pending_requests", "max_connections", "watch_queue_events",
                     "watch_queue_bytes", "quota_backend_bytes", "client_idle_timeout_s",
                     "max_connections_per_address"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, not {getattr(self, name)}")
        if self.election_ticks < 3:
            raise ConfigError("election_ticks must be at least 3 (heartbeats are one tick)")
        tls = [self.tls_cert, self.tls_key, self.tls_ca]
        if any(tls) and not all(tls):
            raise ConfigError("TLS needs all of tls_cert, tls_key and tls_ca")
        for p in filter(None, tls):
            if not p.is_file():
                raise ConfigError(f"TLS file {p} does not exist")
        if self.allow_faults and self.admin_token_file is None:
            raise ConfigError("allow_faults needs admin_token_file: /faults can partition the "
                              "cluster, so only the admin may call it")
        for name in ("admin_token_file", "peer_secret_file"):
            p = getattr(self, name)
            if p is not None and not p.is_file():
                raise ConfigError(f"{name} {p} does not exist")
            if p is not None and not p.read_bytes().strip():
                raise ConfigError(f"{name} {p} is empty: a secret must be hard to guess")
        return self


def parse_addr(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{what}: {text!r} is not host:port")
    return host or "127.0.0.1", int(port)


_MEMBER_FORM = "ID=HOST:PEER_PORT/HOST:CLIENT_PORT[/HOST:ETCD_PORT|-[/HOST:KAFKA_PORT]]"


def parse_member(text: str) -> Member:
    """`ID=HOST:PEER_PORT/HOST:CLIENT_PORT[/HOST:ETCD_PORT[/HOST:KAFKA_PORT]]`, e.g.
    `1=127.0.0.1:7001/127.0.0.1:2380/127.0.0.1:2379` (the third: etcd's gRPC API, `-` for
    none; the fourth: Kafka's protocol)."""
    ident, sep, rest = text.strip().partition("=")
    parts = rest.split("/")
    if not sep or len(parts) not in (2, 3, 4) or not ident.isdigit():
        raise ConfigError(f"member {text!r} is not {_MEMBER_FORM}")
    etcd = parse_addr(parts[2], f"member {ident} etcd address") \
        if len(parts) >= 3 and parts[2] != "-" else None
    kafka = parse_addr(parts[3], f"member {ident} kafka address") if len(parts) == 4 else None
    return Member(int(ident), parse_addr(parts[0], f"member {ident} peer address"),
                  parse_addr(parts[1], f"member {ident} client address"), etcd, kafka)


def parse_members(text: str) -> tuple[Member, ...]:
    return tuple(parse_member(t) for t in text.split(",") if t.strip())


_SIMPLE = {f.name for f in fields(NodeConfig)} - {"members"}


def load(toml_path: Path | None, overrides: dict[str, Any]) -> NodeConfig:
    """Merge a TOML file and flag overrides (None = not given) into a validated config."""
    raw: dict[str, Any] = {}
    if toml_path is not None:
        try:
            raw = tomllib.loads(toml_path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {toml_path}: {exc}") from None
    raw.update({k: v for k, v in overrides.items() if v is not None})
    known = _SIMPLE | {"members"}
    if unknown := sorted(set(raw) - known):
        raise ConfigError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
    for req in ("id", "data_dir", "members"):
        if req not in raw:
            raise ConfigError(f"missing required setting {req!r}")
    members = raw.pop("members")
    if isinstance(members, str):
        members = parse_members(members)
    elif isinstance(members, list) and all(isinstance(m, str) for m in members):
        members = tuple(parse_member(m) for m in members)
    else:
        raise ConfigError(f"members must be a string or a list of strings, not {members!r}")
    hints = get_type_hints(NodeConfig)
    kw = {k: _coerce(k, v, hints[k]) for k, v in raw.items()}
    return NodeConfig(members=members, **kw).validate()


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """`value` as the setting's declared type, or a ConfigError naming setting and type."""
    want = [a for a in get_args(hint) if a is not type(None)] \
        if get_origin(hint) in (Union, types.UnionType) else [hint]
    kind = want[0]
    if value is None and len(want) < len(get_args(hint)):
        return None
    if kind is Path and isinstance(value, str | Path):
        return Path(value)
    if get_origin(kind) is tuple:  # an address
        if isinstance(value, str):
            return parse_addr(value, name)
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
            return value
    if kind is float and type(value) is int:
        return float(value)
    if kind in (bool, int, float, str) and type(value) is kind:
        return value
    expected = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
                Path: "a path"}.get(kind, "HOST:PORT")
    raise ConfigError(f"{name} must be {expected}, not {value!r}")


def check_port_free(addr: tuple[str, int], what: str) -> None:
    """Fail early with a clear message rather than deep inside asyncio."""
    if addr[1] == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            raise ConfigError(f"{what} address {addr[0]}:{addr[1]} is not available: {exc.strerror}") from None

