"""The node's HTTP port: /health, /status (JSON), /metrics (Prometheus), and /faults, the
fault-injection hook the torture test uses to cut links without touching the processes.

/health answers 200 `{"health": true, "leader": ID, "reasons": []}` when the member is healthy,
and 503 with the reasons when it is not (health.py says when).

/dashboard is the live page (shoal.web.dashboard); its stream is admin-only as /status is.

Who may call what: /health and /metrics are open. /faults exists only when the node runs with
`allow_faults` (404 otherwise), and every request to it, GET or POST, must carry
`Authorization: Bearer TOKEN`, TOKEN being the contents of `admin_token_file`; so must /status
whenever an admin token is configured. A POST /faults body is checked whole before any of it
applies, so a 400 changes nothing."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..web.dashboard import node_feed
from ..web.dashboard import routes as dashboard_routes
from .config import ConfigError
from .health import unhealthy_reasons
from .node import Node

MAX_BODY_BYTES = 64 * 1024
MAX_BODY_DEPTH = 8  # a fault plan is an object of lists; deeper JSON is refused before parsing
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class NodeCollector:
    """Reads the node's figures at scrape time, so nothing is updated on the hot path."""

    def __init__(self, node: Node):
        self.node = node

    def collect(self) -> Iterator[Any]:
        n = self.node
        st = n.status()
        node = str(n.id)
        per_group = {
            "shoal_is_leader": ("1 if this node leads the group", lambda g: int(g["role"] == "leader")),
            "shoal_term": ("current term (Raft) or ballot round (Paxos)", lambda g: g["term"]),
            "shoal_commit_index": ("highest committed log index", lambda g: g["commit"]),
            "shoal_applied_index": ("highest applied log index", lambda g: g["applied"]),
        }
        for name, (doc, read) in per_group.items():
            fam = GaugeMetricFamily(name, doc, labels=["node", "group"])
            for gid, g in st["groups"].items():
                fam.add_metric([node, str(gid)], read(g))
            yield fam
        gauges = {
            "shoal_kv_revision": (st["revision"], "MVCC store revision"),
            "shoal_db_size_bytes": (st["db_size"], "approximate size of the key-value data"),
            "shoal_wal_bytes": (st["wal_bytes"], "bytes of WAL and snapshots on disk"),
            "shoal_groups": (len(st["groups"]), "consensus groups with a replica here"),
        }
        for name, (value, doc) in gauges.items():
            fam = GaugeMetricFamily(name, doc, labels=["node"])
            fam.add_metric([node], value)
            yield fam
        for name, value in n.stats.items():
            c = CounterMetricFamily(f"shoal_{name}", f"{name.replace('_', ' ')} since start",
                                    labels=["node"])
            c.add_metric([node], value)
            yield c
        group_counters: dict[str, CounterMetricFamily] = {}
        for gid, stats in n.group_stats().items():
            for name, value in stats.items():
                c = group_counters.setdefault(name, CounterMetricFamily(
                    f"shoal_{name}", f"{name.replace('_', ' ')} since start", labels=["node", "group"]))
                c.add_metric([node, str(gid)], value)
        yield from group_counters.values()
        match = GaugeMetricFamily("shoal_peer_match_index", "leader's view of each follower",
                                  labels=["node", "group", "peer"])
        for peer, p in st["peers"].items():
            match.add_metric([node, "0", str(peer)], p["match"])
        yield match


def make_app(node: Node) -> web.Application:
    registry = CollectorRegistry()
    registry.register(NodeCollector(node))  # type: ignore[arg-type]
    admin_only = admin_guard(read_admin_token(node.cfg.admin_token_file))

    async def health(_: web.Request) -> web.Response:
        st = node.status()
        reasons = unhealthy_reasons(st)
        return web.json_response({"health": not reasons, "leader": st["leader"], "reasons": reasons},
                                 status=503 if reasons else 200)

    async def status(_: web.Request) -> web.Response:
        return web.json_response(node.status(), dumps=_dumps)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    async def faults(req: web.Request) -> web.Response:
        if req.method == "POST":
            try:
                body = _parse_fault_body(await req.read())
                if "heal" in body:
                    node.faults.heal()
                else:
                    node.faults.update(**body)
            except ValueError as exc:
                return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(node.faults.as_dict(), dumps=_dumps)

    async def faults_off(_: web.Request) -> web.Response:
        return web.json_response(
            {"error": "fault injection is off on this node; start it with --allow-faults "
                      "and --admin-token-file (allow_faults and admin_token_file in its config)"},
            status=404)

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    fault_handler = admin_only(faults) if node.cfg.allow_faults else faults_off
    app.add_routes([web.get("/health", health), web.get("/status", admin_only(status)),
                    web.get("/metrics", metrics), web.get("/faults", fault_handler),
                    web.post("/faults", fault_handler)])
    feed = node_feed(node)  # the live page of this node (shoal.web), its stream admin-only
    app.add_routes(dashboard_routes(feed, admin_only))
    app.on_shutdown.append(lambda _: feed.stop())
    return app


def admin_guard(token: bytes | None) -> Callable[[_Handler], _Handler]:
    """Wraps a handler so it answers 401 unless the request carries `token` (None: open)."""
    def admin_only(handler: _Handler) -> _Handler:
        async def checked(req: web.Request) -> web.StreamResponse:
            if token is not None and not _bearer_matches(req, token):
                return web.json_response(
                    {"error": "this endpoint needs the admin token: send "
                              "'Authorization: Bearer TOKEN', TOKEN from the node's admin_token_file"},
                    status=401, headers={"WWW-Authenticate": 'Bearer realm="shoal"'})
            return await handler(req)
        return checked
    return admin_only


def read_admin_token(path: Path | None) -> bytes | None:
    """The admin token, read once at start; None when none is configured."""
    if path is None:
        return None
    try:
        token = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read admin_token_file {path}: {exc.strerror}") from None
    if not token:  # an empty token would let `Bearer ` through
        raise ConfigError(f"admin_token_file {path} is empty")
    return token


def _bearer_matches(req: web.Request, token: bytes) -> bool:
    scheme, _, given = req.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token)


def _parse_fault_body(raw: bytes) -> dict[str, Any]:
    """A POST /faults body as a dict of settings, or ValueError saying what is wrong with it.
    `{"heal": true}` alone heals; anything else is a set of FaultPlan settings."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the body is not UTF-8 text") from None
    if _depth(text) > MAX_BODY_DEPTH:
        raise ValueError(f"the body nests deeper than {MAX_BODY_DEPTH} levels")
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError(f"the body must be a JSON object of fault settings, not {type(body).__name__}")
    if "heal" in body and (len(body) != 1 or body["heal"] is not True):
        raise ValueError('heal must be true and alone: {"heal": true}')
    return body


def _depth(text: str) -> int:
    """The deepest nesting of [ and { in JSON text, outside strings; linear, no recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=lambda o: sorted(o) if isinstance(o, set | frozenset) else str(o))
