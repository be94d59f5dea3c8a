"""Scripted Raft scenarios on the deterministic simulator (in the spirit of the MIT 6.824 labs):
elections, agreement, persistence, Figure 8, snapshots, membership and leadership transfer.
Every test uses fixed seeds, so a failure replays exactly."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import msgpack
import pytest

from shoal.consensus.messages import ConfState, Entry, Message, MsgType
from shoal.kv.keyvalue import ALL_KEYS
from shoal.kv.limits import KVLimits
from shoal.kv.requests import Command, PutRequest, RangeRequest, decode_command
from shoal.replica import Applied, Replica
from shoal.sim.campaign import run_seed
from shoal.sim.host import Ask
from shoal.sim.world import MS, Host, SimConfig, World

SEC = 1000 * MS


def quiet(nodes: int = 5, **kw: object) -> SimConfig:
    """No nemesis, no client workload: the test script is the only source of change."""
    return SimConfig(nodes=nodes, faults=False, clients=0, **kw)  # type: ignore[arg-type]


def cmd(seq: int, key: str | None = None, value: object = None) -> Command:
    """A put of `key` (default k{seq}) to `value` (default seq), as a client would send it."""
    return Command(PutRequest((key or f"k{seq}").encode(), str(seq if value is None else value).encode()))


def data(h: Host) -> dict[str, int]:
    """Everything in a node's store, as {key: value}."""
    kvs = h.replica.kv.range(RangeRequest(ALL_KEYS, ALL_KEYS)).kvs
    return {kv.key.decode(): int(kv.value) for kv in kvs}


def put_key(e: Entry) -> str | None:
    """The key a put entry writes (None for the no-op, leases, sessions...)."""
    if not e.data or e.kind.name != "NORMAL":
        return None
    request = decode_command(msgpack.unpackb(e.data)[3], KVLimits()).request
    return request.key.decode() if isinstance(request, PutRequest) else None


def wait_leader(w: World, limit_us: int = 3 * SEC) -> Host:
    assert w.run_until(lambda: w.leader() is not None, limit_us), "no leader elected"
    lead = w.leader()
    assert lead is not None
    return lead


def applied_everywhere(w: World, keys: list[str], hosts: list[int] | None = None) -> bool:
    ids = hosts if hosts is not None else list(w.hosts)
    return all(w.hosts[i].up and all(k in data(w.hosts[i]) for k in keys) for i in ids)


def wait_applied(w: World, keys: list[str], hosts: list[int] | None = None,
                 limit_us: int = 5 * SEC) -> None:
    assert w.run_until(lambda: applied_everywhere(w, keys, hosts), limit_us), (
        f"{keys} not applied on {hosts or list(w.hosts)}: "
        + ", ".join(f"n{h.id} applied={h.applied} up={h.up}" for h in w.hosts.values()))


def propose_on_leader(w: World, c: Command) -> Host:
    lead = wait_leader(w)
    w.input(lead, Ask(0, c))
    return lead


def record_applies(w: World, monkeypatch: pytest.MonkeyPatch) -> dict[int, list[str]]:
    """Per node, the keys of the puts in the order its state machine applied them."""
    order: dict[int, list[str]] = {i: [] for i in w.hosts}
    orig = Replica.advance

    def wrapped(self: Replica, rd) -> Applied:  # type: ignore[no-untyped-def]
        if self.id in order:
            order[self.id] += [k for e in rd.committed if (k := put_key(e)) is not None]
        return orig(self, rd)

    monkeypatch.setattr(Replica, "advance", wrapped)
    return order


def count_delivered(w: World, pred: Callable[[Message], bool]) -> Counter[str]:
    """Count delivered messages matching `pred`, keyed 'nSRC->nDST TYPE'."""
    seen: Counter[str] = Counter()
    orig = w._deliver

    def wrapped(m: object, life: int) -> None:
        if isinstance(m, Message) and w.hosts[m.dst].up and pred(m):
            seen[f"n{m.src}->n{m.dst} {m.type.name}"] += 1
        orig(m, life)

    w._deliver = wrapped  # type: ignore[method-assign]
    return seen


