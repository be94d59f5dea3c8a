"""A saga / TCC orchestrator in its own process, for the crash tests (tests/test_saga.py,
tests/test_tcc.py), and the definitions both it and the test's recovering orchestrator use.

    python tests/saga_worker.py ENDPOINTS saga|tcc DEFINITION ID [--at POINT]

It waits for a first line on stdin before connecting, so a test can start it (its imports
take a while on a busy machine) while the cluster it will use is still starting.

POINT names where the worker announces itself on stdout ("at POINT") and then stops making
progress, for the test to kill it there (kill -9) or pause it (SIGSTOP):

    action:<step>:before|after   inside a saga step's action, before / after its effect
    comp:<step>:before           inside a compensation, before its effect
    try:<participant>:after      inside a TCC try, after its effect
    change:<step or ->:<state>   just after that durable transition was written (the whole
                                 process blocks: no keep-alive, no write)
    delay:<participant>          a hanging try: the try waits in the "network", before the
                                 participant's own fence, until a line arrives on stdin

The services are stand-ins whose state is in the store (Ledger): every operation is one
record per idempotency key, written at most once and refused after the operation that cancels
it, plus a log of every call, so a test can tell "called twice, applied once"."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

from shoal.client import Client, EventType, txn
from shoal.kv.requests import Compare, RangeResponse
from shoal.txn.orchestration import Abort, Change, OrchestrationError
from shoal.txn.saga import Orchestrator, SagaDefinition, Step, StepContext
from shoal.txn.tcc import (
    BranchContext,
    BranchFence,
    Participant,
    TccCoordinator,
    TccDefinition,
    TryRefused,
)

FX = b"/test/fx/"
TTL = 2  # the worker's lease: how long the test waits for a killed worker's claims to go
INPUT = {"order": 1042, "items": ["X1", "X2"]}


class StaleToken(Exception):
    """The store refused an effect: the caller's claim (or branch) is no longer current."""


class Ledger:
    """A service whose state is in the store: `<FX><idempotency key>/<op>`, written once."""

    def __init__(self, client: Client):
        self.client = client

    @staticmethod
    def key(idem: str, op: str) -> bytes:
        return FX + f"{idem}/{op}".encode()

    async def called(self, idem: str, op: str) -> None:
        await self.client.put(FX + f"{idem}/calls/{op}/{uuid.uuid4().hex}".encode(), b"")

    async def apply(self, idem: str, op: str, guards: Sequence[Compare],
                    refused_after: str | None = None) -> bool:
        """Apply `op` once (True the first time, False when it already was); refused with
        Abort after `refused_after` was applied, with StaleToken if `guards` fail."""
        key = self.key(idem, op)
        blockers = [txn.absent(self.key(idem, refused_after))] if refused_after else []
        reads = [txn.get(key)] + ([txn.get(self.key(idem, refused_after))] if refused_after
                                  else [])
        resp = await self.client.txn([txn.absent(key), *blockers, *guards],
                                     [txn.put(key, b"1")], reads)
        if resp.succeeded:
            return True
        got = [r.kvs for r in resp.responses if isinstance(r, RangeResponse)]
        if got[0]:
            return False
        if refused_after and got[1]:
            raise Abort(f"{idem}: {op} refused: {refused_after} came first")
        raise StaleToken(f"{idem}: {op} refused by the store: the caller's guards failed")


async def count(client: Client, idem: str, op: str) -> tuple[int, int]:
    """(calls of `op` for `idem`, times its effect was written: 0 or the record's version)."""
    calls = await client.get(FX + f"{idem}/calls/{op}/".encode(), prefix=True, count_only=True)
    rec = await client.get(Ledger.key(idem, op))
    return calls.count, rec.kvs[0].version if rec.kvs else 0


class Hooks:
    """Where a worker stops (see the module docstring); the test's own process has none."""

    def __init__(self, at: str | None = None):
        self.at = at

    def _here(self, name: str) -> bool:
        if name != self.at:
            return False
        print(f"at {name}", flush=True)
        return True

    async def point(self, name: str) -> None:
        if self._here(name):
            await asyncio.Event().wait()  # for ever: the test kills us

    def change(self, ch: Change) -> None:
        if self._here(f"change:{ch.step or '-'}:{ch.state}"):
            threading.Event().wait()  # the whole process stops just after this write

    async def delay(self, name: str) -> None:
        if self._here(name):
            await asyncio.to_thread(sys.stdin.readline)


def saga_step(ledger: Ledger, hooks: Hooks, name: str, fails: bool = False) -> Step:
    async def action(ctx: StepContext) -> str:
        await ledger.called(ctx.idempotency_key, "do")
        await hooks.point(f"action:{name}:before")
        if fails:
            raise Abort(f"{name}: out of stock")
        await ledger.apply(ctx.idempotency_key, "do", ctx.guards, refused_after="undo")
        await hooks.point(f"action:{name}:after")
        return f"{name}:{ctx.input['order']}"

    async def compensation(ctx: StepContext) -> None:
        await ledger.called(ctx.idempotency_key, "undo")
        await hooks.point(f"comp:{name}:before")
        await ledger.apply(ctx.idempotency_key, "undo", ctx.guards)

    return Step(name, action, compensation, retries=2, backoff=0.01)


SAGA_STEPS = ("reserve", "charge", "ship")


def saga_definitions(client: Client, hooks: Hooks | None = None) -> list[SagaDefinition]:
    ledger, hooks = Ledger(client), hooks or Hooks()
    return [
        SagaDefinition("order", [saga_step(ledger, hooks, n) for n in SAGA_STEPS]),
        SagaDefinition("doomed", [saga_step(ledger, hooks, n, fails=n == "ship")
                                  for n in SAGA_STEPS]),
    ]


