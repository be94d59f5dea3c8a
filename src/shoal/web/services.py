"""The services panels' figures, read through the public client API: every instance registered
in the cluster's registry (shoal.registry: one key per instance under /shoal/services/, on its
lease, so a listed instance is one whose process keeps its lease alive), and every
primary-backup service (shoal.failover: its primary, whose key's create revision is the
fencing token in force, and its members)."""

from __future__ import annotations

from typing import Any

import msgpack

from ..client import Client
from ..failover.fencing import ROOT as FAILOVER_ROOT
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


async def primaries(client: Client) -> dict[str, Any]:
    """`{service: {"primary": id or None, "address", "mode", "token", "members": [ids]}}`."""
    resp = await client.get(FAILOVER_ROOT, prefix=True, limit=MAX_INSTANCES, serializable=True)
    out: dict[str, dict[str, Any]] = {}
    for kv in resp.kvs:
        service, _, name = kv.key[len(FAILOVER_ROOT):].partition(b"/")
        entry = out.setdefault(service.decode(errors="replace"), {
            "primary": None, "address": None, "mode": None, "token": 0, "members": []})
        if name == b"primary":
            try:
                value = msgpack.unpackb(kv.value, raw=False)
            except (ValueError, TypeError, msgpack.UnpackException):
                value = {}
            if isinstance(value, dict):
                entry.update(primary=value.get("id"), address=value.get("addr"),
                             mode=value.get("mode"))
            entry["token"] = kv.create_revision  # the fencing token (shoal.failover.fencing)
        elif name.startswith(b"members/") and name[8:].isdigit():
            entry["members"].append(int(name[8:]))
    return dict(sorted(out.items()))
