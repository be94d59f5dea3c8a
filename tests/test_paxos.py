"""Multi-Paxos driven by a deterministic in-memory cluster: a message pump with a seeded rng
that delivers, drops and reorders messages and crash-restarts nodes from what their Readys
persisted, checking that no two nodes ever apply different values at one index."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest

from shoal.consensus.confchange import ConfChange
from shoal.consensus.messages import (
    ConfState,
    Durable,
    Entry,
    EntryKind,
    HardState,
    LocalProtocolError,
    NotLeader,
    ProposalDropped,
    Ready,
    Snapshot,
)
from shoal.consensus.paxos import (
    Accept,
    Accepted,
    MultiPaxos,
    PaxosConfig,
    Prepare,
    ballot,
    ballot_node,
    ballot_round,
)


class Store:
    """A node's disk: written whole at each Ready (the driver syncs before sending)."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []

    def save(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.snapshot, self.entries = rd.snapshot, []
        if rd.entries:
            offset = self.snapshot.meta.index if self.snapshot else 0
            k = rd.entries[0].index - offset - 1
            assert 0 <= k <= len(self.entries), "the core asked for a write that leaves a gap"
            del self.entries[k:]
            self.entries += rd.entries
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def compact(self, snap: Snapshot) -> None:
        offset = self.snapshot.meta.index if self.snapshot else 0
        del self.entries[:snap.meta.index - offset]
        self.snapshot = snap

    def durable(self) -> Durable:
        return Durable(self.hard_state, self.snapshot, tuple(self.entries))


class Cluster:
    def __init__(
        self, n: int, seed: int, cfg: PaxosConfig | None = None, voters: int | None = None
    ):
        self.rng = random.Random(seed)
        self.cfg = cfg or PaxosConfig()
        self.conf = ConfState(voters=frozenset(range(1, (voters or n) + 1)))
        self.ids = list(range(1, n + 1))
        self.stores = {i: Store() for i in self.ids}
        self.nodes = {i: self._boot(i, None) for i in self.ids}
        self.applied: dict[int, list[tuple[int, bytes]]] = {}  # node -> (kind, data) by index
        self.chosen: dict[int, tuple[int, bytes]] = {}  # index -> what anyone applied there
        self.reads: dict[int, list] = {i: [] for i in self.ids}
        self.net: list[object] = []
        self.down: set[int] = set()
        for i in self.ids:
            self.applied[i] = []

    def _boot(self, i: int, durable: Durable | None) -> MultiPaxos:
        return MultiPaxos(i, self.conf, random.Random(self.rng.random()), durable, self.cfg)

    # -------------------------------------------------------------------- driving
    def process(self, i: int) -> None:
        node = self.nodes[i]
        while node.has_ready():
            rd = node.ready()
            self.stores[i].save(rd)
            self.net += rd.messages
            if rd.snapshot is not None:
                self.applied[i] = decode_sm(rd.snapshot.data)
            for e in rd.committed:
                self.apply(i, e)
            self.reads[i] += rd.read_states
            node.advance(rd)

    def apply(self, i: int, e: Entry) -> None:
        assert e.index == len(self.applied[i]) + 1, f"node {i} applied {e.index} out of order"
        value = (int(e.kind), e.data)
        assert self.chosen.setdefault(e.index, value) == value, (
            f"divergence at {e.index}: node {i} applies {value}, another {self.chosen[e.index]}")
        self.applied[i].append(value)

    def deliver(self, k: int) -> None:
        m = self.net.pop(k)
        if m.dst in self.down or m.dst not in self.nodes:
            return
        self.nodes[m.dst].step(m)
        self.process(m.dst)

    def pump(self, among: set[int], stop: Callable[[], bool] = lambda: False) -> None:
        """Deliver, in order, every message between nodes of `among`; lose all others."""
        while self.net and not stop():
            if {self.net[0].src, self.net[0].dst} <= among:
                self.deliver(0)
            else:
                self.net.pop(0)

    def lead_with(self, i: int, among: set[int]) -> None:
        """Only node `i` times out, and only `among` hear it: it leads with their promises.
        Stops the moment it leads, before anything it sends as leader is delivered."""
        def leads() -> bool:
            return self.nodes[i].status().role == "leader"

        for _ in range(200):
            self.tick(i)
            self.pump(among, stop=leads)
            if leads():
                return
        raise AssertionError(f"node {i} did not win phase 1 with {among}")

    def tick(self, i: int) -> None:
        if i not in self.down:
            self.nodes[i].tick()
            self.process(i)

    def crash(self, i: int) -> None:
        """Lose everything not persisted and start again from the store."""
        self.nodes[i] = self._boot(i, self.stores[i].durable())
        snap = self.stores[i].snapshot
        self.applied[i] = decode_sm(snap.data) if snap else []
        self.process(i)

    def compact(self, i: int) -> None:
        node = self.nodes[i]
        index = node.status().applied
        data = encode_sm(self.applied[i][:index])
        node.compact(index, data)
        self.stores[i].compact(node.snapshot)

    def settle(self, rounds: int = 400) -> None:
        """No faults: tick everyone and deliver everything, until quiet."""
        for _ in range(rounds):
            for i in self.ids:
                self.tick(i)
            while self.net:
                self.deliver(0)

    def leader(self) -> MultiPaxos | None:
        leaders = [n for i, n in self.nodes.items() if i not in self.down and n.role == "leader"]
        return max(leaders, key=lambda n: n.ballot, default=None)

    def elect(self) -> MultiPaxos:
        for _ in range(200):
            self.settle(1)
            if (lead := self.leader()) is not None:
                return lead
        raise AssertionError("no leader elected")

    def propose(self, data: bytes) -> bool:
        lead = self.leader()
        if lead is None:
            return False
        try:
            lead.propose(data)
        except (NotLeader, ProposalDropped):
            return False
        self.process(lead.id)
        return True


def encode_sm(applied: list[tuple[int, bytes]]) -> bytes:
    return repr(applied).encode()


def decode_sm(data: bytes) -> list[tuple[int, bytes]]:
    import ast

    return list(ast.literal_eval(data.decode()))


def only_one_leader_per_ballot(c: Cluster) -> None:
    leaders = [n for n in c.nodes.values() if n.status().role == "leader"]
    assert len({n.ballot for n in leaders}) == len(leaders)


# ------------------------------------------------------------------------------ basics


def test_ballots_order_by_round_then_node():
    assert ballot(1, 3) < ballot(2, 1) < ballot(2, 2)
    assert (ballot_round(ballot(7, 5)), ballot_node(ballot(7, 5))) == (7, 5)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="unknown bugs"):
        PaxosConfig(bugs=frozenset({"no-such-bug"}))


