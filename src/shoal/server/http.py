"""The node's HTTP port: /health, /status (JSON), /metrics (Prometheus), and /faults, the
fault-injection hook the torture test uses to cut links without touching the processes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .node import Node


class _NodeCollector:
    """Reads the node's figures at scrape time, so nothing is updated on the hot path."""

    def __init__(self, node: Node):
        self.node = node

    def collect(self) -> Iterator[Any]:
        n = self.node
        st = n.status()
        labels = {"node": str(n.id)}
        gauges = {
            "shoal_is_leader": (1 if st["role"] == "leader" else 0, "1 if this node leads"),
            "shoal_term": (st["term"], "current Raft term"),
            "shoal_commit_index": (st["commit"], "highest committed log index"),
            "shoal_applied_index": (st["applied"], "highest applied log index"),
            "shoal_kv_revision": (st["revision"], "MVCC store revision"),
            "shoal_db_size_bytes": (st["db_size"], "approximate size of the key-value data"),
            "shoal_wal_bytes": (st["wal_bytes"], "bytes of WAL and snapshots on disk"),
            "shoal_pending_requests": (len(n._proposals) + len(n._reads), "requests in flight"),
        }
        for name, (value, doc) in gauges.items():
            g = GaugeMetricFamily(name, doc, labels=list(labels))
            g.add_metric(list(labels.values()), value)
            yield g
        for name, value in n.stats.items():
            c = CounterMetricFamily(f"shoal_{name}", f"{name.replace('_', ' ')} since start",
                                    labels=list(labels))
            c.add_metric(list(labels.values()), value)
            yield c
        match = GaugeMetricFamily("shoal_peer_match_index", "leader's view of each follower",
                                  labels=["node", "peer"])
        for peer, p in st["peers"].items():
            match.add_metric([str(n.id), str(peer)], p["match"])
        yield match


def make_app(node: Node) -> web.Application:
    registry = CollectorRegistry()
    registry.register(_NodeCollector(node))  # type: ignore[arg-type]

    async def health(_: web.Request) -> web.Response:
        ok = node.leader != 0
        return web.json_response({"health": ok, "leader": node.leader}, status=200 if ok else 503)

    async def status(_: web.Request) -> web.Response:
        return web.json_response(node.status(), dumps=_dumps)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    async def faults(req: web.Request) -> web.Response:
        if req.method == "POST":
            try:
                body = await req.json()
                if body.get("heal"):
                    node.faults.heal()
                else:
                    node.faults.update(**body)
            except (ValueError, TypeError, AttributeError) as exc:
                return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(node.faults.as_dict(), dumps=_dumps)

    app = web.Application(client_max_size=64 * 1024)
    app.add_routes([web.get("/health", health), web.get("/status", status),
                    web.get("/metrics", metrics), web.get("/faults", faults),
                    web.post("/faults", faults)])
    return app


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, default=lambda o: sorted(o) if isinstance(o, set | frozenset) else str(o))
