"""A linearizable read whose ReadIndex the engine dropped when its leader changed is failed at
once (not left to its caller's timeout), so the caller can ask the new leader."""

from __future__ import annotations

import pytest

from shoal.replica import Done, NodeError, Replica
from shoal.sim import SimConfig, World
from shoal.sim.world import MS


def test_a_read_forwarded_to_a_leader_that_died_fails_when_the_follower_lets_it_go(
        monkeypatch: pytest.MonkeyPatch) -> None:
    w = World(7, SimConfig(nodes=3, faults=False, clients=0, leases=False))
    assert w.run_until(lambda: w.leader() is not None, 3000 * MS)
    lead = w.leader()
    assert lead is not None
    follower = next(h for h in w.hosts.values() if h is not lead)
    assert w.run_until(lambda: follower.replica.leader == lead.id, 1000 * MS)
    done: list[Done] = []
    original = Replica.advance

    def advance(self: Replica, rd):  # type: ignore[no-untyped-def]
        out = original(self, rd)
        if self is follower.replica:
            done.extend(d for d in out.done if d.token == token)
        return out

    monkeypatch.setattr(Replica, "advance", advance)
    token = follower.replica.read_index()  # forwarded to the leader, which dies unanswering
    w.crash(lead.id)
    assert w.run_until(lambda: bool(done), 3000 * MS), "the read waited on"
    assert isinstance(done[0].error, NodeError)
    assert follower.replica.leader != lead.id  # failed as the follower gave up on that leader
