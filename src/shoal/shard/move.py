"""Moving a group's replica from one node to another, through membership changes, on the
client API: how load is balanced between processes.

1. the directory lists the target as a *joiner*: it opens an empty replica of the group;
2. the group's leader adds it as a learner, and the driver waits until it has applied what
   the leader had committed;
3. the learner is promoted to voter, then the source is removed from the group;
4. the directory lists the source as *gone*: it closes its replica and deletes its files.

The group keeps a majority of caught-up voters throughout: it never has fewer voters than it
started with until step 3's removal, which comes after the target votes. Each step is safe to
run again. A replica is never moved back to a node it left (replica/directory.py says why)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..client.aio import Client

CATCH_UP_TIMEOUT_S = 60.0


class MoveError(Exception):
    """A move that cannot be made; the message says why."""


async def _node_status(client: Client, node: int) -> dict[str, Any] | None:
    for ep in client.endpoints:
        try:
            st = await client.status(ep, timeout=2)
        except Exception:  # noqa: BLE001 - a node that is down is not the one we look for
            continue
        if st.get("id") == node:
            return st
    return None


def _line(st: dict[str, Any] | None, group: int) -> dict[str, Any]:
    groups = (st or {}).get("groups", {})
    found = groups.get(group) or groups.get(str(group))
    return found or {}


async def move_replica(client: Client, group: int, source: int, target: int) -> list[int]:
    """Move `group`'s replica on node `source` to node `target`; returns the group's voters."""
    if group == 0:
        raise MoveError("the meta group's members are the cluster's: use shoal member add/remove")
    listed = await client.groups()
    if group not in listed:
        raise MoveError(f"group {group} does not exist")
    view = client.group(group)
    if target not in listed[group]:
        await client.call("group_host", {"group": group, "node": target, "join": True})
    line = await view.call("group_member", {"group": group, "node": target,
                                             "change": "add-learner"})
    want = int(line["commit"]) if line else 0
    loop = asyncio.get_running_loop()
    end = loop.time() + CATCH_UP_TIMEOUT_S
    while True:  # the learner must hold the log before it votes
        g = _line(await _node_status(client, target), group)
        if g and g["applied"] >= want:
            break
        if loop.time() > end:
            raise MoveError(f"node {target} did not catch up with group {group} in "
                            f"{CATCH_UP_TIMEOUT_S:.0f} s (it applied "
                            f"{g['applied'] if g else 0} of {want}); nothing was removed")
        await asyncio.sleep(0.05)
    line = await view.call("group_member", {"group": group, "node": target, "change": "add"})
    if line and line.get("leader") == source:  # (a leader removing itself would step down
        # mid-answer: hand the group to the newcomer first)
        await view.call("transfer", {"to": target, "group": group})
        while _line(await _node_status(client, target), group).get("role") != "leader":
            if loop.time() > end:
                raise MoveError(f"node {target} did not take over group {group}")
            await asyncio.sleep(0.05)
    line = await view.call("group_member", {"group": group, "node": source, "change": "remove"})
    await client.call("group_host", {"group": group, "node": source, "join": False})
    return list(line["voters"]) if line else []
