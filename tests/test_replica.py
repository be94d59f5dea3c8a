"""The replica (shoal.replica) in the simulated world, scenario by scenario: what sits between
the consensus core and the sockets, run exactly as production runs it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace

import pytest

from shoal.kv.errors import ErrNoSpace
from shoal.kv.requests import (
    Command,
    CompactionRequest,
    DeleteRangeRequest,
    OpenSessionRequest,
    PutRequest,
    RangeRequest,
    Session,
)
from shoal.replica import Done, NodeError, Replica
from shoal.sim import SimConfig, World
from shoal.sim.bugs import PLANTED, REPLICA_TEETH
from shoal.sim.campaign import run_seed
from shoal.sim.host import Ask, Host
from shoal.sim.world import MS

SEC = 1000 * MS


def quiet(**kw: object) -> SimConfig:
    base: dict[str, object] = dict(nodes=3, faults=False, clients=0, leases=False)
    return SimConfig(**{**base, **kw})  # type: ignore[arg-type]


def leader(w: World, limit_us: int = 3 * SEC) -> Host:
    assert w.run_until(lambda: w.leader() is not None, limit_us), "no leader"
    lead = w.leader()
    assert lead is not None
    return lead


def submit(w: World, cmd: Command) -> tuple[Host, list[Done]]:
    """Propose `cmd` on the leader as its host would; the list fills with its outcome."""
    lead = leader(w)
    assert w.run_until(lambda: not lead.busy, SEC, check_every=1)
    answers: list[Done] = []
    token = lead.replica.propose(cmd)
    lead.asks[token] = Ask(0, cmd)
    original = w.workload.answered

    def spy(h: Host, ask: Ask, done: Done) -> None:
        if h is lead and done.token == token:
            answers.append(done)
        original(h, ask, done)

    w.workload.answered = spy  # type: ignore[method-assign]
    w._run_host(lead)
    return lead, answers


def write(w: World, key: bytes, value: bytes, session: Session | None = None) -> Done:
    _, answers = submit(w, Command(PutRequest(key, value), session))
    assert w.run_until(lambda: bool(answers), 3 * SEC), f"put {key!r} was not answered"
    return answers[0]


def everywhere(w: World, pred: Callable[[Host], bool], limit_us: int = 5 * SEC) -> None:
    assert w.run_until(lambda: all(h.up and pred(h) for h in w.hosts.values()), limit_us)


def value(h: Host, key: bytes) -> bytes | None:
    kvs = h.replica.kv.range(RangeRequest(key)).kvs
    return kvs[0].value if kvs else None


def spy_advances(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, bool]]:
    """(node, CONFIG entries applied, snapshot installed) for every advance of any replica."""
    seen: list[tuple[int, int, bool]] = []
    original = Replica.advance

    def advance(self: Replica, rd):  # type: ignore[no-untyped-def]
        seen.append((self.id, sum(1 for e in rd.committed if e.kind.name == "CONFIG"),
                     rd.snapshot is not None))
        return original(self, rd)

    monkeypatch.setattr(Replica, "advance", advance)
    return seen


# ============================================================================ the two bugs
def test_a_restart_replays_a_compaction_of_the_current_revision():
    """Regression: compacting at the current revision, then restarting a node that replays
    the writes and the compaction in one batch, killed its Ready loop: the watch hub, advanced
    once per batch, asked for history the compaction had just dropped."""
    w = World(1, quiet())
    write(w, b"a", b"1")
    write(w, b"x", b"1")
    lead, answers = submit(w, Command(CompactionRequest(leader(w).replica.kv.revision)))
    assert w.run_until(lambda: bool(answers), 3 * SEC) and answers[0].error is None
    everywhere(w, lambda h: h.replica.kv.compact_revision == 3)
    w.crash(lead.id)
    write(w, b"b", b"2")
    w.restart(lead.id)
    everywhere(w, lambda h: value(h, b"b") == b"2")
    assert lead.replica.kv.compact_revision == 3
    w.finish()


def test_remove_and_readd_of_the_same_id_in_consecutive_batches_and_in_one_replayed_batch(monkeypatch):
    """Regression for the torture failure: a replaced disk is a removal and a re-add of the
    same id; the member table (and with it the peers a node talks to) must end with the id in
    it, whether the changes arrive in consecutive batches (live nodes) or in one batch (a
    restart replaying the log)."""
    w = World(2, quiet())
    write(w, b"before", b"1")
    w.replace_disk(3)
    assert w.run_until(lambda: w.replacing is None, 10 * SEC), "the replacement did not finish"
    everywhere(w, lambda h: sorted(h.replica.members) == [1, 2, 3])
    write(w, b"after", b"1")
    everywhere(w, lambda h: value(h, b"after") == b"1")
    assert value(w.hosts[3], b"before") == b"1"  # the wiped node caught up from the log
    # A restart replays remove, leave-joint and add in a single batch.
    seen = spy_advances(monkeypatch)
    other = next(i for i in (1, 2) if w.hosts[i] is not leader(w))
    w.crash(other)
    w.restart(other)
    everywhere(w, lambda h: h.replica.applied == leader(w).replica.applied)
    assert any(node == other and n >= 3 for node, n, _ in seen), seen
    assert sorted(w.hosts[other].replica.members) == [1, 2, 3]
    w.finish()


def test_a_snapshot_installed_while_membership_changes(monkeypatch):
    w = World(3, quiet(nodes=5, snapshot_every=20))
    write(w, b"k", b"0")
    lead = leader(w)
    behind = next(i for i in w.hosts if i != lead.id)
    w.crash(behind)
    replaced = next(i for i in w.hosts if i not in (lead.id, behind))
    w.replace_disk(replaced)
    assert w.run_until(lambda: w.replacing is None, 10 * SEC)
    for i in range(60):
        write(w, b"k", b"%d" % i)
    seen = spy_advances(monkeypatch)
    w.restart(behind)
    h = w.hosts[behind]
    everywhere(w, lambda x: value(x, b"k") == b"59")
    assert any(node == behind and snap for node, _, snap in seen), \
        "the lagging node caught up without a snapshot: the test lost its point"
    assert sorted(h.replica.members) == [1, 2, 3, 4, 5]
    w.finish()


def test_a_lease_survives_a_leader_change():
    w = World(4, SimConfig(nodes=3, faults=False, clients=1, keys=1))
    assert w.run_until(lambda: w.workload.lease_id != 0, 3 * SEC)
    lease = w.workload.lease_id
    lead = leader(w)
    w.crash(lead.id)
    w.run_for(3 * SEC)  # three TTLs: the new leader's promotion keeps it alive meanwhile
    assert w.workload.lease_id == lease
    assert all(lease in h.replica.kv.lessor for h in w.hosts.values() if h.up)
    w.restart(lead.id)
    w.finish()


def test_a_client_retrying_a_write_across_a_failover_gets_exactly_one_effect():
    w = World(5, quiet())
    _, opened = submit(w, Command(OpenSessionRequest()))
    assert w.run_until(lambda: bool(opened), 3 * SEC)
    session = Session(opened[0].result.client_id, 1)
    cmd = Command(PutRequest(b"once", b"1"), session)
    lead, answers = submit(w, cmd)
    # The leader dies once the entry is on a quorum but before anyone hears back.
    assert w.run_until(lambda: lead.engine.status().commit >= lead.engine.status().last_index, SEC,
                       check_every=1)
    w.crash(lead.id)
    retry = write(w, b"once", b"1", session)  # the client's retry, unchanged, at the new leader
    assert retry.error is None
    w.restart(lead.id)
    everywhere(w, lambda h: value(h, b"once") == b"1")
    assert all(h.replica.kv.range(RangeRequest(b"once")).kvs[0].version == 1
               for h in w.hosts.values()), "the retried write took effect twice"
    w.finish()


def test_a_replica_refuses_writes_when_not_leader_and_names_the_leader():
    w = World(6, quiet())
    lead = leader(w)
    follower = next(h for h in w.hosts.values() if h is not lead)
    assert w.run_until(lambda: follower.replica.leader == lead.id, SEC)
    with pytest.raises(NodeError) as err:
        follower.replica.propose(Command(PutRequest(b"k", b"v")))
    assert err.value.code == "not_leader" and err.value.details["leader"] == lead.id


def test_an_entry_from_a_previous_life_answers_nothing_in_this_one():
    """Tokens restart at 1 in every life; the incarnation tells the lives apart."""
    w = World(7, quiet())
    lead = leader(w)
    assert isinstance(lead.replica, Replica)
    before = lead.replica.incarnation
    w.crash(lead.id)
    w.restart(lead.id)
    assert w.hosts[lead.id].replica.incarnation != before


# ============================================================================ campaigns
@pytest.mark.parametrize("chunk", range(6))
def test_ci_campaign_of_the_whole_replica(chunk):
    """300 seeds of 3- and 5-node clusters with every fault, membership churn (disk
    replacement), snapshot installs and leases, 50 per test so xdist spreads them."""
    bad = []
    for s in range(chunk * 50, chunk * 50 + 50):
        cfg = SimConfig(nodes=3 if s % 2 else 5, steps=6000, nemesis_mean_us=100 * MS)
        if not (r := run_seed(s, cfg)).ok:
            bad.append((r, cfg))
    assert not bad, f"seed {bad[0][0].seed}: {bad[0][0].violation}\nreplay: {bad[0][1].replay_command(bad[0][0].seed)}"


# Planted bugs in the replica layer, each caught within its bound by its own profile
# (shoal.sim.bugs: a nemesis every 60 ms, so disk replacements, crashes and leader changes
# come often).
@pytest.mark.parametrize("bug", [b for b in PLANTED.values() if b.profile is REPLICA_TEETH],
                         ids=lambda b: b.name)
def test_a_broken_replica_is_caught(bug):
    cfg = bug.config()
    for seed in range(bug.seeds):
        if not (r := run_seed(seed, cfg)).ok:
            assert r.violation
            return
    raise AssertionError(f"{bug.name} went unnoticed for {bug.seeds} seeds")


# ============================================================================ quota and alarms
def test_past_the_quota_nospace_is_raised_through_the_log_and_every_replica_refuses_puts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    w = World(11, quiet())
    lead = leader(w)
    assert write(w, b"a", b"x" * 100).error is None
    size = lead.replica.kv.size_bytes
    lead.replica.cfg = replace(lead.replica.cfg, quota_bytes=size + 100)
    with pytest.raises(ErrNoSpace, match="quota"):
        lead.replica.propose(Command(PutRequest(b"b", b"y" * 200)))
    everywhere(w, lambda h: h.replica.alarms == {(lead.id, "NOSPACE")})
    # Latched: a put well inside the quota is refused too, deletes still go through.
    with pytest.raises(ErrNoSpace, match="alarm NOSPACE"):
        lead.replica.propose(Command(PutRequest(b"c", b"z")))
    _, answers = submit(w, Command(DeleteRangeRequest(b"a")))
    assert w.run_until(lambda: bool(answers), 3 * SEC) and answers[0].error is None
    # Enforced where entries apply, not only where they are proposed: a put that got past
    # the leader's check is refused by every replica alike.
    monkeypatch.setattr(Replica, "_check_space", lambda self, request: None)
    assert isinstance(write(w, b"d", b"w").error, ErrNoSpace)
    everywhere(w, lambda h: value(h, b"d") is None and h.replica.applied == lead.replica.applied)
    # The alarm travels in snapshots.
    probe = copy.copy(w.hosts[next(n for n in w.hosts if n != lead.id)].replica)
    probe.alarms = set()  # (restoring replaces attributes, so the host's replica is untouched)
    probe._restore(lead.replica.snapshot_data())
    assert probe.alarms == {(lead.id, "NOSPACE")}
    # Cleared through the log too; then puts apply again.
    lead.replica.alarm("deactivate", lead.id, "NOSPACE")
    w._run_host(lead)
    everywhere(w, lambda h: not h.replica.alarms)
    assert write(w, b"e", b"v").error is None
