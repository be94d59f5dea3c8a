"""Direct unit tests of the pure Raft core, driven by hand without the simulator: a tiny
message pump that carries out each Ready (no real persistence) and delivers messages between
the nodes that are connected."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from shoal.consensus.confchange import ConfChange, ConfChangeError
from shoal.consensus.messages import (
    NONE,
    ConfState,
    Durable,
    Entry,
    HardState,
    LocalProtocolError,
    Message,
    MsgType,
    NotLeader,
    ReadState,
    Ready,
)
from shoal.consensus.raft import Raft, RaftConfig


class Cluster:
    def __init__(self, voters: tuple[int, ...] = (1, 2, 3), learners: tuple[int, ...] = (),
                 durable: dict[int, Durable] | None = None, **cfg: object) -> None:
        conf = ConfState(voters=frozenset(voters), learners=frozenset(learners))
        durable = durable or {}
        self.nodes = {
            i: Raft(i, conf, random.Random(i), durable.get(i),
                    RaftConfig(**cfg))  # type: ignore[arg-type]
            for i in (*voters, *learners)
        }
        self.observe: Callable[[], None] | None = None  # called after every delivery
        self.isolated: set[int] = set()
        self.drop: Callable[[Message], bool] = lambda m: False  # a scripted lossy network
        self.read_states: dict[int, list[ReadState]] = {i: [] for i in self.nodes}
        self.sent: list[Message] = []

    def drain(self, i: int) -> list[Message]:
        """Carry out every pending Ready of node i; return the messages it sent."""
        out: list[Message] = []
        n = self.nodes[i]
        while n.has_ready():
            rd = n.ready()
            out.extend(rd.messages)  # type: ignore[arg-type]
            self.read_states[i].extend(rd.read_states)
            n.advance(rd)
        return out

    def pump(self, rounds: int = 100) -> None:
        for _ in range(rounds):
            msgs = [m for i in self.nodes for m in self.drain(i)]
            if not msgs:
                return
            for m in msgs:
                self.sent.append(m)
                if m.src in self.isolated or m.dst in self.isolated or self.drop(m):
                    continue
                self.nodes[m.dst].step(m)
                if self.observe is not None:
                    self.observe()
        raise AssertionError("messages still flowing after many rounds")

    def tick(self, i: int, times: int = 1) -> None:
        for _ in range(times):
            self.nodes[i].tick()
            self.pump()

    def elect(self, i: int) -> Raft:
        for _ in range(100):
            if self.nodes[i].role == "leader":
                break
            self.tick(i)
        assert self.nodes[i].role == "leader"
        self.pump()
        return self.nodes[i]


def test_ready_advance_contract() -> None:
    c = Cluster()
    n = c.nodes[1]
    for _ in range(30):
        n.tick()
        if n.has_ready():
            break
    assert n.has_ready()
    rd = n.ready()
    assert rd.messages and rd.soft_state is not None  # pre-votes, as a pre-candidate
    # Mid-Ready there is nothing to take: has_ready says so, and changes nothing.
    assert not n.has_ready()
    msg = Message(MsgType.HEARTBEAT, 2, 1, term=5)
    for call in (lambda: n.step(msg), n.tick, lambda: n.propose(b"x"),
                 lambda: n.propose_conf_change(ConfChange((("add", 4),)).encode()),
                 lambda: n.read_index(b"r"), lambda: n.transfer_leadership(2),
                 lambda: n.compact(0, b""), n.ready, lambda: n.advance(Ready())):
        with pytest.raises(LocalProtocolError):
            call()
    n.advance(rd)
    assert not n.has_ready()  # everything it had was in that one Ready
    with pytest.raises(LocalProtocolError):
        n.advance(rd)  # a Ready is handed back once
    n.step(msg)  # fine once advanced
    assert n.term == n.status().term == 5


def test_cheap_term_role_and_leader_agree_with_status() -> None:
    c = Cluster()
    seen: set[str] = set()

    def check() -> None:
        for n in c.nodes.values():
            st = n.status()
            assert (n.term, n.role, n.leader) == (st.term, st.role, st.leader)
            seen.add(n.role)

    c.observe = check
    lead = c.elect(1)
    assert (lead.role, lead.leader) == ("leader", 1) and {"pre-candidate", "candidate"} <= seen
    assert all(n.leader == 1 and n.term == lead.term for n in c.nodes.values())
    n = c.nodes[2]
    n.step(Message(MsgType.HEARTBEAT, 3, 2, term=lead.term + 1))
    rd = n.ready()
    assert rd.soft_state is not None and type(rd.soft_state.role) is str  # a plain str
    assert (rd.soft_state.role, rd.soft_state.leader) == ("follower", 3) == (n.role, n.leader)
    n.advance(rd)


def test_election_and_replication_by_hand() -> None:
    c = Cluster()
    lead = c.elect(1)
    term = lead.status().term
    lead.propose(b"hello")
    c.pump()
    for n in c.nodes.values():
        st = n.status()
        assert st.term == term and st.leader == 1
        assert st.commit == st.last_index == lead.status().last_index


def test_propose_on_follower_without_forwarding_names_leader() -> None:
    c = Cluster(forward_proposals=False)
    c.elect(1)
    with pytest.raises(NotLeader) as exc:
        c.nodes[2].propose(b"x")
    assert exc.value.leader == 1
    # With no known leader the error says so.
    fresh = Cluster(forward_proposals=False)
    with pytest.raises(NotLeader) as exc2:
        fresh.nodes[2].propose(b"x")
    assert exc2.value.leader == 0


def test_propose_on_follower_with_forwarding_reaches_leader() -> None:
    c = Cluster()
    lead = c.elect(1)
    before = lead.status().last_index
    c.nodes[3].propose(b"fwd")
    c.pump()
    assert lead.status().last_index == before + 1
    assert all(n.status().commit == before + 1 for n in c.nodes.values())


@pytest.mark.parametrize("kwargs", [
    {"read_only": "lease", "check_quorum": False},
    {"read_only": "sometimes"},
    {"election_tick": 1, "heartbeat_tick": 1},
    {"heartbeat_tick": 0},
    {"bugs": frozenset({"no-such-bug"})},
    {"max_inflight_msgs": 0},
    {"snapshot_chunk_bytes": -1},
])
def test_raft_config_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RaftConfig(**kwargs)  # type: ignore[arg-type]


def test_raft_config_lease_with_check_quorum_is_fine() -> None:
    RaftConfig(read_only="lease", check_quorum=True)


def test_read_index_needs_quorum_of_heartbeat_responses() -> None:
    c = Cluster()
    lead = c.elect(1)
    commit = lead.status().commit
    assert commit == lead.status().last_index  # the no-op of its term is committed
    lead.read_index(b"ctx")
    assert lead.has_ready()
    rd = lead.ready()
    assert rd.read_states == []
    beats = [m for m in rd.messages if isinstance(m, Message) and m.type is MsgType.HEARTBEAT]
    assert {m.dst for m in beats} == {2, 3}
    assert all(m.read_round > 0 for m in beats)
    lead.advance(rd)
    # One follower answers: with the leader that is a quorum of 3.
    to2 = next(m for m in beats if m.dst == 2)
    c.nodes[2].step(to2)
    resps = c.drain(2)
    assert [m.type for m in resps] == [MsgType.HEARTBEAT_RESP]
    assert not c.drain(1)  # nothing confirmed yet
    assert c.read_states[1] == []
    lead.step(resps[0])
    c.drain(1)
    assert c.read_states[1] == [ReadState(b"ctx", commit)]


def test_new_leader_serves_no_read_before_committing_in_its_term() -> None:
    """Regression (the 5,000-seed campaign, seed 559): a new leader that heard heartbeat
    replies started a ReadIndex round at a commit index from the old term, below an entry the
    old leader had already acknowledged, and served a stale read."""
    c = Cluster()
    old = c.elect(1)
    # Node 2 takes over, but its appends (the no-op of its term) get nowhere yet: only
    # votes and heartbeats travel.
    c.drop = lambda m: m.type in (MsgType.APP, MsgType.APP_RESP)
    old.transfer_leadership(2)
    c.pump()
    new = c.nodes[2]
    assert new.role == "leader"
    assert new.status().commit < new.status().last_index  # its no-op is not committed
    new.read_index(b"r")
    c.tick(2, 5)  # heartbeat rounds come and go
    assert c.read_states[2] == [], "a read answered before the leader committed in its term"
    c.drop = lambda m: False
    c.tick(2, 2)
    assert [rs.context for rs in c.read_states[2]] == [b"r"]
    assert c.read_states[2][0].index == new.status().last_index  # its no-op included


def test_read_index_not_answered_without_quorum() -> None:
    c = Cluster()
    lead = c.elect(1)
    c.isolated = {2, 3}
    lead.read_index(b"ctx")
    c.pump()
    c.tick(1, 3)
    assert c.read_states[1] == []
    c.isolated = set()
    c.tick(1)  # the next heartbeat round reaches the followers
    assert c.read_states[1] == [ReadState(b"ctx", lead.status().commit)]


def test_learner_promotion_refused_while_lagging() -> None:
    c = Cluster(voters=(1, 2, 3), learners=(4,), max_learner_lag=5)
    c.isolated = {4}
    lead = c.elect(1)
    for k in range(10):
        lead.propose(f"e{k}".encode())
    c.pump()
    assert lead.status().commit == lead.status().last_index
    promote = ConfChange((("add", 4),)).encode()
    with pytest.raises(ConfChangeError, match="learner 4 has acknowledged nothing"):
        lead.propose_conf_change(promote)
    assert 4 in lead.status().conf.learners
    # Once the learner catches up, the promotion goes through (joint, then leave joint).
    c.isolated = set()
    c.tick(1, 2)
    assert lead.status().progress[4] == lead.status().last_index
    lead.propose_conf_change(promote)
    c.pump()
    c.tick(1, 2)
    conf = lead.status().conf
    assert conf.voters == frozenset({1, 2, 3, 4}) and not conf.joint and not conf.learners


def test_learner_never_campaigns() -> None:
    c = Cluster(voters=(1, 2, 3), learners=(4,))
    c.isolated = {1, 2, 3}
    c.tick(4, 100)
    st = c.nodes[4].status()
    assert st.term == 0 and st.role == "follower"


@pytest.mark.parametrize("pre_vote", [True, False])
def test_pre_vote_keeps_term_of_partitioned_node(pre_vote: bool) -> None:
    c = Cluster(pre_vote=pre_vote)
    lead = c.elect(1)
    term = lead.status().term
    assert c.nodes[3].status().term == term
    c.isolated = {3}
    c.tick(3, 200)  # many election timeouts alone
    t3 = c.nodes[3].status().term
    if pre_vote:
        assert t3 == term
    else:
        assert t3 > term + 3
    # The rest of the cluster kept its leader meanwhile.
    c.tick(1, 3)
    assert lead.status().role == "leader"
    # Rejoining: with pre-vote the node simply follows; without, its high term forces
    # an election, but either way the cluster ends with one leader everyone follows.
    c.isolated = set()
    for _ in range(60):
        for i in c.nodes:
            c.tick(i)
    leaders = [n for n in c.nodes.values() if n.status().role == "leader"]
    assert len(leaders) == 1
    terms = {n.status().term for n in c.nodes.values()}
    assert len(terms) == 1
    if pre_vote:
        assert leaders[0] is lead and terms == {term}


@pytest.mark.parametrize("bug", [False, True])
def test_figure8_rule_old_term_entry_not_committed_by_counting(bug: bool) -> None:
    """Node 1 holds an uncommitted entry of term 2 at index 2 and wins term 3. Once a majority
    (1 and 2) holds index 2 but not the term-3 no-op at index 3, index 2 must not commit:
    only an entry of the leader's own term is committed by counting replicas (Figure 8)."""
    a, b = Entry(1, 1, data=b"a"), Entry(2, 2, data=b"b")
    durable = {
        1: Durable(HardState(term=2, vote=1, commit=1), None, (a, b)),
        2: Durable(HardState(term=2, commit=1), None, (a,)),
        3: Durable(HardState(term=2, commit=1), None, (a,)),
    }
    bugs = frozenset({"commit-old-terms"}) if bug else frozenset()
    c = Cluster(durable=durable, max_size_per_msg=1, bugs=bugs)  # one entry per append
    c.isolated = {3}
    lead = c.nodes[1]
    seen: list[int] = []  # leader's commit whenever node 2 holds index 2 but not 3

    def observe() -> None:
        st = lead.status()
        if st.role == "leader" and st.progress.get(2) == 2:
            seen.append(st.commit)

    c.observe = observe
    c.elect(1)
    assert lead.status().term == 3
    assert seen, "the interesting state (match 2 of 3) never occurred"
    if bug:
        assert 2 in seen  # the broken variant commits the old entry by counting
    else:
        assert set(seen) == {1}
    assert lead.status().commit == 3  # the own-term no-op commits both at once
    assert c.nodes[2].status().commit == 3


