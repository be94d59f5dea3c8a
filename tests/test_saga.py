"""Sagas durable in the store (shoal.txn.saga): forward, compensation, the pivot, stalls, and
resumption by another process after the orchestrator is killed at each crash point."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from cluster import LocalCluster, eventually, run
from saga_worker import FX, INPUT, TTL, count, gone, rig, saga_definitions
from shoal.client import Client, txn
from shoal.txn.orchestration import (
    Abort,
    Change,
    ConflictingStart,
    InstanceBusy,
    LostClaim,
    MalformedState,
    RecoveryPass,
    Stalled,
    UnknownDefinition,
)
from shoal.txn.saga import Orchestrator, SagaDefinition, Step, StepContext

# Where each worker is killed, and what each step's effects must be once another process has
# recovered the saga: (calls of its action, times its effect was applied, calls of its
# compensation, times the compensation was applied).
CRASHES = {
    # before step 1: the record exists, nothing started
    "change:-:created": ("order", "done",
                         {"reserve": (1, 1, 0, 0), "charge": (1, 1, 0, 0), "ship": (1, 1, 0, 0)}),
    # between steps: reserve recorded done, charge not started
    "change:reserve:done": ("order", "done",
                            {"reserve": (1, 1, 0, 0), "charge": (1, 1, 0, 0),
                             "ship": (1, 1, 0, 0)}),
    # inside a step, after its effect, before "done" was recorded: run again, applied once
    "action:charge:after": ("order", "done",
                            {"reserve": (1, 1, 0, 0), "charge": (2, 1, 0, 0),
                             "ship": (1, 1, 0, 0)}),
    # during compensation (ship failed; its compensation is done, charge's is under way)
    "comp:charge:before": ("doomed", "compensated",
                           {"reserve": (1, 1, 1, 1), "charge": (1, 1, 2, 1),
                            "ship": (1, 0, 1, 1)}),
}


def test_sagas_whose_orchestrators_are_killed_are_finished_by_another_process(tmp_path):
    """One worker process per crash point, each killed (kill -9) there; one recovery pass in
    this process resumes every saga from its record once the workers' leases have expired."""
    ids = {at: f"s{n}" for n, at in enumerate(CRASHES)}
    runs = [(definition, ids[at], at) for at, (definition, _, _) in CRASHES.items()]

    async def main() -> None:
        async with rig(tmp_path, "saga", runs) as (client, workers):
            for (_, _, at), worker in zip(runs, workers, strict=True):
                await worker.expect(f"at {at}")
                await worker.kill()
            async with Orchestrator(client, saga_definitions(client), ttl=TTL) as orch:
                for at, id in ids.items():
                    before = await orch.status(id)
                    assert before is not None and before.status in ("running", "compensating"), at
                    await gone(client, orch.ns.claim(id))  # the dead worker's lease expired
                report = await orch.recover()
                assert not report.failed, report.failed
                outcomes = {o.id: o for o in report.finished}
                assert sorted(outcomes) == sorted(ids.values())
                for at, (_, status, effects) in CRASHES.items():
                    out = outcomes[ids[at]]
                    assert out.status == status, at
                    if status == "done":
                        assert out.results == {s: f"{s}:{INPUT['order']}" for s in effects}, at
                    else:
                        assert "'ship' failed" in (out.error or "") and \
                            "out of stock" in (out.error or ""), at
                    for step, want in effects.items():
                        idem = f"{out.id}/{step}"
                        got = (*await count(client, idem, "do"),
                               *await count(client, idem, "undo"))
                        assert got == want, f"killed at {at}: {step}'s (do calls, applied, " \
                                            "undo calls, applied)"
                    assert await orch.status(out.id) == out  # the record stays, finished
                    assert not (await client.get(orch.ns.claim(out.id))).kvs
                # Nothing left in flight or claimed.
                left = await client.get(orch.ns.inflight_prefix, prefix=True, count_only=True)
                assert left.count == 0
                assert await orch.recover() == RecoveryPass()
    run(main())


