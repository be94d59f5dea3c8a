"""Sagas (Garcia-Molina & Salem, 1987): a long-lived transaction over services that keep their
own state, run as a sequence of steps, each an action and (usually) a compensation that
semantically undoes it. Either every action takes effect, or the ones that did are
compensated, in reverse order.

    orders = SagaDefinition("order", [
        Step("reserve", reserve_stock, release_stock),
        Step("charge", charge_card, refund_card),        # compensatable
        Step("ship", book_courier),                      # the pivot: no compensation
        Step("email", send_confirmation, forward=True),  # after the pivot: retried until done
    ])
    async with Orchestrator(client, [orders]) as orch:
        outcome = await orch.run("order", {"sku": "X1", "qty": 2}, saga_id="order-1042")

The record. Progress is durable in Shoal's store at `/shoal/sagas/<id>` (orchestration.py
has the layout, the claim and the fencing): the saga's input, its status (running,
compensating, done, compensated) and per step its state (pending, started, done, failed,
compensating, compensated), result and error. The orchestrator writes the record before an
action runs (started) and after (done, with the action's result); likewise around each
compensation. Whoever resumes the saga after a crash goes on from there: a step recorded as
started is run again (its action may or may not have taken effect: actions are idempotent),
a step recorded done is not.

Failure. An action is retried (`retries`, with backoff) and then counts as failed: the saga
turns to compensating and runs the compensations of the failed step (whose action may have
half-happened, or happened with its answer lost) and of every earlier step, from the last to
the first. Compensations must eventually succeed: one that fails all its retries stalls the
saga (it is released and a recovery pass retries it later).

The pivot. A step without a compensation cannot be undone: the first one is the saga's
pivot. If the pivot fails, the steps before it are compensated; once it is done the saga can
only go forward, so every later step must be `forward=True` (retried, then stalled and
retried again by recovery, never compensated).

Idempotency. Every action and compensation receives a StepContext with the saga id and step
name (`idempotency_key`), and may run more than once for one saga: retries, a resumption after
a crash, or an old paused orchestrator still finishing a call. A compensation may also run for
a step whose action never took effect, or before a delayed action arrives: the service should
record it (a tombstone under the same key) and refuse that action afterwards.
`fencing_token` grows with every new owner of the saga; `guards` are store comparisons that
hold only while this owner's claim stands, for actions whose effects live in Shoal."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..kv.requests import Compare
from .orchestration import (
    Abort,
    Change,
    ConflictingStart,
    Coordinator,
    Instance,
    InstanceBusy,
    LostClaim,
    MalformedState,
    OrchestrationError,
    Outcome,
    RecoveryPass,
    Retry,
    Stalled,
    UnknownDefinition,
    attempt,
    check_name,
    encode,
)

__all__ = [
    "Abort", "Change", "ConflictingStart", "InstanceBusy", "LostClaim", "MalformedState",
    "OrchestrationError", "Orchestrator", "Outcome", "RecoveryPass", "SagaDefinition", "Step",
    "StepContext", "Stalled", "UnknownDefinition",
]

# saga statuses
RUNNING, COMPENSATING, DONE, COMPENSATED = "running", "compensating", "done", "compensated"
# step states
PENDING, STARTED, FINISHED, FAILED = "pending", "started", "done", "failed"
UNDOING, UNDONE = "compensating", "compensated"
STEP_STATES = frozenset({PENDING, STARTED, FINISHED, FAILED, UNDOING, UNDONE})


@dataclass(frozen=True)
class StepContext:
    """What an action or compensation is told. `results`: the results of the steps done
    before this one; `result`: (for a compensation) this step's own result, None if its
    action never finished; `attempt`: 1 for the first try in this owner's round."""

    saga_id: str
    step: str
    input: Any
    results: Mapping[str, Any]
    fencing_token: int
    guards: tuple[Compare, ...]
    attempt: int
    result: Any = None

    @property
    def idempotency_key(self) -> str:
        """`<saga id>/<step>`: the same for every run of this step of this saga."""
        return f"{self.saga_id}/{self.step}"


