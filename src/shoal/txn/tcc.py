"""TCC (try / confirm / cancel): an atomic commitment over services that keep their own state
and expose three operations per transaction: try reserves (holds stock, freezes funds), confirm
makes the reservation take effect, cancel releases it.

    pay = Participant("payment", try_=freeze, confirm=debit, cancel=unfreeze)
    stock = Participant("inventory", try_=hold, confirm=take, cancel=release)
    async with TccCoordinator(client, [TccDefinition("buy", [pay, stock])]) as tcc:
        outcome = await tcc.run("buy", {"order": 1042}, txn_id="buy-1042")

The protocol. The coordinator records the transaction (status trying) at `/shoal/tcc/<id>`,
runs every participant's try in parallel (bounded by `max_parallel`, each retried; once one
has failed, tries not yet started are skipped), and then writes the **decision** into the record: confirming if every try succeeded, else cancelling.
That write is the commit point. It then confirms (or cancels) every participant in parallel,
retrying; a participant that keeps failing stalls the transaction and recovery retries it
later, until every one has acknowledged. A process that resumes a transaction found in
status trying (its coordinator died before deciding) cancels it: presumed abort. One found
confirming or cancelling is driven the same way as its first owner would have.

Fences: the "empty rollback" and "hanging try" of TCC (as Seata names them). A cancel can
reach a participant whose try never arrived (the coordinator died first, or the try is still
in the network); that try can then arrive after the cancel and reserve something nothing will
ever release. Each branch (transaction, participant) therefore has a fence record in the store,
`/shoal/tcc/<id>/branch/<participant>`, with the branch's state:

    (none) --try--> trying --> tried --confirm--> confirmed
    (none) --cancel--> cancelled (empty: the participant's cancel is not called)
    trying | tried --cancel--> cancelling --(participant's cancel)--> cancelled

A try finding the branch cancelled (or cancelling) is refused (TryRefused) without calling the
participant. A try that got past the fence just before a cancel closed it cannot be told apart
by the fence alone: its context's `guards` compare the fence's revision, so a try whose effect
is a Shoal transaction including them is refused by the store once a cancel has begun; an
external service must do the same with its own records (refuse a try for an idempotency key
it has already cancelled). TccDefinition(fence=True) (the default) puts every participant
behind this coordinator's fence; `BranchFence.wrap` does it for a participant elsewhere,
next to the service, where the fence also covers the network between the two.

Idempotency. Try, confirm and cancel can each run more than once for one branch (retries,
recovery, a late old coordinator); each receives the transaction id and participant name
(`idempotency_key`), the fencing token and the try's recorded result."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from ..client import txn
from ..client.aio import Client
from ..kv.keyvalue import KeyValue
from ..kv.requests import Compare
from .orchestration import (
    FORMAT,
    Abort,
    Change,
    ConflictingStart,
    Coordinator,
    Instance,
    InstanceBusy,
    LostClaim,
    MalformedState,
    Namespace,
    OrchestrationError,
    Outcome,
    RecoveryPass,
    Retry,
    Stalled,
    UnknownDefinition,
    attempt,
    check_name,
    decode,
    encode,
    first_kv,
)

__all__ = [
    "Abort", "BranchContext", "BranchFence", "BranchStateError", "Change", "ConflictingStart",
    "InstanceBusy", "LostClaim", "MalformedState", "OrchestrationError", "Outcome",
    "Participant", "RecoveryPass", "Stalled", "TccCoordinator", "TccDefinition", "TryRefused",
    "UnknownDefinition",
]

log = logging.getLogger("shoal.txn")

# transaction statuses
TRYING, CONFIRMING, CANCELLING = "trying", "confirming", "cancelling"
CONFIRMED, CANCELLED = "confirmed", "cancelled"
# branch (fence) states: TRYING, CANCELLING, CONFIRMED and CANCELLED, and:
TRIED = "tried"
BRANCH_STATES = frozenset({TRYING, TRIED, CANCELLING, CANCELLED, CONFIRMED})
MAX_RACES = 8  # fence compare-and-puts lost in a row before giving up (each loss is progress)
_SKIPPED = object()  # a try not started because another had failed


class TryRefused(OrchestrationError):
    """A try that came after (or was overtaken by) a cancel of its branch: it must not
    reserve anything, since no cancel will come for it again."""

    def __init__(self, txn_id: str, participant: str, state: str, empty: bool, late: bool):
        how = ("its try was still running when the cancel began; the cancel undoes what it did"
               if late else "cancelled before this try arrived" +
               (" (an empty rollback)" if empty else ""))
        super().__init__(f"tcc {txn_id!r}: try of {participant!r} refused: the branch is "
                         f"{state}, {how}")
        self.txn_id, self.participant, self.state, self.empty = txn_id, participant, state, empty


class BranchStateError(OrchestrationError):
    """A confirm of a branch that was not tried, or a cancel of a confirmed one: the records
    contradict the decision, which no retry can mend."""


@dataclass(frozen=True)
class BranchContext:
    """What a participant's try, confirm or cancel is told. `try_result`: what its try
    returned (for confirm and cancel; None if unknown or it never ran); `guards`: store
    comparisons that hold while this coordinator's claim (and, behind a fence, this try's
    branch) stands; `attempt`: 1 for the first call in this owner's round."""

    txn_id: str
    participant: str
    input: Any
    fencing_token: int
    guards: tuple[Compare, ...]
    attempt: int
    try_result: Any = None

    @property
    def idempotency_key(self) -> str:
        """`<txn id>/<participant>`: the same for every call about this branch."""
        return f"{self.txn_id}/{self.participant}"


