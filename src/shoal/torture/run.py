"""`shoal torture`: a local cluster of node processes under a nemesis that kills (SIGKILL),
pauses (SIGSTOP/SIGCONT), restarts and cuts links (through each node's /faults hook), plus one
disk replacement (stop, wipe, remove, re-add as a new member), while clients record a history.
At the end everything is healed and the history must be linearizable."""

from __future__ import annotations

import asyncio
import random
import signal
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..check import CheckResult, check_history, dump_history
from ..client import Client
from ..local.cluster import LocalProcessCluster
from .bank import BankResult, BankWorkload
from .workload import Workload

NODE_ARGS = ["--tick-ms", "50", "--election-ticks", "10", "--snapshot-entries", "500"]


@dataclass
class TortureResult:
    verdict: CheckResult
    counts: dict[str, int]
    faults: list[str] = field(default_factory=list)
    history_path: Path | None = None
    final_values: dict[str, int | None] = field(default_factory=dict)

    converged: bool = False  # every node ended at the same revision and applied index

    @property
    def ok(self) -> bool:
        return self.verdict.ok is True and self.converged


class Nemesis:
    def __init__(self, cluster: LocalProcessCluster, rng: random.Random, log: Callable[[str], None]):
        self.cluster, self.rng, self.say = cluster, rng, log
        self.paused: set[int] = set()
        self.restarts: set[asyncio.Task[None]] = set()  # pending restarts of killed nodes
        self.isolated: set[int] = set()
        self.starting: set[int] = set()  # restarted, not yet serving: still down
        self.done: list[str] = []

    def _note(self, text: str) -> None:
        self.done.append(text)
        self.say(text)

    async def run(self, seconds: float, wipe_at: float | None) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        end = start + seconds
        wiped = wipe_at is None
        while loop.time() < end - 1.0:
            await asyncio.sleep(self.rng.uniform(0.5, 2.0))
            if not wiped and wipe_at is not None and loop.time() - start >= wipe_at:
                wiped = True
                await self.heal()
                await self.replace_disk()
                continue
            action = self.rng.choice(["kill", "kill-leader", "pause", "cut", "heal"])
            await getattr(self, action.replace("-", "_"))()
        await self.heal()

    def _live(self) -> list[int]:
        return [i for i in self.cluster.ids if self.cluster.alive(i)
                and i not in self.paused and i not in self.starting]

    async def _restart_later(self, i: int, after: float) -> None:
        await asyncio.sleep(after)
        if not self.cluster.alive(i):
            self.cluster.start_node(i)
            self._note(f"restart n{i}")
            # A node takes seconds to start on a loaded machine: until it serves it is down,
            # and taking another meanwhile would leave no quorum, not one node down.
            self.starting.add(i)
            try:
                await asyncio.to_thread(self.cluster.wait_serving, i, 60.0)
            except (TimeoutError, RuntimeError) as exc:
                self._note(f"n{i} did not come back: {exc}")
            finally:
                self.starting.discard(i)

    async def kill(self, target: int | None = None) -> None:
        live = self._live()
        if len(live) < len(self.cluster.ids):  # keep at most one node down at a time
            return
        i = target if target is not None else self.rng.choice(live)
        self.cluster.kill(i, signal.SIGKILL)
        self._note(f"kill -9 n{i}")
        task = asyncio.get_running_loop().create_task(self._restart_later(i, self.rng.uniform(0.5, 2.0)))
        self.restarts.add(task)
        task.add_done_callback(self.restarts.discard)

    async def kill_leader(self) -> None:
        leader = await asyncio.to_thread(self.cluster.leader)
        if leader is not None:
            await self.kill(leader)

    async def pause(self) -> None:
        live = self._live()
        if len(live) < len(self.cluster.ids):
            return
        i = self.rng.choice(live)
        self.cluster.kill(i, signal.SIGSTOP)
        self.paused.add(i)
        self._note(f"pause n{i} (SIGSTOP)")

        async def resume() -> None:
            await asyncio.sleep(self.rng.uniform(0.3, 2.0))
            if i in self.paused and self.cluster.alive(i):
                self.cluster.kill(i, signal.SIGCONT)
                self._note(f"resume n{i} (SIGCONT)")
            self.paused.discard(i)

        asyncio.get_running_loop().create_task(resume())

    async def cut(self) -> None:
        """Isolate one node: it drops traffic to and from every other node."""
        i = self.rng.choice(self.cluster.ids)
        others = [n for n in self.cluster.ids if n != i]
        if await asyncio.to_thread(_faults, self.cluster, i, {"block_to": others, "block_from": others}):
            self.isolated.add(i)
            self._note(f"cut n{i} off from {others}")

    async def heal(self) -> None:
        for task in list(self.restarts):
            task.cancel()  # restarted right here instead, and never behind replace_disk's back
        for i in list(self.paused):
            if self.cluster.alive(i):
                self.cluster.kill(i, signal.SIGCONT)
        self.paused.clear()
        for i in self.cluster.ids:
            if not self.cluster.alive(i):
                self.cluster.start_node(i)
        for i in list(self.isolated):
            await asyncio.to_thread(_faults, self.cluster, i, {"heal": True})
        if self.isolated:
            self._note("heal all links")
        self.isolated.clear()

    async def replace_disk(self) -> None:
        """A node loses its disk: remove it, wipe it, and add it back as a new member."""
        c = self.cluster
        leader = await asyncio.to_thread(c.wait_leader, 20.0)
        victim = self.rng.choice([i for i in c.ids if i != leader])
        c.stop_node(victim)
        async with Client([e for i, e in zip(c.ids, c.endpoints, strict=True) if i != victim]) as cl:
            await cl.member_remove(victim)
            c.wipe(victim)
            m = c.member(victim)
            await cl.member_add(victim, f"{m.peer[0]}:{m.peer[1]}", f"{m.client[0]}:{m.client[1]}")
        c.start_node(victim, join=True)
        self._note(f"replace the disk of n{victim}: removed, wiped, re-added as a new member")