def idle(w: World, h: Host) -> None:
    """Run until `h` is not waiting for an fsync, so input reaches its core at once."""
    assert w.run_until(lambda: not h.busy, 100 * MS, check_every=1)


def input_on(w: World, h: Host, fn: Callable[[], None]) -> None:
    """Call into a replica as its host would (never mid-Ready), right now."""
    idle(w, h)
    assert h.up and not h.paused
    fn()
    w._run_host(h)


def propose_at(w: World, h: Host, c: Command) -> None:
    w.input(h, Ask(0, c))


def propose_all(h: Host, cmds: list[Command]) -> None:
    for c in cmds:
        h.replica.propose(c)


# ============================================================================ elections
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_initial_election(seed: int) -> None:
    w = World(seed, quiet())
    lead = wait_leader(w, 2 * SEC)
    w.run_for(1 * SEC)  # stays stable with no faults
    assert w.leader() is lead
    sts = [h.engine.status() for h in w.hosts.values()]
    assert [s.role for s in sts].count("leader") == 1
    assert len({s.term for s in sts}) == 1
    assert {s.leader for s in sts} == {lead.id}
    assert w.stats["elections"] == 1


@pytest.mark.parametrize("seed", [4, 5])
def test_reelection_after_leader_loss(seed: int) -> None:
    w = World(seed, quiet())
    old = wait_leader(w)
    old_term = old.engine.status().term
    w.crash(old.id)
    assert w.run_until(lambda: w.leader() is not None and w.leader() is not old, 1 * SEC)
    new = w.leader()
    assert new is not None
    new_term = new.engine.status().term
    assert new_term > old_term
    w.restart(old.id)
    w.run_for(500 * MS)
    st = old.engine.status()
    assert st.role == "follower" and st.term == new_term and st.leader == new.id
    assert w.leader() is new
    # A second loss: again a new leader, with a still higher term.
    w.crash(new.id)
    assert w.run_until(lambda: w.leader() not in (None, new), 1 * SEC)
    third = w.leader()
    assert third is not None and third.engine.status().term > new_term
    w.finish()


@pytest.mark.parametrize("seed", [6, 7])
def test_many_elections_seven_nodes(seed: int) -> None:
    w = World(seed, quiet(nodes=7))
    rng = random.Random(seed)
    wait_leader(w)
    ids = set(w.hosts)
    terms_seen = set()
    for _ in range(12):
        minority = set(rng.sample(sorted(ids), rng.randint(1, 3)))
        majority = ids - minority
        w.net.partition([minority, majority], "test")
        w.run_for(rng.randint(50, 400) * MS)
        # A connected majority always (re)establishes a leader among itself.
        assert w.run_until(lambda maj=majority: w.leader() is not None and w.leader().id in maj,
                           2 * SEC)
        lead = w.leader()
        assert lead is not None
        terms_seen.add(lead.engine.status().term)
        w.net.heal()
        w.run_for(rng.randint(0, 300) * MS)
        wait_leader(w)
    assert len(terms_seen) >= 2  # leadership really did move around
    w.finish()


# ============================================================================ agreement
def test_basic_agreement(monkeypatch: pytest.MonkeyPatch) -> None:
    w = World(10, quiet())
    order = record_applies(w, monkeypatch)
    keys = []
    for i in range(1, 11):
        propose_on_leader(w, cmd(i))
        keys.append(f"k{i}")
        wait_applied(w, keys, limit_us=1 * SEC)
    first = order[1]
    assert first == [f"k{i}" for i in range(1, 11)]
    assert all(o == first for o in order.values())
    assert all(data(h) == data(w.hosts[1]) for h in w.hosts.values())
    w.finish()


def test_agreement_with_follower_down() -> None:
    w = World(11, quiet())
    lead = propose_on_leader(w, cmd(1))
    wait_applied(w, ["k1"])
    down = next(i for i in w.hosts if i != lead.id)
    w.crash(down)
    up = [i for i in w.hosts if i != down]
    keys = ["k1"]
    for i in range(2, 8):
        propose_on_leader(w, cmd(i))
        keys.append(f"k{i}")
    wait_applied(w, keys, up, 2 * SEC)
    assert "k2" not in data(w.hosts[down])
    w.restart(down)
    wait_applied(w, keys, limit_us=3 * SEC)
    assert data(w.hosts[down]) == data(w.leader())  # type: ignore[union-attr]
    w.finish()