# ============================================================================ a repaired log
def repair(c: Cluster, i: int, keep: int) -> Raft:
    """Restart node i as `--repair` hands it to the core: its log cut after `keep` entries,
    its epoch bumped and marked recovering (storage/recovery.py), term and vote as they were."""
    old = c.nodes[i]
    assert old.log.offset == 0 and keep < old.log.last_index()
    hs = HardState(old.term, old.vote, min(old.log.committed, keep), old.epoch + 1, True)
    n = Raft(i, old.conf, random.Random(100 + i), Durable(hs, None, tuple(old.log.entries[:keep])),
             old.cfg)
    c.nodes[i] = n
    return n


def test_a_repaired_follower_is_caught_up_by_the_leader_that_recorded_its_old_match() -> None:
    """Finding 7: the leader kept match 12,197 for a follower repaired back to 562 and took
    every rejection at or below that match for a stale message, so it never re-sent a thing."""
    c = Cluster()
    lead = c.elect(1)
    for k in range(40):
        lead.propose(b"v%d" % k)
    c.pump()
    assert lead.prs[3].match == lead.log.last_index() == c.nodes[3].log.last_index()
    n3 = repair(c, 3, 10)
    for k in range(5):
        lead.propose(b"w%d" % k)
    c.pump()
    c.tick(1, 2)
    assert (n3.log.last_index(), n3.log.committed) == (lead.log.last_index(), lead.log.committed)
    assert lead.prs[3].match == lead.log.last_index() and lead.prs[3].epoch == 1
    assert not n3.recovering and not n3.status().recovering
    assert n3._prev_hs.epoch == 1 and not n3._prev_hs.recovering  # what the driver persisted