def _faults(cluster: LocalProcessCluster, i: int, body: dict[str, object]) -> bool:
    try:
        cluster.faults(i, body)
        return True
    except urllib.error.HTTPError:
        raise  # the node refused the cut (token, body): a bug, not a node that is down
    except OSError:
        return False  # the node is down or paused; nothing to cut


def torture_bank(nodes: int = 3, seconds: float = 60.0, seed: int = 0, clients: int = 5,
                 root: Path | None = None, say: Callable[[str], None] = lambda _: None
                 ) -> tuple[BankResult, list[str]]:
    """The bank workload (torture/bank.py) under kills, pauses and link cuts (no disk
    replacement: a wiped node would take its replicas of the shards' groups with it)."""
    rng = random.Random(seed)
    with LocalProcessCluster(nodes, root=root, node_args=NODE_ARGS) as cluster:
        leader = cluster.start()
        say(f"cluster of {nodes} up, leader n{leader}")

        async def main() -> tuple[BankResult, list[str]]:
            bank = BankWorkload(cluster.endpoints, clients=clients, seed=rng.randrange(1 << 30))
            await bank.setup()
            say("accounts spread over 3 shards")
            nemesis = Nemesis(cluster, rng, say)
            await asyncio.gather(bank.run(seconds), nemesis.run(seconds, None))
            say(f"workload done: {bank.counts}")
            await asyncio.to_thread(cluster.wait_leader, 30.0)
            return await bank.check(), nemesis.done

        return asyncio.run(main())


def torture(nodes: int = 3, seconds: float = 60.0, seed: int = 0, clients: int = 5,
            root: Path | None = None, history: Path | None = None, wipe: bool = True,
            say: Callable[[str], None] = lambda _: None) -> TortureResult:
    rng = random.Random(seed)
    with LocalProcessCluster(nodes, root=root, node_args=NODE_ARGS) as cluster:
        leader = cluster.start()
        say(f"cluster of {nodes} up, leader n{leader}")
        return asyncio.run(_torture(cluster, seconds, rng, clients, history, wipe, say))


async def _torture(cluster: LocalProcessCluster, seconds: float, rng: random.Random, clients: int,
                   history: Path | None, wipe: bool, say: Callable[[str], None]) -> TortureResult:
    workload = Workload(cluster.endpoints, clients=clients, seed=rng.randrange(1 << 30))
    nemesis = Nemesis(cluster, rng, say)
    started = time.monotonic()
    await asyncio.gather(workload.run(seconds),
                         nemesis.run(seconds, seconds * 0.4 if wipe else None))
    say(f"workload done after {time.monotonic() - started:.1f}s: {workload.counts}")
    await asyncio.to_thread(cluster.wait_leader, 30.0)
    async with Client(cluster.endpoints) as cl:
        final = await workload.read_all(cl)
    converged = await asyncio.to_thread(_converge, cluster, 60.0)
    say("every node holds the same state" if converged else "nodes did NOT converge")
    if history is not None:
        dump_history(workload.history, history)
    verdict = await asyncio.to_thread(check_history, workload.history, 120.0)
    return TortureResult(verdict, dict(workload.counts), nemesis.done, history, final, converged)


def _converge(cluster: LocalProcessCluster, timeout: float) -> bool:
    """All nodes report the same revision, with everything committed applied."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        sts = cluster.statuses()
        if all(st is not None for st in sts.values()):
            marks = {(st["revision"], st["applied"]) for st in sts.values() if st}
            if len(marks) == 1 and all(st and st["commit"] == st["applied"] for st in sts.values()):
                return True
        time.sleep(0.2)
    return False
