"""shoal.web.events: the dashboard's events and link rates, from successive views (pure)."""

from __future__ import annotations

from typing import Any

from shoal.web.events import Observer, group_leaders


def node(i: int, role: str, term: int, leader: int, *, sent: int = 0, faults: Any = None,
         alarms: Any = (), voters: Any = (1, 2, 3)) -> dict[str, Any]:
    g = {"role": role, "term": term, "leader": leader, "voters": list(voters)}
    return {"id": i, "endpoint": f"h:{i}", "up": True, "error": None, "status": {
        "groups": {"0": g}, "alarms": [list(a) for a in alarms],
        "faults": faults or {"block_to": [], "block_from": []},
        "links": {str(p): {"sent_frames": sent, "received_frames": sent // 2}
                  for p in (1, 2, 3) if p != i}}}


def down(i: int) -> dict[str, Any]:
    return {"id": i, "endpoint": f"h:{i}", "up": False, "error": "unreachable", "status": None}


def view(t: float, *nodes: dict[str, Any]) -> dict[str, Any]:
    return {"t": t, "nodes": {n["endpoint"]: n for n in nodes}}


def test_leader_change_after_a_crash_says_why() -> None:
    obs = Observer()
    assert obs.observe(view(0, node(1, "leader", 2, 1), node(2, "follower", 2, 1),
                            node(3, "follower", 2, 1))) == []
    events = obs.observe(view(1, down(1), node(2, "leader", 3, 2), node(3, "follower", 3, 2)))
    kinds = {e["kind"]: e["text"] for e in events}
    assert kinds["down"].startswith("n1 is down: unreachable")
    assert "n2 leads in term 3 (was n1, term 2): n1 went down" in kinds["leader"]
    assert obs.elections["0"] == {"t": 1, "term": 3, "leader": 2, "previous": 1,
                                  "why": "n1 went down"}
    back = obs.observe(view(2, node(1, "follower", 3, 2), node(2, "leader", 3, 2),
                            node(3, "follower", 3, 2)))
    assert [e["kind"] for e in back] == ["up"]


def test_a_cut_leader_is_named_as_the_reason() -> None:
    obs = Observer()
    obs.observe(view(0, node(1, "leader", 2, 1), node(2, "follower", 2, 1)))
    cut = {"block_to": [2], "block_from": [2]}
    events = obs.observe(view(1, node(1, "leader", 2, 1, faults=cut), node(2, "leader", 3, 2)))
    assert any(e["kind"] == "fault" and "block_to [2]" in e["text"] for e in events)
    assert obs.elections["0"]["why"] == "n1 was cut off by a fault"


def test_rates_alarms_and_membership() -> None:
    obs = Observer()
    obs.observe(view(10.0, node(1, "leader", 2, 1, sent=100)))
    v = view(10.5, node(1, "leader", 2, 1, sent=150, alarms=[(1, "NOSPACE")], voters=(1, 2)))
    events = obs.observe(v)
    assert v["nodes"]["h:1"]["rates"]["2"] == {"sent_per_s": 100.0, "received_per_s": 50.0}
    texts = [e["text"] for e in events]
    assert "alarm NOSPACE raised for member 1" in texts
    assert "group 0 voters [1, 2, 3] -> [1, 2]" in texts


def test_group_leaders_take_the_highest_term() -> None:
    v = view(0, node(1, "leader", 2, 1), node(2, "candidate", 3, 0), down(3))
    assert group_leaders(v) == {"0": (3, 0)}


def test_events_are_bounded() -> None:
    obs = Observer(max_events=3)
    for t in range(10):
        obs.observe(view(t, node(1, "leader", t + 1, 1 + t % 2)))
    assert len(obs.events) == 3