def test_no_agreement_without_quorum() -> None:
    w = World(12, quiet())
    lead = propose_on_leader(w, cmd(1))
    wait_applied(w, ["k1"])
    followers = [i for i in w.hosts if i != lead.id]
    down = followers[:3]
    for i in down:
        w.crash(i)
    commit = lead.engine.status().commit
    propose_at(w, lead, cmd(2))
    assert lead.engine.status().last_index == commit + 1  # appended, not committed
    w.run_for(2 * SEC)
    for i in (lead.id, followers[3]):
        assert w.hosts[i].engine.status().commit == commit
        assert "k2" not in data(w.hosts[i])
    assert all("k2" not in data(h) for h in w.hosts.values() if h.up)
    assert w.leader() is None  # check-quorum: the cut-off leader stepped down
    for i in down:
        w.restart(i)
    wait_leader(w)
    # A client would retry its unacknowledged command; (client, seq) dedup applies it once.
    propose_on_leader(w, cmd(2))
    propose_on_leader(w, cmd(3))
    wait_applied(w, ["k2", "k3"], limit_us=3 * SEC)
    w.finish()


def test_concurrent_proposals(monkeypatch: pytest.MonkeyPatch) -> None:
    w = World(13, quiet())
    order = record_applies(w, monkeypatch)
    wait_leader(w)
    w.run_for(300 * MS)  # every follower knows the leader
    assert all(h.engine.status().leader == w.leader().id for h in w.hosts.values())  # type: ignore[union-attr]
    keys = []
    for seq in range(1, 6):
        lead = wait_leader(w)
        for h in w.hosts.values():  # the same instant: one client per node's worth of keys
            propose_at(w, lead, cmd(1, f"c{h.id}-{seq}"))
            keys.append(f"c{h.id}-{seq}")
    wait_applied(w, keys, limit_us=3 * SEC)
    first = order[1]
    assert sorted(first) == sorted(keys)
    assert all(o == first for o in order.values())
    w.finish()


def test_partitioned_leader_entries_discarded() -> None:
    w = World(14, quiet())
    old = propose_on_leader(w, cmd(1))
    wait_applied(w, ["k1"])
    buddy = next(i for i in w.hosts if i != old.id)
    minority = {old.id, buddy}
    majority = set(w.hosts) - minority
    w.net.partition([minority, majority], "old leader cut off")
    old_commit = old.engine.status().commit
    stale = list(range(1, 6))
    input_on(w, old, lambda: propose_all(old, [cmd(s, f"stale{s}") for s in stale]))
    assert old.engine.status().last_index == old_commit + len(stale)
    assert w.run_until(lambda: w.leader() is not None and w.leader().id in majority, 2 * SEC)
    new = w.leader()
    assert new is not None
    for s in range(2, 5):
        propose_at(w, new, cmd(s))
    wait_applied(w, ["k2", "k3", "k4"], sorted(majority))
    assert old.engine.status().commit == old_commit
    w.net.heal()
    wait_applied(w, ["k2", "k3", "k4"], limit_us=3 * SEC)
    w.finish()
    ref = w.leader().disk  # type: ignore[union-attr]
    for h in w.hosts.values():
        assert h.engine.status().last_index == ref.last_index()
        for i in range(max(h.disk.offset(), ref.offset()) + 1, ref.last_index() + 1):
            assert h.disk.entry(i) == ref.entry(i)
        assert not any(k.startswith("stale") for k in data(h))


