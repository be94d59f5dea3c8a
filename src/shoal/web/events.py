"""What changed between two views of the cluster, as the events the dashboard's timeline lists.

A *view* is what the dashboard streams: the time it was taken (`t`, seconds) and each node's
`/status` answer, or why there was none:

    {"t": 12.5, "nodes": {"1": {"id": 1, "endpoint": "127.0.0.1:8001", "up": true,
                                "error": null, "status": {...GET /status...}}, ...}}

`Observer.observe(view)` compares a view with the one before and returns the new events:
nodes going down and coming back, elections and leader changes per group (with the likeliest
reason: the old leader went down, was cut off by a fault, or lost its term some other way),
membership changes, fault plans changed, alarms raised and cleared. It also annotates the view
in place with what only a comparison can give: messages per second on every link, and each
group's last election. Pure: time arrives in the view, nothing here does I/O."""

from __future__ import annotations

from collections import deque
from typing import Any

MAX_EVENTS = 500  # kept for a viewer who connects later; older ones are dropped


def group_leaders(view: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Each group's (term, leader) by the nodes that answer: the highest term any of them
    reports, with the leader named in it (0 while none is known)."""
    best: dict[str, tuple[int, int]] = {}
    for node in view["nodes"].values():
        st = node.get("status")
        if not node.get("up") or st is None:
            continue
        for gid, g in st["groups"].items():
            seen = (g["term"], g["leader"] if g["role"] != "candidate" else 0)
            if str(gid) not in best or seen > best[str(gid)]:
                best[str(gid)] = seen
    return best


class Observer:
    def __init__(self, max_events: int = MAX_EVENTS):
        self.events: deque[dict[str, Any]] = deque(maxlen=max_events)
        self.elections: dict[str, dict[str, Any]] = {}  # group -> its last election seen
        self._prev: dict[str, Any] | None = None

    def observe(self, view: dict[str, Any]) -> list[dict[str, Any]]:
        """The events since the previous view; `view` gains `elections` and per-node `rates`."""
        prev, self._prev = self._prev, view
        new: list[dict[str, Any]] = []
        if prev is not None:
            t = view["t"]
            new += self._nodes(prev, view, t)
            new += self._groups(prev, view, t)
            _rates(prev, view)
        view["elections"] = self.elections
        self.events.extend(new)
        return new

    def _nodes(self, prev: dict[str, Any], cur: dict[str, Any], t: float) -> list[dict[str, Any]]:
        out = []
        for key, node in cur["nodes"].items():
            before = prev["nodes"].get(key)
            if before is None:
                continue
            name = f"n{node.get('id') or key}"
            if before["up"] and not node["up"]:
                out.append(_event(t, "down", f"{name} is down: {node.get('error') or 'no answer'}"))
            elif node["up"] and not before["up"]:
                out.append(_event(t, "up", f"{name} answers again"))
            old, new = before.get("status"), node.get("status")
            if old is None or new is None:
                continue
            if old.get("faults") != new.get("faults"):
                out.append(_event(t, "fault", f"{name} fault plan: {_plan(new.get('faults'))}"))
            for alarm in _alarm_set(new) - _alarm_set(old):
                out.append(_event(t, "alarm", f"alarm {alarm[1]} raised for member {alarm[0]}"))
            for alarm in _alarm_set(old) - _alarm_set(new):
                out.append(_event(t, "alarm", f"alarm {alarm[1]} cleared for member {alarm[0]}"))
        return out

    def _groups(self, prev: dict[str, Any], cur: dict[str, Any], t: float) -> list[dict[str, Any]]:
        out = []
        before, now = group_leaders(prev), group_leaders(cur)
        for gid, (term, leader) in now.items():
            old = before.get(gid)
            if old is None or (term, leader) == old or leader == 0:
                continue
            why = _why(prev, cur, old[1]) if old[1] != leader else "re-elected"
            what = f"group {gid}: n{leader} leads in term {term}" + (
                f" (was n{old[1]}, term {old[0]}): {why}" if old[1] else f": {why}")
            self.elections[gid] = {"t": t, "term": term, "leader": leader, "previous": old[1],
                                   "why": why}
            out.append(_event(t, "leader", what, group=gid))
        voters_before, voters_now = _voters(prev), _voters(cur)
        for gid, voters in voters_now.items():
            if gid in voters_before and voters_before[gid] != voters:
                out.append(_event(t, "membership", f"group {gid} voters {voters_before[gid]} -> "
                                                   f"{voters}", group=gid))
        return out


def _why(prev: dict[str, Any], cur: dict[str, Any], old_leader: int) -> str:
    """The likeliest reason the leader changed, from what the views show of the old one."""
    if old_leader == 0:
        return "first leader seen"
    node = _by_id(cur, old_leader)
    if node is None or not node["up"]:
        return f"n{old_leader} went down"
    faults = (node.get("status") or {}).get("faults") or {}
    if faults.get("block_to") or faults.get("block_from"):
        return f"n{old_leader} was cut off by a fault"
    for other in cur["nodes"].values():
        f = (other.get("status") or {}).get("faults") or {}
        if old_leader in f.get("block_to", ()) or old_leader in f.get("block_from", ()):
            return f"links to n{old_leader} were cut"
    old_node = _by_id(prev, old_leader)
    if old_node is not None and not old_node["up"]:
        return f"n{old_leader} had been down"
    return "the old leader stepped down (a transfer, or it lost its heartbeats)"


def _rates(prev: dict[str, Any], cur: dict[str, Any]) -> None:
    """Messages per second each way on each of a node's links, from two counter readings
    (taken at the node's `at` when it has one: nodes polled apart are each timed alone)."""
    for key, node in cur["nodes"].items():
        before = prev["nodes"].get(key) or {}
        old, st = before.get("status"), node.get("status")
        dt = node.get("at", cur["t"]) - before.get("at", prev["t"])
        if old is None or st is None or dt <= 0:
            if st is not None and old is st:  # the same answer again: the same rates
                node["rates"] = before.get("rates", {})
            continue
        rates = {}
        for peer, link in st.get("links", {}).items():
            was = old.get("links", {}).get(peer)
            if was is None:
                continue
            rates[peer] = {"sent_per_s": max(0.0, (link["sent_frames"] - was["sent_frames"]) / dt),
                           "received_per_s": max(0.0, (link["received_frames"]
                                                       - was["received_frames"]) / dt)}
        node["rates"] = rates


def _by_id(view: dict[str, Any], node_id: int) -> dict[str, Any] | None:
    return next((n for n in view["nodes"].values() if n.get("id") == node_id), None)


def _voters(view: dict[str, Any]) -> dict[str, list[int]]:
    """Each group's voters as its leader reports them (followers may lag)."""
    out: dict[str, list[int]] = {}
    for node in view["nodes"].values():
        st = node.get("status")
        if node.get("up") and st is not None:
            for gid, g in st["groups"].items():
                if g["role"] == "leader":
                    out[str(gid)] = g["voters"]
    return out


def _alarm_set(status: dict[str, Any]) -> set[tuple[int, str]]:
    return {(a[0], a[1]) for a in status.get("alarms", ())}


def _plan(faults: dict[str, Any] | None) -> str:
    if not faults:
        return "none"
    parts = [f"{k} {faults[k]}" for k in ("block_to", "block_from") if faults.get(k)]
    parts += [f"{k} {faults[k]}" for k in ("drop", "delay", "jitter") if faults.get(k)]
    return ", ".join(parts) or "healed"


def _event(t: float, kind: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"t": t, "kind": kind, "text": text, **extra}