def test_elects_a_single_leader_that_others_follow():
    c = Cluster(3, seed=1)
    lead = c.elect()
    c.settle(20)
    assert c.leader() is lead
    for n in c.nodes.values():
        st = n.status()
        assert st.leader == lead.id and st.term == ballot_round(lead.ballot)
        assert st.role == ("leader" if n is lead else "follower")
        assert (n.term, n.role, n.leader) == (st.term, st.role, st.leader)  # the cheap reads


def test_single_node_cluster_commits_alone():
    c = Cluster(1, seed=2)
    c.elect()
    assert c.propose(b"solo")
    assert c.applied[1] == [(0, b"solo")]


def test_agreement_on_a_sequence_of_proposals():
    c = Cluster(5, seed=3)
    c.elect()
    sent = []
    for k in range(40):
        while not c.propose(b"cmd%d" % k):  # the window is alpha instances: let it drain
            c.settle(1)
        sent.append((0, b"cmd%d" % k))
    c.settle(30)
    for i in c.ids:
        assert c.applied[i] == sent


def test_proposals_are_batched_and_pipelined():
    c = Cluster(3, seed=4)
    lead = c.elect()
    for k in range(5):
        lead.propose(b"b%d" % k)  # no Ready in between
    with pytest.raises(ProposalDropped, match="window"):
        for k in range(5, 20):
            lead.propose(b"b%d" % k)
    rd = lead.ready()
    accepts = [m for m in rd.messages if isinstance(m, Accept)]
    assert len(accepts) == 2 and all(len(m.entries) == lead.cfg.alpha for m in accepts)
    lead.advance(rd)


