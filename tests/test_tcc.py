"""TCC durable in the store (shoal.txn.tcc): the decision, presumed abort, the branch fences
(empty rollback, hanging try), stalls, and resumption by another process after the
coordinator is killed or paused at each crash point."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

import pytest

from cluster import LocalCluster, eventually, run
from saga_worker import (
    PARTICIPANTS,
    TTL,
    Hooks,
    Ledger,
    count,
    gone,
    participant,
    rig,
    tcc_definitions,
)
from shoal.client import Client
from shoal.txn.orchestration import Abort, LostClaim, RecoveryPass, Stalled
from shoal.txn.tcc import (
    BranchContext,
    Participant,
    TccCoordinator,
    TccDefinition,
    TryRefused,
)


async def effects(client: Client, id: str, name: str) -> dict[str, tuple[int, int]]:
    """(calls, times applied) of each of a participant's operations in transaction `id`."""
    return {op: await count(client, f"{id}/{name}", op) for op in ("try", "confirm", "cancel")}


def test_transactions_whose_coordinators_are_killed_are_finished_by_another_process(tmp_path):
    """Killed after every try took effect but before the decision: presumed abort, every
    branch is cancelled. Killed just after the decision (confirm) was written: every branch
    is confirmed, once. One recovery pass here does both."""
    runs = [("buy", "t-tried", "try:mail:after"), ("buy", "t-decided", "change:-:confirming")]

    async def main() -> None:
        async with rig(tmp_path, "tcc", runs) as (client, workers):
            tried, decided = workers
            await decided.expect("at change:-:confirming")
            await decided.kill()
            await tried.expect("at try:mail:after")

            async def all_tried() -> bool:
                return all([(await effects(client, "t-tried", p))["try"] == (1, 1)
                            for p in PARTICIPANTS])

            await eventually(all_tried, what="every try of t-tried to take effect")
            await tried.kill()
            async with TccCoordinator(client, tcc_definitions(client), ttl=TTL) as tcc:
                assert (await tcc.status("t-tried")).status == "trying"  # type: ignore[union-attr]
                assert (await tcc.status("t-decided")).status == "confirming"  # type: ignore[union-attr]
                for id in ("t-tried", "t-decided"):
                    await gone(client, tcc.ns.claim(id))
                report = await tcc.recover()
                assert not report.failed, report.failed
                out = {o.id: o for o in report.finished}
                assert out["t-tried"].status == "cancelled"
                assert "presumed abort" in (out["t-tried"].error or "")
                assert out["t-decided"].status == "confirmed"
                assert out["t-decided"].results == {p: f"{p}-held" for p in PARTICIPANTS}
                for p in PARTICIPANTS:
                    assert await effects(client, "t-tried", p) == {
                        "try": (1, 1), "confirm": (0, 0), "cancel": (1, 1)}, p
                    fence = await tcc.fence.state("t-tried", p)
                    assert fence is not None and fence["state"] == "cancelled"
                    assert not fence["empty"]  # it had been tried: the cancel undid it
                    assert await effects(client, "t-decided", p) == {
                        "try": (1, 1), "confirm": (1, 1), "cancel": (0, 0)}, p
                    fence = await tcc.fence.state("t-decided", p)
                    assert fence is not None and fence["state"] == "confirmed"
                assert await tcc.recover() == RecoveryPass()
                left = await client.get(tcc.ns.inflight_prefix, prefix=True, count_only=True)
                assert left.count == 0
    run(main())