Action = Callable[[StepContext], Awaitable[Any]]
Compensation = Callable[[StepContext], Awaitable[None]]


@dataclass(frozen=True)
class Step:
    """One step: `action` (its result, msgpack-encodable, is recorded and handed to later
    steps), `compensation` (None: this step cannot be undone), `retries` more attempts of
    either after a failure, from `backoff` seconds doubling to `max_backoff`, `timeout`
    seconds per attempt. `forward`: the step comes after the pivot and is retried until it
    succeeds, never compensated."""

    name: str
    action: Action
    compensation: Compensation | None = None
    retries: int = 3
    backoff: float = 0.05
    max_backoff: float = 2.0
    timeout: float | None = None
    forward: bool = False
    retry: Retry = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_name("step name", self.name)
        object.__setattr__(self, "retry",
                           Retry(self.retries, self.backoff, self.max_backoff, self.timeout))
        if self.forward and self.compensation is not None:
            raise ValueError(f"step {self.name!r} is forward (retried until done, never "
                             "undone): it takes no compensation")


@dataclass(frozen=True)
class SagaDefinition:
    """A named saga: the process that recovers an instance finds its steps by this name."""

    name: str
    steps: Sequence[Step]

    def __post_init__(self) -> None:
        check_name("saga name", self.name)
        object.__setattr__(self, "steps", tuple(self.steps))
        if not self.steps:
            raise ValueError(f"saga {self.name!r} has no steps")
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"saga {self.name!r} has two steps with one name: {names}")
        pivot: Step | None = None
        for s in self.steps:
            if pivot is not None and not s.forward:
                raise ValueError(
                    f"saga {self.name!r}: step {s.name!r} comes after {pivot.name!r}, which "
                    "cannot be compensated, so it can only go forward: make it forward=True "
                    "(and without a compensation)")
            if s.compensation is None and pivot is None:
                pivot = s

    @property
    def pivot(self) -> Step | None:
        """The first step without a compensation: the point of no return."""
        return next((s for s in self.steps if s.compensation is None), None)