def test_not_leader_on_followers():
    c = Cluster(3, seed=5)
    lead = c.elect()
    c.settle(5)
    follower = next(n for n in c.nodes.values() if n is not lead)
    for call in (lambda: follower.propose(b"x"), lambda: follower.read_index(b"r")):
        with pytest.raises(NotLeader) as exc:
            call()
        assert exc.value.leader == lead.id


# ------------------------------------------------------------------------------ takeover


def test_leadership_transfer():
    c = Cluster(3, seed=13)
    old = c.elect()
    c.settle(3)
    to = next(i for i in c.ids if i != old.id)
    old.transfer_leadership(to)
    c.process(old.id)
    c.settle(3)
    assert c.leader() is c.nodes[to] and c.nodes[to].ballot > old.promised - 1
    assert old.status().role == "follower" and old.status().leader == to


def test_leader_failure_takeover_fills_holes_with_noops():
    c = Cluster(3, seed=6)
    while c.leader() is None:  # only node 1 times out, so it leads
        c.tick(1)
        while c.net:
            c.deliver(0)
    lead = c.nodes[1]
    batches = []
    for data in (b"a", b"b", b"c"):
        lead.propose(data)
        c.process(1)
        batches.append([m for m in c.net if isinstance(m, Accept) and m.entries])
        c.net = [m for m in c.net if m not in batches[-1]]
    # instance 1 reaches everyone, 2 no one, 3 only node 2; then node 1 dies.
    for m in batches[0] + [m for m in batches[2] if m.dst == 2]:
        c.net.append(m)
    while c.net:
        c.deliver(0)
    c.down.add(1)
    assert [e.term > 0 for e in c.nodes[2].log] == [True, False, True]  # a hole at 2
    for _ in range(100):
        c.tick(2)
        c.tick(3)
        c.net = [m for m in c.net if m.dst != 1]
        while c.net:
            c.deliver(0)
    new = c.leader()
    assert new is not None and new.id != 1 and new.ballot > lead.ballot
    for i in (2, 3):
        assert c.applied[i] == [(0, b"a"), (0, b""), (0, b"c")]  # the hole became a no-op
    c.down.discard(1)
    c.crash(1)
    c.settle(30)
    assert c.applied[1] == [(0, b"a"), (0, b""), (0, b"c")]  # node 1's own b was displaced


# ------------------------------------------------------------------------------ random faults


def run_random(
    seed: int, steps: int, cfg: PaxosConfig | None = None, crash: float = 0.02, drop: float = 0.15
) -> Cluster:
    """Drops, duplicates, reordering and crash-restarts; then a quiet spell in which the
    cluster must still agree on one last proposal (liveness once faults stop)."""
    c = Cluster(3 if seed % 2 else 5, seed, cfg)
    rng = c.rng
    for step in range(steps):
        r = rng.random()
        if r < crash:
            c.crash(rng.choice(c.ids))
        elif r < 0.55 and c.net:
            k = rng.randrange(len(c.net))
            if rng.random() < drop:
                c.net.pop(k)  # lost
            else:
                if rng.random() < 0.05:
                    c.net.append(c.net[k])  # duplicated
                c.deliver(k)
        elif r < 0.85:
            c.tick(rng.choice(c.ids))
        elif r < 0.98:
            c.propose(b"s%d.%d" % (seed, step))
        else:
            i = rng.choice(c.ids)
            if c.nodes[i].status().applied > c.nodes[i].offset:
                c.compact(i)
    for _ in range(100):  # a client retries: a deposed leader may have taken its proposal
        c.propose(b"last")
        c.settle(3)
        if all((0, b"last") in log for log in c.applied.values()):
            break
    return c


