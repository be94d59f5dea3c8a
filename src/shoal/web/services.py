"""The services panel's figures: every instance registered in the cluster's registry
(shoal.registry: one key per instance under /shoal/services/, on its lease, so a listed
instance is one whose process keeps its lease alive), read through the public client API."""

from __future__ import annotations

from typing import Any

from ..client import Client
from ..registry import ROOT, Instance

MAX_INSTANCES = 2000  # listed per read; the view says when there were more


async def registered(client: Client) -> dict[str, Any]:
    """`{"services": {name: [instance, ...]}, "more": bool}`, instances sorted by id."""
    resp = await client.get(ROOT.encode(), prefix=True, limit=MAX_INSTANCES, serializable=True)
    services: dict[str, list[dict[str, Any]]] = {}
    for kv in resp.kvs:
        try:
            i = Instance.from_kv(kv.key, kv.value)
        except ValueError:
            continue  # not an instance's key: the registry's own readers skip it too
        services.setdefault(i.service, []).append(
            {"id": i.id, "address": i.address, "weight": i.weight, "zone": i.zone,
             "version": i.version, "tags": list(i.tags)})
    for instances in services.values():
        instances.sort(key=lambda x: x["id"])
    return {"services": dict(sorted(services.items())), "more": resp.more}