def test_a_try_that_arrives_after_the_cancel_is_refused(tmp_path):
    """The hanging try: the worker's try of "stock" is held up on its way to the service (past
    the coordinator, before the service's fence) and the worker is paused (SIGSTOP) past its
    lease. Recovery here cancels: "pay" had tried, so its cancel undoes it; "stock" had not,
    so its cancel is an empty rollback, recorded. Then the worker resumes and its try arrives:
    refused, without reaching the service, and the worker finds its claim lost."""
    async def main() -> None:
        async with rig(tmp_path, "tcc", [("buy-remote", "t-hang", "delay:stock")]) as \
                (client, (worker,)):
            await worker.expect("at delay:stock")

            async def pay_tried() -> bool:
                return (await effects(client, "t-hang", "pay"))["try"] == (1, 1)

            await eventually(pay_tried, what="pay's try")
            worker.pause()
            async with TccCoordinator(client, tcc_definitions(client), ttl=TTL) as tcc:
                await gone(client, tcc.ns.claim("t-hang"))
                report = await tcc.recover()
                assert [o.status for o in report.finished] == ["cancelled"], report
                stock = await tcc.fence.state("t-hang", "stock")
                assert stock is not None and stock["state"] == "cancelled" and stock["empty"]
                assert await effects(client, "t-hang", "stock") == {
                    "try": (0, 0), "confirm": (0, 0), "cancel": (0, 0)}  # nothing to undo
                assert await effects(client, "t-hang", "pay") == {
                    "try": (1, 1), "confirm": (0, 0), "cancel": (1, 1)}
                done = await tcc.status("t-hang")

                worker.resume()
                await worker.say("go")  # the delayed try arrives
                refused = await worker.expect("refused")
                assert "'stock' refused" in refused and "empty rollback" in refused
                assert await worker.finish() == 3
                assert any(line.startswith("error LostClaim") for line in worker.lines), \
                    worker.lines
                assert await effects(client, "t-hang", "stock") == {
                    "try": (0, 0), "confirm": (0, 0), "cancel": (0, 0)}  # never reached it
                assert await tcc.status("t-hang") == done  # the old coordinator wrote nothing
    run(main())


# ---------------------------------------------------------------------------- in one process
class Service:
    """An in-memory participant that logs its calls and can fail chosen ones."""

    def __init__(self, name: str, log: list[tuple[str, str]]):
        self.name, self.log = name, log
        self.fail: dict[str, int] = {}  # op -> calls left that fail (-1: all)

    def _call(self, op: str) -> None:
        self.log.append((op, self.name))
        left = self.fail.get(op, 0)
        if left:
            self.fail[op] = left - 1 if left > 0 else -1
            raise (Abort if op == "try" else RuntimeError)(f"{self.name} refuses to {op}")

    def participant(self, **kw: Any) -> Participant:
        async def try_(ctx: BranchContext) -> str:
            self._call("try")
            return f"{self.name}#{ctx.txn_id}"

        async def confirm(ctx: BranchContext) -> None:
            assert ctx.try_result == f"{self.name}#{ctx.txn_id}"
            self._call("confirm")

        async def cancel(ctx: BranchContext) -> None:
            self._call("cancel")

        return Participant(self.name, try_, confirm, cancel, backoff=0.01, **kw)


def test_all_tries_succeed_then_all_confirm_or_one_fails_and_all_cancel(tmp_path):
    async def main() -> None:
        async with LocalCluster(tmp_path, n=1) as c, Client(c.endpoints) as client:
            log: list[tuple[str, str]] = []
            a, b, cc = Service("a", log), Service("b", log), Service("c", log)
            d = TccDefinition("t", [a.participant(), b.participant(), cc.participant()],
                              max_parallel=1)
            async with TccCoordinator(client, [d], ttl=TTL) as tcc:
                out = await tcc.run("t", {"n": 1}, txn_id="x1")
                assert out.status == "confirmed" and out.ok
                assert out.results == {"a": "a#x1", "b": "b#x1", "c": "c#x1"}
                assert sorted(log) == sorted([(op, p) for op in ("try", "confirm")
                                              for p in "abc"])
                assert await tcc.run("t", {"n": 1}, txn_id="x1") == out  # not run twice
                assert len(log) == 6

                # b refuses its try: nothing is confirmed; a, which tried, is cancelled; c's
                # try never started (one at a time, and the decision was made): its cancel
                # is an empty rollback, so c's service hears nothing at all.
                log.clear()
                b.fail = {"try": 1}
                out = await tcc.run("t", {"n": 2}, txn_id="x2")
                assert out.status == "cancelled" and "b refuses to try" in (out.error or "")
                assert sorted(log) == [("cancel", "a"), ("cancel", "b"), ("try", "a"),
                                       ("try", "b")]
                assert (await tcc.fence.state("x2", "c") or {}).get("empty") is True
                assert (await tcc.fence.state("x2", "b") or {}).get("empty") is False
                # A try for c arriving now is refused by its fence.
                fenced_c = tcc.fence.wrap(cc.participant())
                with pytest.raises(TryRefused, match="'c' refused.*empty rollback"):
                    await fenced_c.try_(BranchContext("x2", "c", None, 1, (), 1))
                assert ("try", "c") not in log
    run(main())