# ---------------------------------------------------------------------------- in one process
class Log:
    """In-memory steps that record what ran, and can fail on chosen calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []
        self.fail: dict[str, int] = {}  # step -> how many more calls of it fail (-1: all)

    def step(self, name: str, undo: bool = True, **kw: Any) -> Step:
        async def action(ctx: StepContext) -> Any:
            self.calls.append(("do", name, ctx.attempt))
            left = self.fail.get(name, 0)
            if left:
                self.fail[name] = left - 1 if left > 0 else -1
                raise RuntimeError(f"{name} is down")
            return {"step": name, "seen": sorted(ctx.results)}

        async def compensation(ctx: StepContext) -> None:
            self.calls.append(("undo", name, ctx.attempt))
            assert ctx.idempotency_key == f"{ctx.saga_id}/{name}"

        return Step(name, action, compensation if undo else None, backoff=0.01, **kw)


def test_a_saga_runs_forward_recording_every_step_and_runs_only_once(tmp_path):
    async def main() -> None:
        async with LocalCluster(tmp_path, n=1) as c, Client(c.endpoints) as client:
            log, changes = Log(), []

            def seen(ch: Change) -> None:
                changes.append((ch.status, ch.step, ch.state))

            d = SagaDefinition("trip", [log.step("flight"), log.step("hotel"), log.step("car")])
            async with Orchestrator(client, [d], ttl=TTL, on_change=seen) as orch:
                out = await orch.run("trip", {"who": "ada"}, saga_id="t1")
                assert out.ok and out.status == "done" and out.error is None
                assert out.results["car"] == {"step": "car", "seen": ["flight", "hotel"]}
                assert log.calls == [("do", "flight", 1), ("do", "hotel", 1), ("do", "car", 1)]
                assert changes == [("running", None, "created")] + [
                    ("running", s, st) for s in ("flight", "hotel", "car")
                    for st in ("started", "done")] + [("done", None, None)]
                # An id names one instance: running it again answers from the record.
                assert await orch.run("trip", {"who": "ada"}, saga_id="t1") == out
                assert len(log.calls) == 3
                with pytest.raises(ConflictingStart, match="another input"):
                    await orch.run("trip", {"who": "bob"}, saga_id="t1")
                assert await orch.status("t1") == out
                assert await orch.forget("t1") and await orch.status("t1") is None
                with pytest.raises(UnknownDefinition, match="'cruise'.*registered: trip"):
                    await orch.run("cruise", saga_id="t2")
    run(main())


def test_a_failing_step_is_retried_then_it_and_the_steps_before_are_compensated_in_reverse(
        tmp_path):
    async def main() -> None:
        async with LocalCluster(tmp_path, n=1) as c, Client(c.endpoints) as client:
            log = Log()
            log.fail = {"hotel": 1, "car": -1}  # hotel recovers on its retry, car never does
            d = SagaDefinition("trip", [log.step("flight"), log.step("hotel"),
                                        log.step("car", retries=2), log.step("train")])
            async with Orchestrator(client, [d], ttl=TTL) as orch:
                out = await orch.run("trip", saga_id="t1")
            assert out.status == "compensated" and not out.ok
            assert out.error is not None and "'car' failed" in out.error
            assert "car is down" in out.error
            assert log.calls == [
                ("do", "flight", 1), ("do", "hotel", 1), ("do", "hotel", 2),
                ("do", "car", 1), ("do", "car", 2), ("do", "car", 3),  # 1 + retries
                # the failed step first (it may have half-happened), then back to the start;
                # train never started, so it is not compensated
                ("undo", "car", 1), ("undo", "hotel", 1), ("undo", "flight", 1)]
    run(main())


def test_the_pivot_decides_and_forward_steps_stall_then_recover(tmp_path):
    async def main() -> None:
        async with LocalCluster(tmp_path, n=1) as c, Client(c.endpoints) as client:
            log = Log()
            d = SagaDefinition("pay", [
                log.step("hold"), log.step("capture", undo=False),  # the pivot
                log.step("receipt", undo=False, forward=True, retries=1)])
            assert d.pivot is not None and d.pivot.name == "capture"
            async with Orchestrator(client, [d], ttl=TTL, stall_backoff=0.05,
                                    max_stall_backoff=0.1) as orch:
                # The pivot fails: what came before it is compensated, the pivot is not.
                log.fail = {"capture": -1}
                out = await orch.run("pay", saga_id="p1")
                assert out.status == "compensated"
                assert [c for c in log.calls if c[0] == "undo"] == [("undo", "hold", 1)]
                # Past the pivot there is no way back: a forward step is retried, then stalls
                # (released for recovery, which tries again later), never compensated.
                log.calls.clear()
                log.fail = {"receipt": 4}
                with pytest.raises(Stalled, match="'receipt' failed") as stalled:
                    await orch.run("pay", saga_id="p2")
                assert stalled.value.retry_after > 0
                assert not (await client.get(orch.ns.claim("p2"))).kvs  # released
                status = await orch.status("p2")
                assert status is not None and status.status == "running"

                async def recovered() -> bool:
                    report = await orch.recover()
                    return any(o.id == "p2" for o in report.finished)

                await eventually(recovered, what="p2 to be recovered")
                assert (await orch.status("p2")).status == "done"  # type: ignore[union-attr]
                assert ("undo", "hold", 1) not in log.calls
                assert [c for c in log.calls if c[1] == "receipt"] == [
                    ("do", "receipt", n) for n in (1, 2, 1, 2, 1)]
    run(main())


def test_definitions_that_could_not_be_run_safely_are_refused():
    async def act(ctx: StepContext) -> None:
        return None

    async def undo(ctx: StepContext) -> None:
        return None

    with pytest.raises(ValueError, match="'b' comes after 'pivot'.*forward=True"):
        SagaDefinition("s", [Step("pivot", act), Step("b", act, undo)])
    with pytest.raises(ValueError, match="takes no compensation"):
        Step("a", act, undo, forward=True)
    with pytest.raises(ValueError, match="two steps with one name"):
        SagaDefinition("s", [Step("a", act, undo), Step("a", act, undo)])
    with pytest.raises(ValueError, match="may not contain '/'"):
        Step("a/b", act)
    with pytest.raises(ValueError, match="no steps"):
        SagaDefinition("s", [])


def test_a_paused_orchestrator_cannot_overwrite_the_new_owner_s_progress(tmp_path):
    async def main() -> None:
        async with LocalCluster(tmp_path, n=1) as c, Client(c.endpoints) as ca, \
                Client(c.endpoints) as cb:
            entered, release = asyncio.Event(), asyncio.Event()
            tokens: list[int] = []

            def definition(slow: bool) -> SagaDefinition:
                async def act(ctx: StepContext) -> int:
                    tokens.append(ctx.fencing_token)
                    if slow:
                        entered.set()
                        await release.wait()
                    # An effect in the store, guarded by the claim: a stale owner's is refused.
                    r = await ctx_client(slow).txn(list(ctx.guards), [
                        txn.put(FX + f"{ctx.idempotency_key}/{ctx.fencing_token}".encode(), b"1")])
                    if not r.succeeded:
                        raise Abort("stale fencing token")
                    return ctx.fencing_token

                async def undo(ctx: StepContext) -> None:
                    return None

                return SagaDefinition("slow", [Step("only", act, undo, retries=0)])

            def ctx_client(slow: bool) -> Client:
                return ca if slow else cb

            async with Orchestrator(ca, [definition(True)], ttl=TTL) as a, \
                    Orchestrator(cb, [definition(False)], ttl=TTL) as b:
                running = asyncio.create_task(a.run("slow", saga_id="f1"))
                await entered.wait()
                # a is paused mid-step past its lease: the store ends the lease and its claim.
                await ca.lease_revoke(a.lease_id)
                report = await b.recover()
                assert [o.status for o in report.finished] == ["done"]
                assert tokens[1] > tokens[0]  # the new owner's token is larger
                done = await b.status("f1")
                release.set()  # a wakes up and carries on as if it still owned the saga
                with pytest.raises(LostClaim, match="claim"):
                    await running
                assert await b.status("f1") == done  # untouched by a
                effects = await cb.get(FX + b"f1/only/", prefix=True)
                assert [kv.key for kv in effects.kvs] == [
                    FX + f"f1/only/{tokens[1]}".encode()]  # a's effect was refused
    run(main())


def test_recovery_names_what_it_cannot_resume_and_leaves_it(tmp_path):
    async def main() -> None:
        async with LocalCluster(tmp_path, n=1) as c, Client(c.endpoints) as client:
            log = Log()
            d = SagaDefinition("trip", [log.step("a"), log.step("b")])
            entered = asyncio.Event()

            async def hang(ctx: StepContext) -> None:
                entered.set()
                await asyncio.Event().wait()

            hanging = SagaDefinition("trip", [Step("a", hang, hang), log.step("b")])
            async with Orchestrator(client, [hanging], ttl=TTL) as a:
                task = asyncio.create_task(a.run("trip", saga_id="known"))
                await entered.wait()
                async with Orchestrator(client, [d], ttl=TTL) as other:
                    # A live owner's claim is respected, by recovery and by a second run.
                    assert await other.recover() == RecoveryPass(busy=1)
                    with pytest.raises(InstanceBusy, match="being driven by"):
                        await other.run("trip", saga_id="known")
                async with Orchestrator(client, [], ttl=TTL) as stranger:
                    await client.lease_revoke(a.lease_id)  # a is gone: the saga is free
                    report = await stranger.recover()
                    assert isinstance(report.failed["known"], UnknownDefinition)
                    assert "'trip'" in str(report.failed["known"])
                    assert not (await client.get(stranger.ns.claim("known"))).kvs  # not taken
                changed = SagaDefinition("trip", [log.step("a"), log.step("c")])
                async with Orchestrator(client, [changed], ttl=TTL) as newer:
                    report = await newer.recover()
                    assert isinstance(report.failed["known"], MalformedState)
                    assert "recorded with steps ['a', 'b']" in str(report.failed["known"])
                    assert not (await client.get(newer.ns.claim("known"))).kvs
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, LostClaim):
                    await task
            # Garbage where a record should be: named, not resumed, not fatal to the pass.
            await client.put(b"/shoal/sagas/bad", b"\xc1")
            await client.put(b"/shoal/sagas.inflight/bad", b"")
            async with Orchestrator(client, [d], ttl=TTL) as b:
                report = await b.recover()
                assert isinstance(report.failed["bad"], MalformedState)
                assert "b'/shoal/sagas/bad'" in str(report.failed["bad"])
                assert [o.id for o in report.finished] == ["known"]
                assert report.finished[0].status == "done"
                with pytest.raises(MalformedState, match="not msgpack"):
                    await b.status("bad")
    run(main())


def test_run_recovery_resumes_an_orphan_once_its_owner_s_lease_ends(tmp_path):
    async def main() -> None:
        async with LocalCluster(tmp_path, n=1) as c, Client(c.endpoints) as client:
            log, entered = Log(), asyncio.Event()

            async def hang(ctx: StepContext) -> None:
                entered.set()
                await asyncio.Event().wait()

            async with Orchestrator(client, [SagaDefinition("trip", [
                    Step("a", hang, hang), log.step("b")])], ttl=TTL) as a, \
                    Orchestrator(client, [SagaDefinition("trip", [
                        log.step("a"), log.step("b")])], ttl=TTL) as b:
                stuck = asyncio.create_task(a.run("trip", saga_id="o1"))
                loop = asyncio.create_task(b.run_recovery(interval=0.05))
                try:
                    await entered.wait()
                    assert (await b.status("o1")).status == "running"  # type: ignore[union-attr]
                    await client.lease_revoke(a.lease_id)  # a's process is gone

                    async def finished() -> bool:
                        out = await b.status("o1")
                        return out is not None and out.status == "done"

                    await eventually(finished, what="the recovery loop to finish o1")
                    assert log.calls == [("do", "a", 1), ("do", "b", 1)]
                finally:
                    for task in (stuck, loop):
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError, LostClaim):
                            await task
    run(main())
