"""`shoal app status`: every component of the deployed applications, its replicas and their
health, read the way any caller sees them: the registry's entries (`<app>.<Component>`
services), then each replica's own GET /health."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ..registry.instance import ROOT, Instance

HEALTH_TIMEOUT_S = 1.0


async def app_status(client: Any, app: str | None = None) -> list[dict[str, Any]]:
    """One row per registered replica of an application's component, health included."""
    resp = await client.get(ROOT.encode(), prefix=True)
    rows: list[dict[str, Any]] = []
    for kv in resp.kvs:
        try:
            inst = Instance.from_kv(kv.key, kv.value)
        except ValueError:
            continue
        app_name, dot, component = inst.service.partition(".")
        if not dot or (app is not None and app_name != app):
            continue
        tags = dict(t.partition("=")[::2] for t in inst.tags)
        rows.append({"app": app_name, "component": component, "replica": inst.id,
                     "group": tags.get("group", ""), "rpc": inst.address,
                     "http": tags.get("http", ""), "grpc": tags.get("grpc", ""),
                     "pid": int(tags.get("pid", 0) or 0)})
    healths = await asyncio.gather(*(health(r["http"]) for r in rows))
    for r, h in zip(rows, healths, strict=True):
        r["health"], r["running_calls"] = h.get("status", "unreachable"), h.get("running_calls")
    rows.sort(key=lambda r: (r["app"], r["component"], r["replica"]))
    return rows


async def health(address: str) -> dict[str, Any]:
    """The replica's /health answer, or {"status": why not} (a plain HTTP/1.0 GET: no client
    library needed for one small JSON document)."""
    if not address:
        return {"status": "unknown"}
    host, _, port = address.rpartition(":")
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(f"GET /health HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
            data = await reader.read(64 * 1024)
            writer.close()
    except (OSError, TimeoutError):
        return {"status": "unreachable"}
    _, _, body = data.partition(b"\r\n\r\n")
    try:
        answer: dict[str, Any] = json.loads(body)
        return answer
    except ValueError:
        return {"status": "bad answer"}
