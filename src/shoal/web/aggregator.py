"""`shoal dashboard`: one page for the whole cluster. It polls every node's GET /status (with
the admin token) every `interval_s`, each node on its own task with a timeout, and the view
is the latest answer of each: a slow node delays nobody else's figures, and one that is down
or paused is shown down, with why (refused at once; no answer within the timeout twice in a
row: once is shown as late, the last answer standing). Every
couple of seconds it also reads the service registry through a client (shoal.web.services)
and the /metrics of every registered instance that names its HTTP port (shoal.web.methods),
and every second each `--gateways` admin port (shoal.web.gateways).

Its own port serves the dashboard's routes (shoal.web.dashboard) and two more, each needing
the same admin token from the viewer when one is configured:

    POST /dashboard/faults/ID    forwarded to node ID's POST /faults, with the viewer's token
    POST /dashboard/process/ID   {"op": "kill"|"stop"|"start"|"restart"|"pause"|"resume"},
                                 carried out by the `shoal cluster up` supervisor of `--dir`
                                 (shoal.local.cluster.ClusterControl); 404 without one"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from ..client import Client, ClientError
from ..kv.errors import KVError
from ..local.cluster import OPERATIONS, ask_supervisor, read_state
from ..server.config import parse_member
from ..server.http import MAX_BODY_BYTES, admin_guard
from . import methods
from .dashboard import routes
from .feed import Feed
from .gateways import figures, scrape
from .services import primaries, registered

SERVICES_EVERY_S = 2.0
GATEWAY_EVERY_S = 1.0
MAX_SCRAPED = 200  # component processes whose /metrics are read per round


@dataclass
class Target:
    endpoint: str  # host:port of the node's HTTP port
    id: int | None = None  # learnt from its first answer, kept while it is down


class Aggregator:
    def __init__(self, endpoints: list[str], token: str | None, root: Path | None = None,
                 interval_s: float = 0.5, timeout_s: float = 1.0,
                 client_options: dict[str, Any] | None = None,
                 gateways: Sequence[str] = ()):
        if not endpoints:
            raise ValueError("no node endpoints to watch")
        self.targets = [Target(e) for e in endpoints]
        self.token, self.root = token, root
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self.latest = {t.endpoint: self._entry(t, "not polled yet") for t in self.targets}
        self.client_options = client_options or {}  # credentials and TLS for the registry
        tls = self.client_options.get("tls")  # an ssl.SSLContext when TLS is on
        self.node_ssl: ssl.SSLContext | bool = tls if tls is not None else True
        self.node_scheme = "https" if tls is not None else "http"
        self.services: dict[str, Any] | None = None  # what registered() last read
        # each component process's last /metrics scrape, by its http address: (counters, when)
        self._scraped: dict[str, tuple[methods.Counters, float]] = {}
        self.gateways = {g: {"admin": g, "up": False, "error": "not polled yet"} for g in gateways}
        self.feed = Feed(self.current, interval_s, always=True)
        self._session: aiohttp.ClientSession | None = None
        self._pollers: list[asyncio.Task[None]] = []

    @classmethod
    def of_cluster(cls, root: Path, **kw: Any) -> Aggregator:
        """Watch the `shoal cluster up` cluster in `root`, able to kill and restart its nodes."""
        state = read_state(root)
        targets = [n["http"] for n in state["nodes"]]
        agg = cls(targets, (root / "admin-token").read_text().strip(), root, **kw)
        for t, n in zip(agg.targets, state["nodes"], strict=True):
            t.id = n["id"]
        return agg

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def start(self) -> None:
        """Open the HTTP session; `poll` too: keep polling every node (what the server does).
        With TLS on (a context in the client options, SHOAL_CACERT...), the nodes' HTTP ports
        speak HTTPS, and the same context verifies them; gateways and component processes
        keep plain HTTP."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))

    async def poll(self) -> None:
        """Poll every node once (the first view holds them all: no node seems to come up),
        then keep polling each on its own task."""
        first = await asyncio.gather(*(self._poll(t) for t in self.targets))
        self.latest = {t.endpoint: e for t, e in zip(self.targets, first, strict=True)}
        self._pollers = [asyncio.create_task(self._poll_forever(t), name=f"poll-{t.endpoint}")
                         for t in self.targets]
        self._pollers.append(asyncio.create_task(self._services_forever(), name="poll-services"))
        self._pollers += [asyncio.create_task(self._gateway_forever(g), name=f"poll-gateway-{g}")
                          for g in self.gateways]
        await self.feed.start()

    async def stop(self) -> None:
        await self.feed.stop()
        for task in self._pollers:
            task.cancel()
        await asyncio.gather(*self._pollers, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def current(self) -> dict[str, Any]:
        """The view of the latest answers."""
        return self._view(dict(self.latest))

    async def view(self) -> dict[str, Any]:
        """A view of fresh answers: every node polled now."""
        answers = await asyncio.gather(*(self._poll(t) for t in self.targets))
        return self._view({t.endpoint: a for t, a in zip(self.targets, answers, strict=True)})

    def _view(self, nodes: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {"t": time.time(), "source": f"{len(self.targets)} nodes",
                "process_control": self.root is not None, "nodes": nodes,
                "services": self.services, "gateways": list(self.gateways.values())}

    async def _gateway_forever(self, admin: str) -> None:
        """A gateway's routing state and figures, from its admin port every GATEWAY_EVERY_S."""
        assert self._session is not None
        last: tuple[float, dict[str, Any]] | None = None
        while True:
            try:
                async with self._session.get(f"http://{admin}/backends") as r:
                    state = await r.json()
                async with self._session.get(f"http://{admin}/metrics") as r:
                    counters, now = scrape(await r.text()), time.monotonic()
                entry = {"admin": admin, "up": True, "error": None, "state": state,
                         "figures": figures(last[1], counters, now - last[0])
                         if last is not None and now > last[0] else None}
                last = (now, counters)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                entry = {"admin": admin, "up": False, "state": None, "figures": None,
                         "error": f"no answer from its admin port: {exc.__class__.__name__}"}
                last = None
            self.gateways[admin] = entry
            await asyncio.sleep(GATEWAY_EVERY_S)

    async def _services_forever(self) -> None:
        """The registry, read through a client of the members' client ports (learnt from
        their /status) every SERVICES_EVERY_S."""
        client: Client | None = None
        try:
            while True:
                if client is None:
                    ends = sorted({"{}:{}".format(*parse_member(spec).client)
                                   for e in self.latest.values() if e["status"]
                                   for spec in e["status"]["members"].values()})
                    client = Client(ends, timeout=self.timeout_s * 2, **self.client_options) \
                        if ends else None
                if client is not None:
                    try:
                        found = await registered(client)
                        self.services = {**found, "primary_backup": await primaries(client),
                                         "methods": await self._methods(found["services"])}
                    except (ClientError, KVError, OSError, ValueError) as exc:
                        self.services = {"error": f"the registry could not be read: {exc}"}
                await asyncio.sleep(SERVICES_EVERY_S)
        finally:
            if client is not None:
                await client.close()

    async def _methods(self, services: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        """Per service: its methods' figures since the last round, from the /metrics of each
        instance that names its HTTP port in a tag (shoal.app's processes do), or why not."""
        assert self._session is not None
        targets = [(name, i["id"], tag[5:]) for name, instances in services.items()
                   for i in instances for tag in i["tags"] if tag.startswith("http=")]
        targets = targets[:MAX_SCRAPED]

        async def one(address: str) -> tuple[Any, str | None]:
            try:
                async with self._session.get(f"http://{address}/metrics") as r:  # type: ignore[union-attr]
                    if r.status != 200:
                        return None, f"/metrics answered {r.status}: {(await r.text())[:80]}"
                    return methods.scrape(await r.text()), None
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                return None, f"no answer from {address}: {exc.__class__.__name__}"

        answers = await asyncio.gather(*(one(address) for _, _, address in targets))
        now = time.monotonic()
        out: dict[str, Any] = {}
        pairs: dict[str, dict[str, tuple[methods.Counters, methods.Counters, float]]] = {}
        for (name, ident, address), (scraped, error) in zip(targets, answers, strict=True):
            entry = out.setdefault(name, {"rows": [], "errors": [], "callers": {}})
            if scraped is None:
                entry["errors"].append(f"{ident}: {error}")
                self._scraped.pop(address, None)
                continue
            counters, callers = scraped
            if callers:
                entry["callers"][ident] = callers
            last = self._scraped.get(address)
            if last is not None and now > last[1]:
                pairs.setdefault(name, {})[ident] = (last[0], counters, now - last[1])
            self._scraped[address] = (counters, now)
        for name, scrapes in pairs.items():
            out[name]["rows"] = methods.figures(scrapes)
        live = {address for _, _, address in targets}
        for gone in set(self._scraped) - live:  # deregistered: forget its last scrape
            del self._scraped[gone]
        return out

    async def _poll_forever(self, t: Target) -> None:
        late = 0  # answers missed in a row by the timeout
        while True:
            started = time.monotonic()
            entry = await self._poll(t)
            late = late + 1 if entry.get("late") else 0
            was = self.latest[t.endpoint]
            if late == 1 and was["up"]:
                # One late answer on a loaded machine is not a dead node: the last one stands,
                # marked late, until a second is missed. A refusal counts at once.
                entry = {**was, "late": entry["error"]}
            elif entry["up"] != was["up"]:
                self.feed.kick()  # a node went down or came back: show it now
            self.latest[t.endpoint] = entry
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    async def _poll(self, t: Target) -> dict[str, Any]:
        assert self._session is not None, "start() first"
        entry = self._entry(t, None)
        try:
            async with self._session.get(f"{self.node_scheme}://{t.endpoint}/status",
                                         headers=self.headers, ssl=self.node_ssl) as r:
                if r.status != 200:
                    entry["error"] = f"/status answered {r.status}: {(await r.text())[:200]}"
                    return entry
                st = await r.json()
        except TimeoutError:
            entry["error"] = f"no answer within {self.timeout_s * 1000:.0f} ms (paused or overloaded?)"
            entry["late"] = True
            return entry
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            entry["error"] = f"unreachable: {exc.__class__.__name__}"
            return entry
        t.id = st["id"]
        entry.update(id=t.id, up=True, status=st, faults_url=f"/dashboard/faults/{t.id}",
                     at=time.time())
        return entry

    def _entry(self, t: Target, error: str | None) -> dict[str, Any]:
        """A node's place in the view before it has answered (or when it does not). Its
        process can be started, resumed or restarted whether or not it answers."""
        entry: dict[str, Any] = {"id": t.id, "endpoint": t.endpoint, "up": False,
                                 "error": error, "status": None}
        if self.root is not None and t.id is not None:
            entry["process_url"] = f"/dashboard/process/{t.id}"
        return entry

    def _target(self, req: web.Request) -> Target:
        raw = req.match_info["node"]
        t = next((t for t in self.targets if str(t.id) == raw), None)
        if t is None:
            raise web.HTTPNotFound(text=json.dumps({"error": f"no node {raw} among the watched: "
                                                   f"{[x.id for x in self.targets]}"}),
                                   content_type="application/json")
        return t

    async def forward_faults(self, req: web.Request) -> web.Response:
        assert self._session is not None
        t = self._target(req)
        headers = {"Authorization": req.headers.get("Authorization", ""),
                   "Content-Type": "application/json"}
        try:
            async with self._session.post(f"{self.node_scheme}://{t.endpoint}/faults",
                                          data=await req.read(), headers=headers,
                                          ssl=self.node_ssl) as r:
                return web.Response(body=await r.read(), status=r.status,
                                    content_type="application/json")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return web.json_response({"error": f"node {t.id} at {t.endpoint} did not answer: "
                                               f"{exc.__class__.__name__}"}, status=502)

    async def process(self, req: web.Request) -> web.Response:
        t = self._target(req)
        if self.root is None:
            return web.json_response({"error": "no supervisor: start `shoal dashboard --dir ROOT` "
                                               "on a `shoal cluster up` directory"}, status=404)
        try:
            op = (await req.json())["op"]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": 'the body must be {"op": OPERATION}'}, status=400)
        if op not in OPERATIONS:
            return web.json_response({"error": f"unknown operation {op!r}: one of "
                                               f"{', '.join(OPERATIONS)}"}, status=400)
        assert t.id is not None
        loop = asyncio.get_running_loop()
        try:
            message = await loop.run_in_executor(None, partial(ask_supervisor, self.root, op, t.id))
        except RuntimeError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        return web.json_response({"message": message})

    def app(self) -> web.Application:
        guard = admin_guard(self.token.encode() if self.token else None)

        async def home(_: web.Request) -> web.Response:
            raise web.HTTPFound("/dashboard")

        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.add_routes([web.get("/", home), *routes(self.feed, guard),
                        web.post("/dashboard/faults/{node}", guard(self.forward_faults)),
                        web.post("/dashboard/process/{node}", guard(self.process))])

        async def started(_: web.Application) -> None:
            await self.start()
            await self.poll()

        async def stopped(_: web.Application) -> None:
            await self.stop()

        app.on_startup.append(started)
        app.on_shutdown.append(stopped)  # before the server waits for the open streams
        return app