BranchCall = Callable[[BranchContext], Awaitable[Any]]


@dataclass(frozen=True)
class Participant:
    """One service's three operations. Each call is retried `retries` more times after a
    failure (from `backoff` seconds, doubling to `max_backoff`), `timeout` bounds each.
    try_'s result must be msgpack-encodable; it is recorded and passed to confirm/cancel."""

    name: str
    try_: BranchCall
    confirm: BranchCall
    cancel: BranchCall
    retries: int = 3
    backoff: float = 0.05
    max_backoff: float = 2.0
    timeout: float | None = None
    retry: Retry = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_name("participant name", self.name)
        object.__setattr__(self, "retry",
                           Retry(self.retries, self.backoff, self.max_backoff, self.timeout))


@dataclass(frozen=True)
class TccDefinition:
    """A named TCC transaction over `participants`. `fence`: run them behind this
    coordinator's branch fences (False if they already are, elsewhere: BranchFence.wrap);
    `max_parallel`: tries at once (default all; once one fails, those not started yet are
    skipped, and their cancels are empty rollbacks)."""

    name: str
    participants: Sequence[Participant]
    fence: bool = True
    max_parallel: int | None = None

    def __post_init__(self) -> None:
        check_name("tcc name", self.name)
        object.__setattr__(self, "participants", tuple(self.participants))
        names = [p.name for p in self.participants]
        if not names:
            raise ValueError(f"tcc {self.name!r} has no participants")
        if len(set(names)) != len(names):
            raise ValueError(f"tcc {self.name!r} has two participants with one name: {names}")
        if self.max_parallel is not None and self.max_parallel < 1:
            raise ValueError(f"tcc {self.name!r}: max_parallel must be at least 1")


