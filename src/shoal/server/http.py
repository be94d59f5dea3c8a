"""The node's HTTP port: /health, /status (JSON), /metrics (Prometheus), and /faults, the
fault-injection hook the torture test uses to cut links without touching the processes.

/health answers 200 `{"health": true, "leader": ID, "reasons": []}` when the member is healthy,
and 503 with the reasons when it is not (health.py says when)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .health import unhealthy_reasons
from .node import Node


class _NodeCollector:
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
    registry.register(_NodeCollector(node))  # type: ignore[arg-type]

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