def test_fast_backup_over_many_conflicting_entries() -> None:
    w = World(15, quiet())
    old = propose_on_leader(w, cmd(1))
    wait_applied(w, ["k1"])
    others = set(w.hosts) - {old.id}
    w.net.partition([{old.id}, others], "old leader alone")
    stale = [cmd(s, f"stale{s}") for s in range(1, 61)]
    input_on(w, old, lambda: propose_all(old, stale))  # 60 entries that will never commit
    stale_last = old.engine.status().last_index
    assert stale_last >= 60
    assert w.run_until(lambda: w.leader() is not None and w.leader().id in others, 2 * SEC)
    second = w.leader()
    assert second is not None
    for s in range(2, 62):  # 60 entries of the new term at the same indexes
        propose_at(w, second, cmd(s))
    keys = [f"k{s}" for s in range(2, 62)]
    wait_applied(w, keys, sorted(others), 3 * SEC)
    # A third leader, elected with its whole log in place, starts probing the old leader at
    # its own last index: the old leader's 60 stale entries all conflict.
    w.crash(second.id)
    rest = others - {second.id}
    assert w.run_until(lambda: w.leader() is not None and w.leader().id in rest, 2 * SEC)
    third = w.leader()
    assert third is not None
    assert third.engine.status().last_index > stale_last
    rejects = count_delivered(w, lambda m: m.type is MsgType.APP_RESP and m.reject
                              and m.src == old.id)
    w.net.heal()
    wait_applied(w, keys, sorted(rest | {old.id}), 3 * SEC)
    n = rejects[f"n{old.id}->n{third.id} APP_RESP"]
    assert 1 <= n <= 5, rejects
    w.restart(second.id)
    w.finish()
    assert not any(k.startswith("stale") for k in data(old))


# ============================================================================ persistence
def _fill(w: World, start: int, count: int, hosts: list[int] | None = None) -> list[str]:
    keys = []
    for s in range(start, start + count):
        propose_on_leader(w, cmd(s))
        keys.append(f"k{s}")
    if hosts is None:
        hosts = [h.id for h in w.hosts.values() if h.up]
    wait_applied(w, keys, hosts, 3 * SEC)
    return keys


def test_persistence_all_nodes_crash() -> None:
    w = World(20, quiet())
    keys = _fill(w, 1, 10)
    before = dict(data(w.hosts[1]))
    for i in w.hosts:
        w.crash(i)
    w.run_for(100 * MS)
    for i in w.hosts:
        w.restart(i)
    wait_leader(w)
    wait_applied(w, keys)
    assert all(data(h) == before for h in w.hosts.values())
    keys += _fill(w, 11, 3)
    # And once more, with everything down at once right after a write.
    for i in w.hosts:
        w.crash(i)
    for i in w.hosts:
        w.restart(i)
    wait_leader(w)
    wait_applied(w, keys)
    w.finish()
    assert all(k in data(w.hosts[1]) for k in keys)


def test_persistence_leader_crash() -> None:
    w = World(21, quiet())
    keys = _fill(w, 1, 5)
    for rnd in range(3):
        lead = wait_leader(w)
        before = dict(data(lead))
        w.crash(lead.id)
        keys += _fill(w, 10 * (rnd + 1), 3)
        w.restart(lead.id)
        wait_applied(w, keys)
        assert all(before.items() <= data(h).items() for h in w.hosts.values())
    w.finish()


def test_persistence_leader_and_follower_crash() -> None:
    w = World(22, quiet())
    keys = _fill(w, 1, 5)
    rng = random.Random(22)
    for rnd in range(3):
        lead = wait_leader(w)
        follower = rng.choice([i for i in w.hosts if i != lead.id])
        before = dict(data(lead))
        w.crash(lead.id)
        w.crash(follower)
        keys += _fill(w, 10 * (rnd + 1), 3)
        w.restart(follower)
        w.restart(lead.id)
        wait_applied(w, keys)
        assert all(before.items() <= data(h).items() for h in w.hosts.values())
    w.finish()


