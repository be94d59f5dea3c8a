"""One singleton-worker process for tests/test_worker.py.

    python tests/worker_proc.py ENDPOINTS NAME TAG [--sync] [--ttl N]

It runs a Worker (or, with --sync, a SyncWorker) whose work increments a counter in the store
with fenced compare-and-set transactions, each also writing a log entry naming the counter
value, the token and this process's tag. Every step is reported on stdout as one JSON line:
{"tag", "event": campaigning|leading|lost|resigned|wrote|refused|late-write, "token", ...}.
On losing the leadership the work makes one late write on purpose (what a zombie would do),
which the fence must refuse. SIGTERM stops the worker (it resigns)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
import time
from typing import Any

from shoal.client import Client, Compare, CompareResult, CompareTarget, PutRequest, SyncClient
from shoal.client.worker import (
    STOPPING,
    Fenced,
    SyncWorker,
    SyncWorkerContext,
    Worker,
    WorkerContext,
    WorkerEvent,
)

COUNTER = b"/test/worker/counter"
LOG = b"/test/worker/log/"
LATE = b"/test/worker/late"
STEP = 0.05  # seconds between increments

_out = threading.Lock()


def emit(tag: str, event: str, **fields: Any) -> None:
    with _out:
        sys.stdout.write(json.dumps({"tag": tag, "event": event, "t": time.monotonic(), **fields})
                         + "\n")
        sys.stdout.flush()


def on_event(tag: str) -> Any:
    def report(e: WorkerEvent) -> None:
        emit(tag, e.kind, token=e.token, reason=e.reason)
    return report


def increment_ops(n: int, token: int, tag: str) -> list[PutRequest]:
    return [PutRequest(COUNTER, str(n).encode()),
            PutRequest(LOG + b"%08d" % n, f"{token}:{tag}".encode())]


async def run_async(endpoints: list[str], name: str, tag: str, ttl: int) -> None:
    async with Client(endpoints, timeout=5.0) as client:
        async def work(ctx: WorkerContext) -> None:
            try:
                while True:
                    got = await client.get(COUNTER)
                    n = int(got.kvs[0].value) if got.kvs else 0
                    rev = got.kvs[0].mod_revision if got.kvs else 0
                    try:
                        r = await ctx.txn([Compare(COUNTER, CompareTarget.MOD, CompareResult.EQUAL,
                                                   rev)], increment_ops(n + 1, ctx.token, tag))
                    except Fenced:
                        emit(tag, "refused", token=ctx.token)
                        raise
                    if r.succeeded:
                        emit(tag, "wrote", token=ctx.token, count=n + 1)
                    await asyncio.sleep(STEP)
            finally:
                if ctx.lost.is_set() and ctx.reason != STOPPING:  # a late write: a zombie's
                    try:
                        await ctx.put(LATE, tag.encode(), timeout=5.0)
                        emit(tag, "late-write", token=ctx.token, refused=False)
                    except Fenced:
                        emit(tag, "late-write", token=ctx.token, refused=True)

        worker = Worker(client, name, work, ttl, value=tag.encode(), on_event=on_event(tag))
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.stop)
        await worker.run()


def run_sync(endpoints: list[str], name: str, tag: str, ttl: int) -> None:
    with SyncClient(endpoints, timeout=5.0) as client:
        def work(ctx: SyncWorkerContext) -> None:
            while ctx.sleep(STEP):
                got = client.get(COUNTER)
                n = int(got.kvs[0].value) if got.kvs else 0
                rev = got.kvs[0].mod_revision if got.kvs else 0
                try:
                    r = ctx.txn([Compare(COUNTER, CompareTarget.MOD, CompareResult.EQUAL, rev)],
                                increment_ops(n + 1, ctx.token, tag))
                except Fenced:
                    emit(tag, "refused", token=ctx.token)
                    raise
                if r.succeeded:
                    emit(tag, "wrote", token=ctx.token, count=n + 1)
            if ctx.reason == STOPPING:
                return
            try:  # lost: the same late write
                ctx.put(LATE, tag.encode(), timeout=5.0)
                emit(tag, "late-write", token=ctx.token, refused=False)
            except Fenced:
                emit(tag, "late-write", token=ctx.token, refused=True)

        worker = SyncWorker(client, name, work, ttl, value=tag.encode(), on_event=on_event(tag))
        signal.signal(signal.SIGTERM, lambda *_: worker.stop())
        worker.run()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("endpoints")
    ap.add_argument("name")
    ap.add_argument("tag")
    ap.add_argument("--sync", action="store_true")
    ap.add_argument("--ttl", type=int, default=2)
    a = ap.parse_args()
    endpoints = a.endpoints.split(",")
    if a.sync:
        run_sync(endpoints, a.name, a.tag, a.ttl)
    else:
        asyncio.run(run_async(endpoints, a.name, a.tag, a.ttl))
    emit(a.tag, "exit")


if __name__ == "__main__":
    main()
