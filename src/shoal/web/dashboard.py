"""The dashboard's routes, shared by every node's HTTP port and by `shoal dashboard`:

    GET /dashboard                 the page (open: it holds no data, only the code that draws it)
    GET /dashboard/assets/NAME     its JavaScript and CSS, shipped in the package (no CDN)
    GET /dashboard/stream          server-sent views and events (shoal.web.feed); admin-only
                                   whenever an admin token is configured, as /status is

The page asks the viewer for the admin token and sends it on every request it makes
(`Authorization: Bearer`); the token is never written into the page. Faults go where each
node's entry in the view says (`faults_url`): a node's own /faults, or the aggregator's
forwarder to it. A node serves a view of itself: its groups, its links and its fault plan;
the aggregator's view holds every node, the ones that do not answer marked down."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

from .feed import Feed

ASSETS = frozenset({"dashboard.js", "dashboard.css"})
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
Guard = Callable[[Callable[[web.Request], Awaitable[web.StreamResponse]]],
                 Callable[[web.Request], Awaitable[web.StreamResponse]]]


def asset(name: str) -> str:
    """The text of a file in shoal/web/assets."""
    return resources.files("shoal.web").joinpath("assets", name).read_text(encoding="utf-8")


def routes(feed: Feed, guard: Guard) -> list[web.RouteDef]:
    """The page, its assets, and the stream behind `guard` (the admin check)."""
    page = asset("dashboard.html")

    async def dashboard(_: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def assets(req: web.Request) -> web.Response:
        name = req.match_info["name"]
        if name not in ASSETS:  # a fixed list: no path from the request reaches the disk
            raise web.HTTPNotFound(text=f"no asset {name!r}; there are {sorted(ASSETS)}")
        return web.Response(text=asset(name), content_type=_TYPES[name[name.rindex("."):]])

    return [web.get("/dashboard", dashboard), web.get("/dashboard/assets/{name}", assets),
            web.get("/dashboard/stream", guard(feed.stream))]


def node_feed(node: Any) -> Feed:
    """A node's feed: a view of itself alone, taken only while someone watches."""
    key = str(node.id)

    async def view() -> dict[str, Any]:
        return {"t": time.time(), "source": f"node {node.id}", "process_control": False,
                "nodes": {key: {"id": node.id, "endpoint": "this node", "up": True, "error": None,
                                "status": node.status(), "faults_url": "/faults"}}}

    return Feed(view)