# ============================================================================ Figure 8
def _figure8(w: World, seed: int, iters: int) -> None:
    """6.824's Figure 8 test: propose on the leader, wait a random (mostly short) time, crash
    the leader; whenever fewer than 3 nodes are up, restart a crashed one. Entries of old
    terms end up on some nodes only, which is where committing them by counting goes wrong."""
    rng = random.Random(seed)
    down: list[int] = []
    seq = 0
    for _ in range(iters):
        lead = w.leader()
        if lead is not None:
            seq += 1
            propose_at(w, lead, cmd(seq))
        if rng.random() < 0.9:
            w.run_for(rng.randint(0, 13) * MS)
        else:
            w.run_for(rng.randint(0, 500) * MS)
        lead = w.leader()
        if lead is not None:
            w.crash(lead.id)
            down.append(lead.id)
        if len(w.hosts) - len(down) < 3:
            w.restart(down.pop(rng.randrange(len(down))))
    applied_before = set(data(max(w.hosts.values(), key=lambda h: h.replica.applied)))
    w.finish()
    final = data(w.hosts[1])
    assert applied_before <= set(final)
    assert w.stats["elections"] > 10


@pytest.mark.parametrize("seed", [30, 31])
def test_figure8_reliable(seed: int) -> None:
    w = World(seed, quiet())
    wait_leader(w)
    _figure8(w, seed, 150)


@pytest.mark.parametrize("seed", [32, 33])
def test_figure8_unreliable(seed: int) -> None:
    w = World(seed, quiet())
    wait_leader(w)
    w.net.faults.drop, w.net.faults.duplicate = 0.1, 0.05
    _figure8(w, seed, 150)


# ============================================================================ churn
@pytest.mark.parametrize(("seed", "extra"), [
    (40, {}),
    (41, {}),
    (42, {}),
    (43, {"pre_vote": False}),
    (44, {"snapshot_every": 20}),  # snapshots installed under churn
    (45, {"nodes": 3}),
])
def test_churn_with_concurrent_clients(seed: int, extra: dict[str, object]) -> None:
    cfg = SimConfig(**{"nodes": 5, "steps": 20_000, "clients": 5, **extra})  # type: ignore[arg-type]
    r = run_seed(seed, cfg, check_time_limit=10.0)
    assert r.ok, f"{r.violation}\n{r.trace}"
    assert r.committed > 0 and r.ops > 0
    assert r.stats["crashes"] + r.stats["partitions"] > 0
    if "snapshot_every" in extra:
        assert r.stats["snapshots"] > 0


# ============================================================================ snapshots
def test_snapshot_basic() -> None:
    w = World(50, quiet(snapshot_every=10))
    keys = _fill(w, 1, 40)
    assert w.stats["snapshots"] >= 5
    for h in w.hosts.values():
        assert h.disk.offset() > 0
        assert len(h.disk.entries) < 40
    w.finish()
    assert all(data(h) == data(w.hosts[1]) for h in w.hosts.values())
    assert all(k in data(w.hosts[1]) for k in keys)


def test_snapshot_install() -> None:
    w = World(51, quiet(snapshot_every=10, snapshot_chunk_bytes=64))
    lead = propose_on_leader(w, cmd(1))
    wait_applied(w, ["k1"])
    f = next(i for i in w.hosts if i != lead.id)
    w.crash(f)
    behind = w.hosts[f].disk.last_index()
    keys = _fill(w, 2, 40)
    lead = wait_leader(w)
    assert lead.disk.offset() > behind  # compacted past the follower's position
    snaps = count_delivered(w, lambda m: m.type is MsgType.SNAP)
    w.restart(f)
    wait_applied(w, keys, [f], 3 * SEC)
    assert snaps[f"n{lead.id}->n{f} SNAP"] > 1  # several chunks
    assert w.hosts[f].disk.offset() > behind
    w.finish()
    assert data(w.hosts[f]) == data(lead)


def test_snapshot_install_with_crash() -> None:
    w = World(52, quiet(snapshot_every=10, snapshot_chunk_bytes=32))
    lead = propose_on_leader(w, cmd(1))
    wait_applied(w, ["k1"])
    f = next(i for i in w.hosts if i != lead.id)
    w.crash(f)
    keys = _fill(w, 2, 40)
    lead = wait_leader(w)
    snaps = count_delivered(w, lambda m: m.type is MsgType.SNAP and m.dst == f)
    w.restart(f)
    assert w.run_until(lambda: sum(snaps.values()) >= 3, 2 * SEC)
    assert w.hosts[f].applied < lead.applied  # mid-install
    w.crash(f)
    w.run_for(300 * MS)
    keys += _fill(w, 50, 5)  # and the leader moves on (compacting again) meanwhile
    w.restart(f)
    wait_applied(w, keys, [f], 3 * SEC)
    w.finish()
    assert data(w.hosts[f]) == data(w.leader())  # type: ignore[union-attr]


