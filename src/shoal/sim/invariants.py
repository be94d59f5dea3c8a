"""Safety properties checked while a simulation runs. Each failure raises `Violation`, which
stops the run so the seed can be replayed."""

from __future__ import annotations

from ..consensus.messages import Entry, Message, MsgType, NodeId, Ready
from .disk import Disk


class Violation(Exception):
    def __init__(self, invariant: str, detail: str):
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant
        self.detail = detail


class Invariants:
    def __init__(self, log_shaped: bool):
        # Raft's log is the replicated log itself; Paxos acceptors hold values that may never
        # be chosen, so log matching and leader completeness only apply to log-shaped engines.
        self.log_shaped = log_shaped
        self.leaders: dict[int, NodeId] = {}  # term -> the one leader of that term
        self.applied: dict[int, tuple[int, int, bytes]] = {}  # index -> (term, kind, data)
        self.commit: dict[NodeId, int] = {}  # per node life: last commit seen in a Ready
        self.commit_term: dict[int, int] = {}  # index -> term of the leader that first committed it
        self.committed_upto = 0
        self.votes: dict[tuple[NodeId, int], NodeId] = {}  # (voter, term) -> candidate, across restarts

    def node_restarted(self, node: NodeId, durable_commit: int) -> None:
        self.commit[node] = durable_commit

    def on_ready(self, node: NodeId, rd: Ready) -> None:
        if rd.hard_state is not None:
            prev = self.commit.get(node, 0)
            if rd.hard_state.commit < prev:
                raise Violation("monotonic commit", f"node {node} commit went from {prev} to {rd.hard_state.commit}")
            self.commit[node] = rd.hard_state.commit

    def on_commit(self, upto: int, term: int) -> None:
        """A leader of `term` has committed everything up to `upto`."""
        for i in range(self.committed_upto + 1, upto + 1):
            self.commit_term[i] = term
        self.committed_upto = max(self.committed_upto, upto)

    def on_leader(self, node: NodeId, term: int, disk: Disk) -> None:
        if not self.log_shaped:
            return  # a Paxos ballot names its leader: two leaders can share a round, never a ballot
        other = self.leaders.setdefault(term, node)
        if other != node:
            raise Violation("election safety", f"nodes {other} and {node} are both leader in term {term}")
        if not self.log_shaped:
            return
        # Only entries committed in earlier terms are owed: a candidate may legally win an old
        # term late (delayed votes) and then can commit nothing.
        for index, committed_in in self.commit_term.items():
            if index <= disk.offset() or committed_in >= term:
                continue
            t = self.applied[index][0] if index in self.applied else None
            e = disk.entry(index)
            if e is None or (t is not None and e.term != t):
                raise Violation("leader completeness", f"new leader {node} (term {term}) lacks entry {index} (term {t}) committed in term {committed_in}; has {e}")

    def on_apply(self, node: NodeId, e: Entry) -> None:
        # In Raft an entry keeps its term for life; in Paxos the chosen value may be accepted
        # again under a later ballot, so only the value itself must agree.
        mine = (e.term if self.log_shaped else 0, int(e.kind), e.data)
        seen = self.applied.setdefault(e.index, mine)
        if seen != mine:
            raise Violation("state machine safety", f"node {node} applied {e} at {e.index}, another node applied term {seen[0]} data {seen[2][:80]!r}")

    def on_send(self, node: NodeId, m: object, disk: Disk) -> None:
        """The Ready contract: what a message promises must already be durable."""
        if not isinstance(m, Message):
            return
        if m.type is MsgType.VOTE_RESP and not m.reject:
            granted = self.votes.setdefault((node, m.term), m.dst)
            if granted != m.dst:
                raise Violation("one vote per term", f"node {node} voted for {granted} and then {m.dst} in term {m.term}")
        if m.term > disk.hard_state.term and m.type not in (MsgType.PRE_VOTE, MsgType.PRE_VOTE_RESP):
            raise Violation("persist before send", f"node {node} sent term {m.term} but its disk holds term {disk.hard_state.term}: {m.type.name}")
        if m.type is MsgType.APP_RESP and not m.reject and m.index > disk.last_index():
            raise Violation("persist before send", f"node {node} acknowledged index {m.index} but its disk ends at {disk.last_index()}")

    def check_log_matching(self, disks: dict[NodeId, Disk]) -> None:
        """If two logs hold an entry with the same index and term, they agree on everything up to it."""
        if not self.log_shaped:
            return
        ids = sorted(disks)
        for x, a in enumerate(ids):
            for b in ids[x + 1 :]:
                da, db = disks[a], disks[b]
                lo = max(da.offset(), db.offset()) + 1
                hi = min(da.last_index(), db.last_index())
                match = False
                for i in range(hi, lo - 1, -1):
                    ea, eb = da.entry(i), db.entry(i)
                    assert ea is not None and eb is not None
                    if not match and ea.term == eb.term:
                        match = True
                    if match and ea != eb:
                        raise Violation("log matching", f"nodes {a} and {b} share a later entry but differ at {i}: {ea} vs {eb}")
