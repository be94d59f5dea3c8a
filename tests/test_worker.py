"""The singleton worker (shoal.client.worker) on a real 3-node cluster, with real worker
processes (tests/worker_proc.py): the leader is paused with SIGSTOP until a standby takes
over, then resumed: its fenced writes are refused and it stands down; then the new leader is
killed with SIGKILL and the next in line takes over. Exactly one worker works at a time: the
store's log of fenced counter increments (each naming its token and worker) shows one token
after another, never interleaved, the counter never skipping or repeating a value."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.client import Client, SyncClient
from shoal.client.worker import Fenced, Worker, WorkerContext, WorkerEvent
from shoal.local.cluster import LocalProcessCluster

HERE = Path(__file__).parent
NODE_ARGS = ["--tick-ms", "50", "--election-ticks", "10"]
TTL = 2
COUNTER = b"/test/worker/counter"
LOG = b"/test/worker/log/"
LATE = b"/test/worker/late"
Event = dict[str, Any]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalProcessCluster]:
    with LocalProcessCluster(3, root=tmp_path_factory.mktemp("worker-cluster"),
                             node_args=NODE_ARGS) as c:
        c.start(timeout=30)
        yield c


class Events:
    """Every JSON line the worker processes print, in arrival order, to wait on."""

    def __init__(self) -> None:
        self.all: list[Event] = []
        self._cond = threading.Condition()

    def feed(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._cond:
                self.all.append(json.loads(line))
                self._cond.notify_all()

    def wait(self, pred: Callable[[Event], bool], timeout: float, what: str) -> Event:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hit = next((e for e in self.all if pred(e)), None)
                if hit is not None:
                    return hit
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = "\n".join(map(json.dumps, self.all[-15:]))
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                         f"the last events:\n{tail}")
                self._cond.wait(left)

    def of(self, tag: str, event: str, **match: Any) -> list[Event]:
        with self._cond:
            return [e for e in self.all if e["tag"] == tag and e["event"] == event
                    and all(e.get(k) == v for k, v in match.items())]


def until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `cond` until it holds (AssertionError naming `what` after `timeout`)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def spawn(cluster: LocalProcessCluster, events: Events, tag: str, tmp: Path, *,
          sync: bool = False) -> subprocess.Popen[str]:
    with open(tmp / f"{tag}.stderr", "w") as err:  # the child has its own copy of the fd
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "worker_proc.py"), ",".join(cluster.endpoints), "job",
             tag, "--ttl", str(TTL), *(["--sync"] if sync else [])],
            stdout=subprocess.PIPE, stderr=err, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    threading.Thread(target=events.feed, args=(proc,), daemon=True).start()
    return proc


def candidates(client: SyncClient) -> int:
    return client.get(b"/shoal/election/job/", prefix=True, count_only=True).count


def test_paused_leader_is_fenced_and_a_standby_takes_over(cluster: LocalProcessCluster,
                                                          tmp_path: Path) -> None:
    ev = Events()
    procs: dict[str, subprocess.Popen[str]] = {}
    client = SyncClient(cluster.endpoints, timeout=10.0)
    try:
        procs["w1"] = spawn(cluster, ev, "w1", tmp_path)
        t1 = ev.wait(lambda e: e["tag"] == "w1" and e["event"] == "leading", 30, "w1 to lead")["token"]
        ev.wait(lambda e: e["tag"] == "w1" and e["event"] == "wrote" and e["count"] >= 3, 20,
                "w1's first increments")
        # The standbys join in a known order: w2 (blocking SyncWorker) is next in line, then w3.
        procs["w2"] = spawn(cluster, ev, "w2", tmp_path, sync=True)
        until(lambda: candidates(client) == 2, 30, "w2 to stand in line")
        procs["w3"] = spawn(cluster, ev, "w3", tmp_path)
        until(lambda: candidates(client) == 3, 30, "w3 to stand in line")

        # Pause the leader: its lease runs out, and the next in line takes over.
        procs["w1"].send_signal(signal.SIGSTOP)
        lead2 = ev.wait(lambda e: e["tag"] == "w2" and e["event"] == "leading", TTL + 20,
                        "w2 to take over from the paused w1")
        t2 = lead2["token"]
        assert t2 > t1
        first2 = ev.wait(lambda e: e["tag"] == "w2" and e["event"] == "wrote", 20,
                         "w2's first increment")
        ev.wait(lambda e: e["tag"] == "w2" and e["event"] == "wrote"
                and e["count"] >= first2["count"] + 3, 20, "w2's increments")
        assert not ev.of("w3", "leading"), "w3 led while w2 did"

        # Resume the old leader: it must find itself fenced and stand down.
        resumed = time.monotonic()
        procs["w1"].send_signal(signal.SIGCONT)
        lost1 = ev.wait(lambda e: e["tag"] == "w1" and e["event"] == "lost", 20,
                        "the resumed w1 to notice it lost")
        assert lost1["token"] == t1 and lost1["t"] >= resumed, lost1
        ev.wait(lambda e: e["tag"] == "w1" and e["token"] == t1 and (
            e["event"] == "refused" or e["event"] == "late-write"), 20,
            "w1's late write to meet the fence")
        assert all(e["refused"] for e in ev.of("w1", "late-write")), ev.of("w1", "late-write")
        # (a write acknowledged just before the pause may be reported after the resume)
        assert all(e["count"] < first2["count"] for e in ev.of("w1", "wrote")), \
            "w1 wrote after w2 took over"
        ev.wait(lambda e: e["tag"] == "w1" and e["event"] == "campaigning" and e["t"] > lost1["t"],
                20, "w1 to stand by again")
        after = max(e["count"] for e in ev.of("w2", "wrote"))
        ev.wait(lambda e: e["tag"] == "w2" and e["event"] == "wrote" and e["count"] >= after + 3,
                20, "w2 to go on undisturbed")

        # Kill the new leader outright: w3, next in line, takes over once its lease expires.
        procs["w2"].kill()
        procs["w2"].wait()
        lead3 = ev.wait(lambda e: e["tag"] == "w3" and e["event"] == "leading", TTL + 20,
                        "w3 to take over from the killed w2")
        t3 = lead3["token"]
        assert t3 > t2
        ev.wait(lambda e: e["tag"] == "w3" and e["event"] == "wrote" and e["token"] == t3, 20,
                "w3's first increment")
        assert not ev.of("w1", "leading", token=t3)

        for tag in ("w1", "w3"):
            procs[tag].terminate()
        for tag in ("w1", "w3"):
            assert procs[tag].wait(20) == 0, f"{tag} did not stop cleanly on SIGTERM"
        ev.wait(lambda e: e["tag"] == "w3" and e["event"] == "resigned", 5, "w3 to resign")

        # The store's record: one token after another, every count once, from its leader.
        log = client.get(LOG, prefix=True)
        entries = [(int(kv.key[len(LOG):]), *kv.value.decode().split(":")) for kv in log.kvs]
        counts = [n for n, _, _ in entries]
        assert counts == list(range(1, len(counts) + 1)), "the counter skipped or repeated"
        tokens = [int(t) for _, t, _ in entries]
        assert tokens == sorted(tokens), f"tokens interleaved: {tokens}"
        owner = {int(t): tag for _, t, tag in entries}
        assert owner == {t1: "w1", t2: "w2", t3: "w3"}, owner
        by_count = {n: (int(t), tag) for n, t, tag in entries}
        for e in ev.all:
            if e["event"] == "wrote":
                assert by_count[e["count"]] == (e["token"], e["tag"]), e
        assert client.get_value(LATE) is None, "a late write got through the fence"
        assert client.get_value(COUNTER) == str(len(counts)).encode()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()
        client.close()


def test_worker_resigns_on_stop_and_the_old_token_is_fenced(cluster: LocalProcessCluster) -> None:
    """In one process: stop() hands over at once (no lease to wait out), the old context's
    writes are refused, and run() returns when the work itself returns."""

    async def main() -> None:
        async with Client(cluster.endpoints) as ca, Client(cluster.endpoints) as cb:
            contexts: dict[str, WorkerContext] = {}
            events: list[tuple[str, WorkerEvent]] = []
            leading = {"a": asyncio.Event(), "b": asyncio.Event()}

            def work_of(tag: str) -> Callable[[WorkerContext], Any]:
                async def work(ctx: WorkerContext) -> None:
                    contexts[tag] = ctx
                    await ctx.put(b"/test/worker2/owner", tag.encode())
                    leading[tag].set()
                    if tag == "b":
                        return  # the job is done: run() returns
                    await asyncio.Event().wait()
                return work

            def note(tag: str) -> Callable[[WorkerEvent], None]:
                return lambda e: events.append((tag, e))

            a = Worker(ca, "job2", work_of("a"), ttl=5, on_event=note("a"))
            b = Worker(cb, "job2", work_of("b"), ttl=5, on_event=note("b"))
            ra = asyncio.create_task(a.run())
            await asyncio.wait_for(leading["a"].wait(), 20)
            rb = asyncio.create_task(b.run())
            a.stop()
            await asyncio.wait_for(ra, 10)
            await asyncio.wait_for(leading["b"].wait(), 10)  # well before a's 5 s lease ends
            await asyncio.wait_for(rb, 10)
            assert contexts["b"].token > contexts["a"].token
            with pytest.raises(Fenced, match="stale"):
                await contexts["a"].put(b"/test/worker2/owner", b"late")
            assert await cb.get_value(b"/test/worker2/owner") == b"b"
            kinds = [(t, e.kind) for t, e in events]
            assert ("a", "resigned") in kinds and ("b", "resigned") in kinds, kinds
            assert await a.leader() is None  # b resigned when its work returned

    asyncio.run(main())


def test_a_cancelled_run_gives_up_the_leadership(cluster: LocalProcessCluster) -> None:
    """run() cancelled while leading (Ctrl-C through a SyncWorker, a task torn down): the
    work is cancelled and the leadership resigned, not held by the lease's keep-alive."""

    async def main() -> None:
        async with Client(cluster.endpoints) as ca, Client(cluster.endpoints) as cb:
            started = {"a": asyncio.Event(), "b": asyncio.Event()}
            cancelled = asyncio.Event()

            def work_of(tag: str) -> Callable[[WorkerContext], Any]:
                async def work(ctx: WorkerContext) -> None:
                    started[tag].set()
                    try:
                        await asyncio.Event().wait()
                    except asyncio.CancelledError:
                        cancelled.set()
                        raise
                return work

            a = Worker(ca, "job3", work_of("a"), ttl=10)
            b = Worker(cb, "job3", work_of("b"), ttl=10)
            ra = asyncio.create_task(a.run())
            await asyncio.wait_for(started["a"].wait(), 20)
            rb = asyncio.create_task(b.run())
            ra.cancel()
            with pytest.raises(asyncio.CancelledError):
                await ra
            assert cancelled.is_set()
            await asyncio.wait_for(started["b"].wait(), 5)  # well before a's 10 s lease ends
            b.stop()
            await asyncio.wait_for(rb, 10)

    asyncio.run(main())