def test_no_divergence_under_random_faults():
    t0 = time.perf_counter()
    committed = 0
    hasty = PaxosConfig(election_ticks=4, heartbeat_ticks=1, max_batch=3)  # duelling leaders
    for seed in range(200):
        c = run_random(seed, 1500, hasty, crash=0.05) if seed % 3 == 0 else run_random(seed, 1500)
        only_one_leader_per_ballot(c)
        logs = list(c.applied.values())
        assert all(log == logs[0] for log in logs), f"seed {seed}: nodes disagree after settling"
        assert (0, b"last") in logs[0], f"seed {seed}: no progress once faults stopped"
        committed += len(logs[0])
    print(f"\n200 seeds x 1500 steps: {committed} entries applied, {time.perf_counter() - t0:.1f}s")


def forget_promise_scenario(c: Cluster) -> None:
    """Node 2 promises node 3's ballot, crashes, and then hears node 1's older Accept."""
    c.lead_with(1, {1, 2, 3})
    c.nodes[1].propose(b"x")
    c.process(1)
    old = [m for m in c.net if m.dst == 2]
    c.net = []
    c.lead_with(3, {2, 3})
    c.nodes[3].propose(b"y")
    c.process(3)
    new = [m for m in c.net if m.dst == 2]
    c.crash(2)
    c.net = old
    c.pump({1, 2})  # correct: refused, node 2 promised higher; buggy: x chosen by {1, 2}
    c.net = new
    c.pump({2, 3})  # y chosen by {2, 3}


def skip_phase1_scenario(c: Cluster) -> None:
    """x is chosen by {1, 2}; node 3, which never saw it, takes over."""
    c.lead_with(1, {1, 2, 3})
    c.nodes[1].propose(b"x")
    c.process(1)
    c.pump({1, 2})
    c.lead_with(3, {2, 3})  # correct: node 2's promise reports x, so node 3 re-proposes it
    c.nodes[3].propose(b"y")
    c.process(3)
    c.pump({2, 3})


def mix_ballots_scenario(c: Cluster) -> None:
    """Five nodes. w is accepted by {1, 2} at ballot 1 and v by {3} at ballot 3: neither is
    chosen. Node 5 leads with promises from 2 and 3, so it must re-propose v; the bug counts
    their old acceptances (of w and of v) as votes for v at its ballot, and commits v."""
    c.lead_with(1, {1, 2, 3, 4, 5})
    c.nodes[1].propose(b"w")
    c.process(1)
    c.pump({1, 2})
    c.lead_with(3, {3, 4, 5})
    c.nodes[3].propose(b"v")
    c.process(3)
    c.net = []
    c.lead_with(5, {2, 3, 5})
    c.net = []  # none of node 5's Accepts arrive
    c.crash(1)  # node 1 comes back a follower, still holding w
    c.lead_with(1, {1, 2, 4})  # promises report w (ballot 1) and nothing: w is proposed
    c.pump({1, 2, 4})


@pytest.mark.parametrize("bug, scenario, n", [
    ("forget-promise", forget_promise_scenario, 3),
    ("skip-phase1", skip_phase1_scenario, 3),
    ("mix-ballots", mix_ballots_scenario, 5),
], ids=["forget-promise", "skip-phase1", "mix-ballots"])
def test_each_bug_is_caught_by_a_schedule_the_correct_core_survives(bug, scenario, n):
    c = Cluster(n, seed=12)
    scenario(c)
    c.settle(30)
    logs = list(c.applied.values())
    assert all(log == logs[0] for log in logs) and logs[0]
    buggy = Cluster(n, seed=12, cfg=PaxosConfig(bugs=frozenset({bug})))
    with pytest.raises(AssertionError, match="divergence|chosen instance"):
        scenario(buggy)
        buggy.settle(30)