def participant(ledger: Ledger, hooks: Hooks, name: str) -> Participant:
    async def try_(ctx: BranchContext) -> str:
        await ledger.called(ctx.idempotency_key, "try")
        await ledger.apply(ctx.idempotency_key, "try", ctx.guards, refused_after="cancel")
        await hooks.point(f"try:{name}:after")
        return f"{name}-held"

    async def confirm(ctx: BranchContext) -> None:
        await ledger.called(ctx.idempotency_key, "confirm")
        await ledger.apply(ctx.idempotency_key, "confirm", ctx.guards)

    async def cancel(ctx: BranchContext) -> None:
        await ledger.called(ctx.idempotency_key, "cancel")
        await ledger.apply(ctx.idempotency_key, "cancel", ctx.guards)

    return Participant(name, try_, confirm, cancel, retries=2, backoff=0.01)


def delayed(p: Participant, hooks: Hooks) -> Participant:
    """`p` (a participant behind its own fence) with a try that can be held up on its way."""
    async def try_(ctx: BranchContext) -> object:
        await hooks.delay(f"delay:{p.name}")
        try:
            return await p.try_(ctx)
        except TryRefused as exc:
            print(f"refused {exc}", flush=True)
            raise

    return replace(p, try_=try_)


PARTICIPANTS = ("pay", "stock", "mail")


def tcc_definitions(client: Client, hooks: Hooks | None = None) -> list[TccDefinition]:
    ledger, hooks = Ledger(client), hooks or Hooks()
    remote = BranchFence(client)  # at the participants' side, past the delay
    return [
        TccDefinition("buy", [participant(ledger, hooks, n) for n in PARTICIPANTS]),
        TccDefinition("buy-remote", [
            remote.wrap(participant(ledger, hooks, "pay")),
            delayed(remote.wrap(participant(ledger, hooks, "stock")), hooks),
        ], fence=False),
    ]


# ---------------------------------------------------------------------------- the test's side
class Worker:
    """This script running in a subprocess, as a test drives it."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path):
        self.proc, self.log = proc, log
        self.lines: list[str] = []

    @classmethod
    async def start(cls, endpoints: list[str], kind: str, definition: str, id: str,
                    at: str | None, log: Path) -> Worker:
        args = [",".join(endpoints), kind, definition, id, *(["--at", at] if at else [])]
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, *args, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=err)
        return cls(proc, log)

    async def expect(self, prefix: str, timeout: float = 20) -> str:
        """The next line of its stdout starting with `prefix` (the lines before are kept)."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"worker ended (exit {await self.proc.wait()}) before "
                                         f"printing {prefix!r}; it printed {self.lines}; its "
                                         f"stderr:\n{self.log.read_text()[-3000:]}")
                line = raw.decode().rstrip("\n")
                self.lines.append(line)
                if line.startswith(prefix):
                    return line

    async def kill(self) -> None:
        """kill -9, and reap it."""
        self.proc.kill()
        await self.proc.wait()

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    async def say(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def finish(self, timeout: float = 20) -> int:
        async with asyncio.timeout(timeout):
            assert self.proc.stdout is not None
            rest = await self.proc.stdout.read()
            self.lines += rest.decode().splitlines()
            return await self.proc.wait()


@contextlib.asynccontextmanager
async def rig(root: Path, kind: str, runs: Sequence[tuple[str, str, str]],
              ) -> AsyncIterator[tuple[Client, list[Worker]]]:
    """A three-node cluster, a client of it, and one worker per (definition, id, point) of
    `runs`, each running `definition` as `id` until its point. The workers are started
    first and told to go once the cluster is up; any still running are killed at the end."""
    from cluster import LocalCluster  # (the worker process has no use for the server)

    cluster = LocalCluster(root)
    workers: list[Worker] = []
    try:
        for definition, id, at in runs:
            workers.append(await Worker.start(cluster.endpoints, kind, definition, id, at,
                                              root / f"worker-{id}.log"))
        async with cluster, Client(cluster.endpoints) as client:
            await cluster.leader()
            for w in workers:
                await w.say("go")
            yield client, workers
    finally:
        for w in workers:
            if w.proc.returncode is None:
                await w.kill()  # (SIGKILL ends a stopped process too)


async def gone(client: Client, key: bytes, timeout: float = 15) -> None:
    """Wait for `key` to be deleted (a dead owner's claim, when its lease expires)."""
    async with asyncio.timeout(timeout):
        resp = await client.get(key)
        if not resp.kvs:
            return
        async for batch in client.watch(key, start_revision=resp.header.revision + 1):
            if any(e.type is EventType.DELETE for e in batch.events):
                return


async def main(argv: list[str]) -> int:
    endpoints, kind, definition, id = argv[:4]
    hooks = Hooks(argv[5] if len(argv) > 5 and argv[4] == "--at" else None)
    async with Client(endpoints.split(","), timeout=5) as client:
        try:
            if kind == "saga":
                async with Orchestrator(client, saga_definitions(client, hooks), ttl=TTL,
                                        on_change=hooks.change) as orch:
                    out = await orch.run(definition, INPUT, saga_id=id)
            else:
                async with TccCoordinator(client, tcc_definitions(client, hooks), ttl=TTL,
                                          on_change=hooks.change) as tcc:
                    out = await tcc.run(definition, INPUT, txn_id=id)
        except OrchestrationError as exc:
            print(f"error {type(exc).__name__}: {exc}", flush=True)
            return 3
    print(f"outcome {out.status}", flush=True)
    return 0


if __name__ == "__main__":
    sys.stdin.readline()  # the test's go-ahead: its cluster is up
    sys.exit(asyncio.run(main(sys.argv[1:])))