class BranchFence:
    """Branch records in the store that make a participant safe against empty rollbacks
    and hanging tries (module docstring). `root` must be the coordinator's (the fences live
    under its transactions' records)."""

    def __init__(self, client: Client, root: bytes = b"/shoal/tcc"):
        self.client, self.ns = client, Namespace(root)

    def key(self, txn_id: str, participant: str) -> bytes:
        return self.ns.child(txn_id, "branch", participant)

    def wrap(self, participant: Participant) -> Participant:
        """`participant` with its three calls going through the fence."""
        return replace(participant,
                       try_=functools.partial(self._try, participant),
                       confirm=functools.partial(self._confirm, participant),
                       cancel=functools.partial(self._cancel, participant))

    async def state(self, txn_id: str, participant: str) -> dict[str, Any] | None:
        """The branch's fence record (state, token, result, empty), None if it has none."""
        kv = first_kv(await self.client.get(self.key(txn_id, participant)))
        return None if kv is None else self._decode(kv)

    def _value(self, state: str, ctx: BranchContext, result: Any = None,
               empty: bool = False) -> bytes:
        return encode({"v": FORMAT, "state": state, "token": ctx.fencing_token,
                       "result": result, "empty": empty},
                      f"the try result of {ctx.participant!r} in tcc {ctx.txn_id!r}")

    def _decode(self, kv: KeyValue) -> dict[str, Any]:
        rec = decode(kv.key, kv.value)
        if not isinstance(rec, dict) or rec.get("v") != FORMAT or \
                rec.get("state") not in BRANCH_STATES:
            raise MalformedState(kv.key, f"not a branch fence record: {rec!r}")
        return rec

    async def _read(self, key: bytes) -> tuple[KeyValue | None, dict[str, Any] | None]:
        kv = first_kv(await self.client.get(key))
        return kv, None if kv is None else self._decode(kv)

    async def _cas(self, key: bytes, revision: int, value: bytes) -> int:
        """Write if the fence is still at `revision` (0: absent); the new revision, or 0."""
        resp = await self.client.txn([txn.mod_revision_equals(key, revision)],
                                     [txn.put(key, value)])
        return resp.header.revision if resp.succeeded else 0

    def _raced(self, key: bytes) -> OrchestrationError:
        return OrchestrationError(f"branch fence {key!r} changed under {MAX_RACES} "
                                  "compare-and-puts in a row")

    async def _try(self, p: Participant, ctx: BranchContext) -> Any:
        key = self.key(ctx.txn_id, ctx.participant)
        for _ in range(MAX_RACES):
            kv, rec = await self._read(key)
            if kv is None or rec is None:
                rev = await self._cas(key, 0, self._value(TRYING, ctx))
            elif rec["state"] == TRYING:  # a retry of this try: the branch is still open
                rev = kv.mod_revision
            elif rec["state"] in (TRIED, CONFIRMED):
                return rec["result"]  # it was tried already: the same answer again
            else:
                raise TryRefused(ctx.txn_id, ctx.participant, rec["state"], rec["empty"], False)
            if rev:
                break
        else:
            raise self._raced(key)
        result = await p.try_(replace(ctx, guards=(*ctx.guards,
                                                   txn.mod_revision_equals(key, rev))))
        if await self._cas(key, rev, self._value(TRIED, ctx, result)):
            return result
        _, rec = await self._read(key)
        if rec is not None and rec["state"] in (TRIED, CONFIRMED):
            return rec["result"]  # (another call of this same try recorded it)
        raise TryRefused(ctx.txn_id, ctx.participant, rec["state"] if rec else "gone",
                         bool(rec and rec["empty"]), True)

    async def _cancel(self, p: Participant, ctx: BranchContext) -> None:
        key = self.key(ctx.txn_id, ctx.participant)
        for _ in range(MAX_RACES):
            kv, rec = await self._read(key)
            if kv is None or rec is None:
                # Empty rollback: nothing was tried, so there is nothing for the participant
                # to undo; recording it is what makes a late try refuse.
                if await self._cas(key, 0, self._value(CANCELLED, ctx, empty=True)):
                    log.info("tcc %r: %r cancelled before its try (empty rollback)",
                             ctx.txn_id, ctx.participant)
                    return
                continue
            state, rev = rec["state"], kv.mod_revision
            if state == CANCELLED:
                return
            if state == CONFIRMED:
                raise BranchStateError(f"tcc {ctx.txn_id!r}: cancel of {ctx.participant!r}, "
                                       "whose branch is already confirmed")
            if state in (TRYING, TRIED):
                # Close the fence first: a try still in flight is refused from here on.
                rev = await self._cas(key, rev, self._value(CANCELLING, ctx, rec["result"]))
                if not rev:
                    continue
            await p.cancel(replace(ctx, try_result=rec["result"]))
            if await self._cas(key, rev, self._value(CANCELLED, ctx, rec["result"])):
                return
        raise self._raced(key)

    async def _confirm(self, p: Participant, ctx: BranchContext) -> None:
        key = self.key(ctx.txn_id, ctx.participant)
        for _ in range(MAX_RACES):
            kv, rec = await self._read(key)
            state = rec["state"] if rec is not None else "never tried"
            if state == CONFIRMED:
                return
            if kv is None or rec is None or state != TRIED:
                raise BranchStateError(f"tcc {ctx.txn_id!r}: confirm of {ctx.participant!r}, "
                                       f"whose branch is {state}, not tried")
            await p.confirm(replace(ctx, try_result=rec["result"]))
            if await self._cas(key, kv.mod_revision, self._value(CONFIRMED, ctx, rec["result"])):
                return
        raise self._raced(key)