# ------------------------------------------------------------------------------ reads


def test_read_barrier_needs_a_quorum_round_and_batches_reads():
    c = Cluster(3, seed=7)
    lead = c.elect()
    c.propose(b"x")
    c.settle(5)
    for ctx in (b"r1", b"r2", b"r3"):
        lead.read_index(ctx)
    rd = lead.ready()
    assert rd.read_states == []
    probes = [m for m in rd.messages if isinstance(m, Accept)]
    assert len(probes) == 2 and len({m.read_round for m in probes}) == 1  # one round, 3 reads
    lead.advance(rd)
    follower = c.nodes[probes[0].dst]
    follower.step(probes[0])
    rd = follower.ready()
    (ack,) = [m for m in rd.messages if isinstance(m, Accepted)]
    follower.advance(rd)
    lead.step(ack)  # with the leader itself, a quorum of 3
    rd = lead.ready()
    assert [(r.context, r.index) for r in rd.read_states] == [(b"r1", 1), (b"r2", 1), (b"r3", 1)]
    lead.advance(rd)


def test_deposed_leader_serves_no_reads():
    c = Cluster(3, seed=8)
    old = c.elect()
    c.settle(5)
    c.down.add(old.id)  # cut off: the others elect someone else and move on
    for _ in range(100):
        for i in c.ids:
            c.tick(i)
        c.net = [m for m in c.net if m.dst != old.id and m.src != old.id]
        while c.net:
            c.deliver(0)
    new = c.leader()
    assert new is not None and new is not old
    c.propose(b"after")
    c.settle(3)
    c.down.discard(old.id)
    old.read_index(b"stale")
    c.process(old.id)
    c.settle(10)
    assert c.reads[old.id] == []
    assert old.status().role == "follower"


# ------------------------------------------------------------------------------ compaction


def test_compaction_and_snapshot_catch_up_of_a_lagging_node():
    c = Cluster(3, seed=9)
    lead = c.elect()
    lagging = next(i for i in c.ids if i != lead.id)
    c.down.add(lagging)
    for k in range(30):
        while not c.propose(b"v%d" % k):
            c.settle(1)
            c.net = [m for m in c.net if m.dst != lagging]
        c.net = [m for m in c.net if m.dst != lagging]
    c.settle(3)
    for i in c.ids:
        if i != lagging:
            c.compact(i)
            assert c.nodes[i].offset == 30 and c.nodes[i].log == []
    c.down.discard(lagging)
    c.crash(lagging)  # it comes back with an empty disk
    c.settle(30)
    assert c.applied[lagging] == [(0, b"v%d" % k) for k in range(30)]
    assert c.nodes[lagging].offset == 30  # caught up by snapshot, not by replaying the log
    c.crash(lagging)  # and that snapshot was persisted
    assert c.applied[lagging][-1] == (0, b"v29")


# ------------------------------------------------------------------------------ membership


def test_membership_change_takes_effect_alpha_instances_later():
    c = Cluster(4, seed=10, voters=3)  # node 4 starts as an outsider
    lead = c.elect()
    alpha = lead.cfg.alpha
    c.propose(b"before")
    c.settle(3)
    lead.propose_conf_change(ConfChange((("add", 4),)).encode())
    c.process(lead.id)
    c.settle(3)
    i = lead.commit
    assert c.applied[lead.id][i - 1] == (EntryKind.CONFIG, ConfChange((("add", 4),)).encode())
    assert lead.status().conf.voters == {1, 2, 3}
    # With two of the new four voters away, instances before the window still commit...
    away = [n for n in (1, 2, 3) if n != lead.id][:1] + [4]
    c.down.update(away)
    while lead.commit < i + alpha - 1:
        assert c.propose(b"filler"), "the old configuration should still decide"
        c.settle(1)
        c.net = [m for m in c.net if m.dst not in away]
    assert c.nodes[lead.id].status().conf.voters == {1, 2, 3, 4}
    # ... but from i + alpha on, a majority of four is needed.
    stuck = lead.commit
    for _ in range(30):
        c.propose(b"needs-three")
        c.settle(1)
        c.net = [m for m in c.net if m.dst not in away]
    assert max(n.commit for i_, n in c.nodes.items() if i_ not in away) == stuck
    c.down.discard(4)
    c.crash(4)
    c.settle(50)  # phase 1 in the new configuration completes with node 4 back
    assert c.propose(b"after")
    c.settle(10)
    assert c.leader().commit > stuck
    assert c.applied[4] == c.applied[c.leader().id] and c.applied[4][-1] == (0, b"after")