def test_a_try_already_past_the_fence_is_refused_by_the_store_once_cancelled(tmp_path, caplog):
    """The other half of the hanging try: the old coordinator's try had passed the fence when
    the new owner cancelled; its effect is a store transaction carrying ctx.guards, so the
    store refuses it, and the old coordinator stops with LostClaim."""
    async def main() -> None:
        async with LocalCluster(tmp_path, n=1) as c, Client(c.endpoints) as ca, \
                Client(c.endpoints) as cb:
            entered, release = asyncio.Event(), asyncio.Event()
            caplog.set_level(logging.INFO, "shoal.txn")

            def definition(client: Client, slow: bool) -> TccDefinition:
                ledger = Ledger(client)
                held = participant(ledger, Hooks(), "held")
                if slow:
                    async def try_(ctx: BranchContext) -> Any:
                        entered.set()
                        await release.wait()
                        # Only the guards stand between this late effect and the store.
                        await ledger.called(ctx.idempotency_key, "try")
                        await ledger.apply(ctx.idempotency_key, "try", ctx.guards)
                        return "held"
                    held = replace(held, try_=try_, retries=1)
                return TccDefinition("t", [participant(ledger, Hooks(), "quick"), held])

            async with TccCoordinator(ca, [definition(ca, True)], ttl=TTL) as a, \
                    TccCoordinator(cb, [definition(cb, False)], ttl=TTL) as b:
                running = asyncio.create_task(a.run("t", txn_id="h1"))
                await entered.wait()
                await ca.lease_revoke(a.lease_id)  # a is paused past its lease
                report = await b.recover()
                assert [o.status for o in report.finished] == ["cancelled"]
                fence = await b.fence.state("h1", "held")
                assert fence is not None and fence["state"] == "cancelled"
                assert not fence["empty"]  # it was past the fence: cancel was called
                release.set()
                with pytest.raises(LostClaim):
                    await running
                # Its effect was refused by the store; its retry then met the closed fence.
                assert "try of 'held': attempt 1 failed (StaleToken(" in caplog.text
                assert await effects(cb, "h1", "held") == {
                    "try": (1, 0), "confirm": (0, 0), "cancel": (1, 1)}
                assert await effects(cb, "h1", "quick") == {
                    "try": (1, 1), "confirm": (0, 0), "cancel": (1, 1)}
    run(main())


def test_confirms_that_keep_failing_stall_and_recovery_finishes_them(tmp_path):
    async def main() -> None:
        async with LocalCluster(tmp_path, n=1) as c, Client(c.endpoints) as client:
            log: list[tuple[str, str]] = []
            a, b = Service("a", log), Service("b", log)
            b.fail = {"confirm": 3}  # two calls per round: stalls once, then gets through
            d = TccDefinition("t", [a.participant(retries=1), b.participant(retries=1)])
            async with TccCoordinator(client, [d], ttl=TTL, stall_backoff=0.05,
                                      max_stall_backoff=0.1) as tcc:
                with pytest.raises(Stalled, match="confirm of 'b' failed"):
                    await tcc.run("t", txn_id="s1")
                status = await tcc.status("s1")
                assert status is not None and status.status == "confirming"

                async def recovered() -> bool:
                    return any(o.id == "s1" for o in (await tcc.recover()).finished)

                await eventually(recovered, what="s1 to be recovered")
                assert (await tcc.status("s1")).status == "confirmed"  # type: ignore[union-attr]
                # a's confirm ran once: its fence recorded it, so later rounds skip it.
                assert log.count(("confirm", "a")) == 1
                assert log.count(("confirm", "b")) == 4
                assert ("cancel", "a") not in log and ("cancel", "b") not in log
    run(main())


def test_tcc_definitions_are_checked():
    async def op(ctx: BranchContext) -> None:
        return None

    p = Participant("p", op, op, op)
    with pytest.raises(ValueError, match="two participants with one name"):
        TccDefinition("t", [p, p])
    with pytest.raises(ValueError, match="no participants"):
        TccDefinition("t", [])
    with pytest.raises(ValueError, match="max_parallel"):
        TccDefinition("t", [p], max_parallel=0)