class Orchestrator(Coordinator[SagaDefinition]):
    """Runs and recovers sagas whose progress is durable in the store under `root`
    (default `/shoal/sagas`). See orchestration.Coordinator for the other arguments and
    for recover(), run_recovery(), status() and forget()."""

    kind = "saga"
    default_root = b"/shoal/sagas"
    statuses: ClassVar[frozenset[str]] = frozenset({RUNNING, COMPENSATING, DONE, COMPENSATED})
    terminal: ClassVar[frozenset[str]] = frozenset({DONE, COMPENSATED})
    initial_status = RUNNING

    async def run(self, definition: str, input: Any = None, *,
                  saga_id: str | None = None) -> Outcome:
        """Run saga `definition` on `input` (msgpack-encodable) to the end: status "done"
        (results: every step's) or "compensated" (error: the step that failed and why).
        `saga_id` (default: a fresh uuid) names the instance: running an id again returns
        the recorded outcome instead of running twice. Raises Stalled if a compensation or
        a forward step ran out of retries (recovery carries on), LostClaim if another
        process took the saga over."""
        d = self.definition(definition)
        steps = [{"name": s.name, "state": PENDING, "result": None, "error": None}
                 for s in d.steps]
        return await self._start(definition, saga_id, input,
                                 self._new_record(definition, input, steps=steps))

    # ------------------------------------------------------------------ the record
    def _validate(self, key: bytes, record: dict[str, Any]) -> None:
        steps = record.get("steps")
        if not isinstance(steps, list) or not steps:
            raise MalformedState(key, "no step list")
        for i, s in enumerate(steps):
            if not isinstance(s, dict) or not isinstance(s.get("name"), str) \
                    or s.get("state") not in STEP_STATES:
                raise MalformedState(key, f"step {i} is not a map with a name and one of the "
                                          f"states {sorted(STEP_STATES)}: {s!r}")

    def _outcome(self, id: str, record: dict[str, Any]) -> Outcome:
        return Outcome(id, self.kind, record["def"], record["status"],
                       {s["name"]: s["result"] for s in record["steps"] if s["state"] in
                        (FINISHED, UNDOING, UNDONE) and s["result"] is not None},
                       record["error"])

    def _matching(self, id: str, record: dict[str, Any]) -> SagaDefinition:
        d = self.definition(record["def"], id)
        recorded = [s["name"] for s in record["steps"]]
        if recorded != [s.name for s in d.steps]:
            raise MalformedState(self.ns.record(id),
                                 f"recorded with steps {recorded}, but definition {d.name!r} "
                                 f"here has {[s.name for s in d.steps]}")
        return d

    # ------------------------------------------------------------------ driving
    async def _drive(self, inst: Instance) -> Outcome:
        d = self._matching(inst.id, inst.record)
        while True:
            rec = inst.record
            states = [s["state"] for s in rec["steps"]]
            if rec["status"] == RUNNING:
                i = next((n for n, st in enumerate(states) if st != FINISHED), None)
                if i is None:
                    await self._save(inst, {**rec, "status": DONE, "error": None}, final=True)
                    return self._outcome(inst.id, inst.record)
                await self._forward(inst, d.steps[i], i)
            elif rec["status"] == COMPENSATING:
                j = next((n for n in range(len(states) - 1, -1, -1)
                          if states[n] in (FINISHED, FAILED, UNDOING, STARTED)
                          and d.steps[n].compensation is not None), None)
                if j is None:
                    await self._save(inst, {**rec, "status": COMPENSATED}, final=True)
                    return self._outcome(inst.id, inst.record)
                await self._compensate(inst, d.steps[j], j)
            else:
                return self._outcome(inst.id, rec)

    def _context(self, inst: Instance, i: int, n: int) -> StepContext:
        steps = inst.record["steps"]
        return StepContext(
            inst.id, steps[i]["name"], inst.record["input"],
            {s["name"]: s["result"] for s in steps[:i] if s["state"] == FINISHED},
            inst.token, self.guards(inst), n, steps[i]["result"])

    def _with_step(self, rec: dict[str, Any], i: int, **fields: Any) -> dict[str, Any]:
        steps = list(rec["steps"])
        steps[i] = {**steps[i], **fields}
        return {**rec, "steps": steps}

    async def _forward(self, inst: Instance, step: Step, i: int) -> None:
        if inst.record["steps"][i]["state"] != STARTED:
            await self._save(inst, self._with_step(inst.record, i, state=STARTED),
                             step=step.name, state=STARTED)
        what = f"saga {inst.id!r} step {step.name!r}"
        try:
            result = await attempt(lambda n: step.action(self._context(inst, i, n)),
                                   step.retry, what)
            encode(result, f"the result of {what}")
        except OrchestrationError:
            raise
        except Exception as exc:
            error = f"step {step.name!r} failed: {exc!r}"
            if step.forward:  # past the pivot: there is no going back, only trying again
                await self._stall(inst, error)
            await self._save(inst, {**self._with_step(inst.record, i, state=FAILED,
                                                      error=repr(exc)),
                                    "status": COMPENSATING, "error": error},
                             step=step.name, state=FAILED)
            return
        await self._save(inst, self._with_step(inst.record, i, state=FINISHED, result=result,
                                               error=None), step=step.name, state=FINISHED)

    async def _compensate(self, inst: Instance, step: Step, i: int) -> None:
        assert step.compensation is not None
        compensation = step.compensation
        if inst.record["steps"][i]["state"] != UNDOING:
            await self._save(inst, self._with_step(inst.record, i, state=UNDOING),
                             step=step.name, state=UNDOING)
        what = f"saga {inst.id!r} compensation of {step.name!r}"
        try:
            await attempt(lambda n: compensation(self._context(inst, i, n)), step.retry, what)
        except OrchestrationError:
            raise
        except Exception as exc:
            await self._stall(inst, f"compensation of {step.name!r} failed: {exc!r}")
        await self._save(inst, self._with_step(inst.record, i, state=UNDONE),
                         step=step.name, state=UNDONE)