def test_bad_membership_change_is_refused():
    c = Cluster(3, seed=11)
    lead = c.elect()
    with pytest.raises(Exception, match="membership change"):
        lead.propose_conf_change(b"not json")


# ------------------------------------------------------------------------------ persistence


def test_ready_advance_contract():
    c = Cluster(3, seed=9)
    lead = c.elect()
    c.settle(3)
    lead.propose(b"x")
    assert lead.has_ready()
    rd = lead.ready()
    assert rd.entries and rd.must_sync and rd.messages
    assert not lead.has_ready()  # nothing to take mid-Ready, and asking changes nothing
    to = next(i for i in c.ids if i != lead.id)
    for call in (lead.tick, lambda: lead.step(Prepare(to, lead.id, ballot(99, to), 1)),
                 lambda: lead.propose(b"y"),
                 lambda: lead.propose_conf_change(ConfChange((("add", 4),)).encode()),
                 lambda: lead.read_index(b"r"), lambda: lead.transfer_leadership(to),
                 lambda: lead.compact(1, b""), lead.ready, lambda: lead.advance(Ready())):
        with pytest.raises(LocalProtocolError):
            call()
    c.stores[lead.id].save(rd)
    c.net += rd.messages
    for e in rd.committed:
        c.apply(lead.id, e)
    lead.advance(rd)
    with pytest.raises(LocalProtocolError):
        lead.advance(rd)  # a Ready is handed back once
    c.process(lead.id)
    c.settle(5)
    assert all(log[-1] == (0, b"x") for log in c.applied.values())


def test_soft_state_reports_role_and_leader_changes_as_plain_strings():
    n = MultiPaxos(2, ConfState(voters=frozenset({1, 2, 3})), random.Random(0), None)
    assert not n.has_ready() and (n.role, n.leader, n.term) == ("follower", 0, 0)
    n.step(Accept(1, 2, ballot(3, 1), (), 0, 0))
    rd = n.ready()
    assert rd.soft_state is not None and type(rd.soft_state.role) is str
    assert (rd.soft_state.role, rd.soft_state.leader) == ("follower", 1) == (n.role, n.leader)
    assert n.term == 3 and rd.hard_state is not None and rd.hard_state.term == ballot(3, 1)
    n.advance(rd)
    assert not n.has_ready()


def test_promise_is_persisted_before_the_reply_leaves():
    n = MultiPaxos(2, ConfState(voters=frozenset({1, 2, 3})), random.Random(0), None)
    n.step(Prepare(1, 2, ballot(5, 1), 1))
    rd = n.ready()
    assert rd.hard_state is not None and rd.hard_state.term == ballot(5, 1) and rd.must_sync
    assert any(m.ballot == ballot(5, 1) for m in rd.messages)
    n.advance(rd)
    again = MultiPaxos(2, ConfState(voters=frozenset({1, 2, 3})), random.Random(0),
                       Durable(rd.hard_state, None, ()))
    again.step(Prepare(3, 2, ballot(4, 3), 1))
    (nack,) = again.ready().messages
    assert nack.promised == ballot(5, 1)