class TccCoordinator(Coordinator[TccDefinition]):
    """Runs and recovers TCC transactions whose progress is durable in the store under
    `root` (default `/shoal/tcc`). See orchestration.Coordinator for the other arguments
    and for recover(), run_recovery(), status() and forget()."""

    kind = "tcc"
    default_root = b"/shoal/tcc"
    statuses: ClassVar[frozenset[str]] = frozenset(
        {TRYING, CONFIRMING, CANCELLING, CONFIRMED, CANCELLED})
    terminal: ClassVar[frozenset[str]] = frozenset({CONFIRMED, CANCELLED})
    initial_status = TRYING

    def __init__(self, client: Client, definitions: Sequence[TccDefinition] = (),
                 **kw: Any):
        super().__init__(client, definitions, **kw)
        self.fence = BranchFence(client, self.ns.root)
        self._fenced: dict[str, tuple[Participant, ...]] = {}

    async def run(self, definition: str, input: Any = None, *,
                  txn_id: str | None = None) -> Outcome:
        """Run transaction `definition` on `input` (msgpack-encodable) to the end: status
        "confirmed" (results: every try's) or "cancelled" (error: which tries failed, or that
        the coordinator died before deciding). `txn_id` (default: a fresh uuid) names it;
        running an id again returns the recorded outcome. Raises Stalled if confirms or
        cancels kept failing (recovery carries on), LostClaim if another process took the
        transaction over."""
        d = self.definition(definition)
        return await self._start(definition, txn_id, input, self._new_record(
            definition, input, participants=[p.name for p in d.participants], tries={}))

    def _participants(self, d: TccDefinition) -> tuple[Participant, ...]:
        if not d.fence:
            return tuple(d.participants)
        if d.name not in self._fenced:
            self._fenced[d.name] = tuple(self.fence.wrap(p) for p in d.participants)
        return self._fenced[d.name]

    # ------------------------------------------------------------------ the record
    def _validate(self, key: bytes, record: dict[str, Any]) -> None:
        names = record.get("participants")
        if not isinstance(names, list) or not names or \
                not all(isinstance(n, str) for n in names):
            raise MalformedState(key, "no participant list")
        if not isinstance(record.get("tries"), dict):
            raise MalformedState(key, "tries is not a map")

    def _outcome(self, id: str, record: dict[str, Any]) -> Outcome:
        return Outcome(id, self.kind, record["def"], record["status"], dict(record["tries"]),
                       record["error"])

    def _matching(self, id: str, record: dict[str, Any]) -> TccDefinition:
        d = self.definition(record["def"], id)
        names = [p.name for p in d.participants]
        if record["participants"] != names:
            raise MalformedState(self.ns.record(id),
                                 f"recorded with participants {record['participants']}, "
                                 f"but definition {d.name!r} here has {names}")
        return d

    def _context(self, inst: Instance, p: Participant, n: int) -> BranchContext:
        return BranchContext(inst.id, p.name, inst.record["input"], inst.token,
                             self.guards(inst), n, inst.record["tries"].get(p.name))

    # ------------------------------------------------------------------ driving
    async def _drive(self, inst: Instance) -> Outcome:
        d = self._matching(inst.id, inst.record)
        parts = self._participants(d)
        if inst.record["status"] == TRYING:
            if inst.fresh:
                tries, errors = await self._try_all(inst, parts, d.max_parallel)
                decision = CANCELLING if errors else CONFIRMING
                error = "; ".join(errors) if errors else None
            else:
                tries, decision = {}, CANCELLING
                error = "its coordinator stopped before deciding: cancelled (presumed abort)"
            # The commit point: from here on every participant is confirmed, or cancelled.
            await self._save(inst, {**inst.record, "status": decision, "tries": tries,
                                    "error": error}, state=decision)
        if inst.record["status"] in (CONFIRMING, CANCELLING):
            await self._finish(inst, parts)
        return self._outcome(inst.id, inst.record)

    async def _try_all(self, inst: Instance, parts: Sequence[Participant],
                       max_parallel: int | None) -> tuple[dict[str, Any], list[str]]:
        slots = asyncio.Semaphore(max_parallel or len(parts))
        failed = False

        async def one(p: Participant) -> Any:
            nonlocal failed
            async with slots:
                if failed:  # the decision is cancel already: do not reserve any more
                    return _SKIPPED
                try:
                    result = await attempt(lambda n: p.try_(self._context(inst, p, n)),
                                           p.retry, f"tcc {inst.id!r} try of {p.name!r}")
                    encode(result, f"the try result of {p.name!r}")
                except BaseException:
                    failed = True
                    raise
                return result

        # Every try started is let finish (none is abandoned mid-call): cancels follow.
        done = await asyncio.gather(*(one(p) for p in parts), return_exceptions=True)
        tries: dict[str, Any] = {}
        errors: list[str] = []
        for p, res in zip(parts, done, strict=True):
            if isinstance(res, LostClaim):
                raise res
            if isinstance(res, BaseException):
                if not isinstance(res, Exception):
                    raise res  # a cancel of ours: not a participant's answer
                errors.append(f"try of {p.name!r} failed: {res!r}")
            elif res is not _SKIPPED:
                tries[p.name] = res
        return tries, errors

    async def _finish(self, inst: Instance, parts: Sequence[Participant]) -> None:
        """Confirm or cancel every participant, as decided; stall if any keeps failing."""
        confirming = inst.record["status"] == CONFIRMING
        verb = "confirm" if confirming else "cancel"

        async def one(p: Participant) -> None:
            call = p.confirm if confirming else p.cancel
            await attempt(lambda n: call(self._context(inst, p, n)), p.retry,
                          f"tcc {inst.id!r} {verb} of {p.name!r}")

        done = await asyncio.gather(*(one(p) for p in parts), return_exceptions=True)
        failures: list[str] = []
        for p, res in zip(parts, done, strict=True):
            if isinstance(res, LostClaim):
                raise res
            if isinstance(res, BaseException):
                if not isinstance(res, Exception):
                    raise res
                failures.append(f"{verb} of {p.name!r} failed: {res!r}")
        if failures:
            await self._stall(inst, "; ".join(failures))
        await self._save(inst, {**inst.record,
                                "status": CONFIRMED if confirming else CANCELLED},
                         state=CONFIRMED if confirming else CANCELLED, final=True)