def test_a_recovering_node_votes_for_no_one_and_never_campaigns() -> None:
    c = Cluster()
    lead = c.elect(1)
    for k in range(10):
        lead.propose(b"v%d" % k)
    c.pump()
    n3 = repair(c, 3, 4)
    c.isolated = {1}  # the only node that could bring it back is gone
    c.tick(3, 60)
    assert n3.role == "follower" and not any(m.src == 3 for m in c.sent if m.type in (
        MsgType.PRE_VOTE, MsgType.VOTE))
    c.sent.clear()
    c.tick(2, 60)  # node 2 has every entry; without node 3's vote it still cannot win
    answers = [m for m in c.sent if m.src == 3 and m.type in (MsgType.PRE_VOTE_RESP, MsgType.VOTE_RESP)]
    assert answers and all(m.reject for m in answers) and c.nodes[2].role != "leader"
    c.isolated = set()
    c.tick(1, 3)
    assert not n3.recovering and n3.log.last_index() == lead.log.last_index()


def test_a_recovering_follower_counts_for_no_commit_and_no_read_until_it_holds_all() -> None:
    c = Cluster(max_size_per_msg=1, max_inflight_msgs=1)  # one entry per append: a slow catch-up
    lead = c.elect(1)
    for k in range(20):
        lead.propose(b"v%d" % k)
    c.pump()
    c.isolated = {2}  # node 3 alone decides whether the leader has a quorum
    repair(c, 3, 3)
    committed = lead.log.committed
    for k in range(5):
        lead.propose(b"x%d" % k)  # not committed yet: the leader holds more than its commit
    lead.read_index(b"r")
    c.drop = lambda m: m.type is MsgType.APP and m.dst == 3
    c.tick(1, 5)  # heartbeats, each answered by node 3, which has learnt nothing new
    assert lead.prs[3].recovering and not c.read_states[1] and lead.log.committed == committed
    c.drop = lambda m: False
    windows = 0

    def check() -> None:
        nonlocal windows
        pr = lead.prs[3]
        if pr.recovering and pr.match < pr.recover_to:
            windows += 1
            assert lead.log.committed == committed, "a recovering follower's ack was counted"
            assert not lead.read_states and not c.read_states[1], "its heartbeat confirmed a read"

    c.observe = check
    c.tick(1, 5)
    assert windows > 10  # the catch-up took many messages, each checked
    assert lead.log.committed == lead.log.last_index() > committed
    assert [r.context for r in c.read_states[1]] == [b"r"] and not c.nodes[3].recovering