# ============================================================================ membership
def _change(w: World, *changes: tuple[str, int]) -> None:
    lead = wait_leader(w)
    for op, n in changes:  # one at a time: the replica proposes one change per entry
        input_on(w, lead, lambda op=op, n=n: lead.replica.change_membership(op, n, w.specs.get(n)))
        assert w.run_until(lambda: not lead.engine.status().conf.joint
                           and lead.engine.status().applied == lead.engine.status().last_index, 3 * SEC)


def _wait_conf(w: World, conf: ConfState, hosts: list[int]) -> None:
    def done() -> bool:
        lead = w.leader()
        return (lead is not None and lead.engine.status().applied == lead.engine.status().last_index
                and all(w.hosts[i].engine.status().conf == conf for i in hosts))
    assert w.run_until(done, 3 * SEC), {i: h.engine.status().conf for i, h in w.hosts.items()}


def test_membership_change_while_node_down() -> None:
    w = World(60, quiet())
    keys = _fill(w, 1, 3)
    lead = wait_leader(w)
    down = next(i for i in w.hosts if i != lead.id and i != 5)
    w.crash(down)
    # Remove 5 while another voter is down: C(old,new) needs 3 of 5 and 3 of 4.
    if lead.id == 5:
        input_on(w, lead, lambda: lead.replica.transfer_leadership(next(
            i for i in w.hosts if i not in (5, down))))
        assert w.run_until(lambda: w.leader() not in (None, lead), 1 * SEC)
    _change(w, ("remove", 5))
    four = frozenset(i for i in w.hosts if i != 5)
    up = [i for i in four if i != down]
    _wait_conf(w, ConfState(voters=four), up)
    keys += _fill(w, 10, 3, up)  # 3 of the 4 voters are up: still a quorum
    assert "k10" not in data(w.hosts[5])  # no longer a member: gets nothing new
    assert all(k in data(w.hosts[i]) for i in up for k in keys)
    w.restart(down)
    _wait_conf(w, ConfState(voters=four), sorted(four))
    wait_applied(w, keys, sorted(four))
    # Add 5 back: first as a learner, then promote it once it has caught up.
    _change(w, ("add-learner", 5))
    _wait_conf(w, ConfState(voters=four, learners=frozenset({5})), [*four, 5])
    wait_applied(w, keys, [5])
    assert w.run_until(lambda: w.leader() is not None and w.leader().engine.status().progress.get(5)
                       == w.leader().engine.status().last_index, 2 * SEC)
    _change(w, ("add", 5))
    _wait_conf(w, ConfState(voters=frozenset(w.hosts)), list(w.hosts))
    keys += _fill(w, 20, 3)
    w.finish()


# ============================================================================ transfer
@pytest.mark.parametrize("seed", [70, 71])
def test_leadership_transfer(seed: int) -> None:
    w = World(seed, quiet())
    keys = _fill(w, 1, 3)
    lead = wait_leader(w)
    term = lead.engine.status().term
    to = next(i for i in sorted(w.hosts) if i != lead.id)
    for s in range(10, 15):  # in flight while the transfer starts
        propose_at(w, lead, cmd(s))
        keys.append(f"k{s}")
    input_on(w, lead, lambda: lead.replica.transfer_leadership(to))
    assert w.run_until(lambda: w.leader() is w.hosts[to], 300 * MS)
    new = w.hosts[to].engine.status()
    assert new.term > term
    w.run_for(100 * MS)
    assert lead.engine.status().role == "follower" and lead.engine.status().leader == to
    for s in range(20, 23):
        propose_at(w, w.hosts[to], cmd(s))
        keys.append(f"k{s}")
    wait_applied(w, keys, limit_us=2 * SEC)
    w.finish()
