"""The Ready bookkeeping every consensus engine shares, kept once (etcd-io/raft keeps it in
RawNode).

How it works
------------
An engine is a pure state machine. Its driver feeds it input (`tick`, `step`, `propose`, ...),
asks `has_ready()`, and when that is True takes one `Ready` with `ready()`, carries it out in
the order the `Ready` docstring (messages.py) lays down, and hands that very object back with
`advance()`. Everything about that hand-over that does not depend on the algorithm lives here:

- the outbox (`msgs`), the answered reads (`read_states`) and a snapshot received from a peer
  (`pending_snapshot`): the engine only appends to or sets them; a Ready takes them all;
- the last HardState the driver was handed (`_prev_hs`; at start, the one it persisted). A
  Ready carries `hard_state` only when it differs, and `must_sync` when there are entries or
  a snapshot to write, or the term, the vote or the recovery state changed. A Ready that
  moves only the commit index needs no fsync;
- the last SoftState the driver was handed (`_prev_ss`; at start "follower, no leader", which
  is what every driver assumes of a fresh engine). It is built from the engine's cheap
  `role` and `leader` attributes, and a Ready carries it only when one of them changed;
- the Ready handed out and not yet advanced (`_outstanding`). Between `ready()` and
  `advance()` every input raises `LocalProtocolError` (the engine calls `_refuse_mid_ready`
  first thing in each), `ready()` raises, and `advance()` refuses any other object. etcd
  allows input in between and tracks what became stable; we chose the simpler contract, in
  which a driver queues its input while it persists.

What the engine supplies is small: its HardState (`_hard_state`), its batching (`_flush`:
turn what accumulated since the last Ready into messages), whether log work is waiting
(`_log_pending`), that log work itself (`_take_log`: entries to persist, committed entries to
apply), and what to do once the driver has carried a Ready out (`_on_advance`: mark entries
stable, move the applied index, act on applied membership changes).

What has_ready means
--------------------
`has_ready()` is True exactly when `ready()` may be called now and would return a Ready that
is not empty. It never raises, and while a Ready is outstanding it is False and changes
nothing.

Before this module existed the two engines had drifted apart here. MultiPaxos answered
False while a Ready was outstanding. Raft answered from state that only `advance()` updates,
so mid-Ready it still saw the entries it had just handed out as unstable, the committed
entries as unapplied and the hard state as new, and said True for a Ready that `ready()`
would then refuse to give; on the way it also flushed pending appends into the outbox, a
query changing the engine while the driver was persisting its previous output. The stricter
meaning (Paxos's) is the correct one, because it is the only one under which "has_ready()
is True" and "ready() succeeds with work in it" are the same statement; both engines now
have it, by construction, and `ready()` asserts that the engine's cheap `_log_pending`
agrees with the log work it actually hands out.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Generic, TypeVar

from .messages import (
    NONE,
    Entry,
    HardState,
    LocalProtocolError,
    NodeId,
    ReadState,
    Ready,
    Snapshot,
    SoftState,
)

M = TypeVar("M")  # the engine's peer message type

INITIAL_SOFT_STATE = SoftState(NONE, "follower")


class RawNode(ABC, Generic[M]):
    """The driver-facing half of an engine: `has_ready`, `ready`, `advance`, and the guard
    that refuses input in between. Raft and MultiPaxos extend it (see the module docstring)."""

    # Kept by the engine as plain attributes: they are the Engine protocol's cheap `role`
    # ("leader", "follower", ...) and `leader` (NONE when unknown).
    role: str
    leader: NodeId

    def __init__(self, durable_hard_state: HardState) -> None:
        """`durable_hard_state` is what the driver has on disk (HardState() for a new node):
        a Ready repeats the hard state only once it differs from that."""
        assert durable_hard_state.term >= 0 and durable_hard_state.commit >= 0
        self.msgs: list[M] = []  # the outbox: leaves with the next Ready
        self.read_states: list[ReadState] = []  # answered reads, for the next Ready
        self.pending_snapshot: Snapshot | None = None  # received from a peer, to hand over
        self._prev_hs = durable_hard_state
        self._prev_ss = INITIAL_SOFT_STATE
        self._outstanding: Ready | None = None

    # ================================================================ what the engine supplies
    @abstractmethod
    def _hard_state(self) -> HardState:
        """What must be durable before any message that depends on it leaves."""

    @abstractmethod
    def _flush(self) -> None:
        """Batching: turn what accumulated since the last Ready (proposals, queued reads, a
        commit followers have not heard of) into messages in `msgs`. Must be idempotent."""

    @abstractmethod
    def _log_pending(self) -> bool:
        """Cheaply: would `_take_log` return anything?"""

    @abstractmethod
    def _take_log(self) -> tuple[list[Entry], list[Entry]]:
        """(entries to persist, committed entries to apply, in index order) for the Ready
        being built. An engine that tracks what it handed out marks them taken here."""

    @abstractmethod
    def _on_advance(self, rd: Ready) -> None:
        """The driver carried out `rd` (the shared bookkeeping is already updated)."""

    # ================================================================ the driver's side
    def has_ready(self) -> bool:
        """True exactly when `ready()` may be called now and would hand out work."""
        if self._outstanding is not None:
            return False  # one Ready at a time; and a query changes nothing mid-Ready
        self._flush()
        return bool(
            self.msgs or self.read_states or self.pending_snapshot is not None
            or self._log_pending()
            or self._hard_state() != self._prev_hs or self._soft_state() != self._prev_ss
        )

    def ready(self) -> Ready:
        """The next batch of work (possibly empty when `has_ready()` is False)."""
        self._refuse_mid_ready()
        self._flush()
        hs, ss, prev = self._hard_state(), self._soft_state(), self._prev_hs
        assert hs.term >= prev.term, f"term went back from {prev.term} to {hs.term}"
        assert hs.term != prev.term or prev.vote in (NONE, hs.vote), (
            f"vote changed from {prev.vote} to {hs.vote} within term {hs.term}")
        log_pending = self._log_pending()
        entries, committed = self._take_log()
        assert log_pending == bool(entries or committed), (
            f"_log_pending() said {log_pending} but the log handed out "
            f"{len(entries)} entries and {len(committed)} committed")
        for batch in (entries, committed):  # contiguous runs (O(1): both come from one log)
            assert not batch or batch[-1].index - batch[0].index == len(batch) - 1
        assert not committed or committed[-1].index <= hs.commit, (
            f"applying {committed[-1].index} beyond the commit index {hs.commit}")
        snapshot = self.pending_snapshot
        rd = Ready(
            soft_state=ss if ss != self._prev_ss else None,
            hard_state=hs if hs != prev else None,
            entries=entries,
            snapshot=snapshot,
            committed=committed,
            messages=list(self.msgs),
            read_states=self.read_states,
            must_sync=bool(entries) or snapshot is not None
            or (hs.term, hs.vote, hs.epoch, hs.recovering)
            != (prev.term, prev.vote, prev.epoch, prev.recovering),
        )
        self.msgs, self.read_states = [], []
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """`rd` is persisted, sent and applied. It must be the object `ready()` returned."""
        if rd is not self._outstanding:
            raise LocalProtocolError("advance() must be given the Ready that ready() returned")
        self._outstanding = None
        if rd.hard_state is not None:
            self._prev_hs = rd.hard_state
        if rd.soft_state is not None:
            self._prev_ss = rd.soft_state
        if rd.snapshot is not None:
            # No input can arrive mid-Ready, so nothing can have replaced it meanwhile.
            assert self.pending_snapshot is rd.snapshot, "the pending snapshot changed mid-Ready"
            self.pending_snapshot = None
        self._on_advance(rd)
        assert self._outstanding is None, "_on_advance must not hand out another Ready"

    # ================================================================ for the engine
    def _refuse_mid_ready(self) -> None:
        """First thing in every input method: no input between ready() and advance()."""
        if self._outstanding is not None:
            raise LocalProtocolError("the driver must advance() the outstanding Ready first")

    def _soft_state(self) -> SoftState:
        return SoftState(self.leader, str(self.role))