def test_a_reply_from_before_the_repair_is_stale() -> None:
    c = Cluster()
    lead = c.elect(1)
    for k in range(10):
        lead.propose(b"v%d" % k)
    c.pump()
    last = lead.log.last_index()
    repair(c, 3, 2)
    c.drop = lambda m: m.type is MsgType.APP and m.dst == 3
    c.tick(1)  # a heartbeat round: the leader hears epoch 1 and forgets match 11
    assert (lead.prs[3].match, lead.prs[3].epoch, lead.prs[3].recovering) == (0, 1, True)
    lead.step(Message(MsgType.APP_RESP, 3, 1, term=lead.term, index=last))  # epoch 0: old life
    assert lead.prs[3].match == 0
    c.drop = lambda m: False
    c.tick(1, 2)
    assert lead.prs[3].match == last and not lead.prs[3].recovering


def test_a_repaired_sole_voter_leads_again() -> None:
    """Nobody else holds what its cut took: recovering would keep it down for ever."""
    c = Cluster(voters=(1,))
    lead = c.elect(1)
    for k in range(5):
        lead.propose(b"v%d" % k)
    c.pump()
    n = repair(c, 1, 3)
    assert n.recovering
    n = c.elect(1)
    assert not n.recovering and n.log.committed == n.log.last_index() == 4  # and its no-op


def test_followers_that_forget_a_dead_leader_elect_within_one_election_timeout() -> None:
    """forget_leader (etcd's ForgetLeader): a leaderless follower grants pre-votes at once
    instead of honouring check_quorum's lease, and campaigns within election_tick ticks;
    without it no follower can even campaign before a whole election timeout."""
    for forget in (True, False):
        c = Cluster()
        c.elect(1)
        c.isolated = {1}  # the leader's process is gone
        if forget:
            for i in (2, 3):
                c.nodes[i].forget_leader()
                assert c.nodes[i].leader == NONE
        ticks = 0
        while not any(c.nodes[i].role == "leader" for i in (2, 3)):
            for i in (2, 3):
                c.tick(i)
            ticks += 1
            assert ticks < 100
        election_tick = RaftConfig().election_tick
        assert ticks <= election_tick if forget else ticks > election_tick


def test_forget_leader_is_undone_by_the_leader_and_off_with_lease_reads() -> None:
    c = Cluster()
    c.elect(1)
    c.nodes[2].forget_leader()
    c.tick(1)  # a heartbeat: the leader was alive after all
    assert c.nodes[2].leader == 1 and c.nodes[2].role == "follower"
    lease = Cluster(read_only="lease")
    lease.elect(1)
    lease.nodes[2].forget_leader()  # lease reads trust followers to wait out the timeout
    assert lease.nodes[2].leader == 1
