"""`shoal cap`: the CAP theorem, shown on real processes. One network partition, against two
systems at once (both clusters run side by side and are cut and healed at the same moment):

- Shoal's consistent store (CP): a 3-node cluster; the leader is cut off from the other two
  (its /faults hook drops all peer traffic both ways). Clients on the minority side reach
  only that node, clients on the majority side only the other two. The minority cannot
  commit: its writes time out or are refused, its linearizable reads too; the majority elects
  a leader and goes on; after the heal everyone is served again. The history of every read
  and write is checked with shoal.check.check_history: linearizable.
- the CRDT store (AP, shoal.crdt.node): 3 replicas, one cut off the same way. Every write on
  either side is acknowledged at once by the replica it reached; after the heal the replicas
  converge. The same kind of history (a last-writer-wins register) is checked, and the checker
  reports the anomaly it finds, with the operations: a read on one side that misses a write
  the other side had already acknowledged. A PN-counter incremented on both sides shows the
  other half of the trade: no acknowledged increment is lost in the merge.

Each client does a random mix of writes (fresh values) and reads at a random pace, one at a
time, each recorded as the history format's invoke and completion (docs/history-format.md).
Timeline of a run of `--time T`: healthy until 0.15 T, partitioned until 0.75 T, healed to T;
then the tool waits for the nodes to converge and reads once more on each side (into the
history). The register is a different key in each phase ("x-1-before", "x-2-partition",
"x-3-healed"), so each phase's history is checked on its own as well as the whole.

The table counts the writes that were invoked after the cut and completed before the heal,
per side; one that straddles the cut or the heal is counted in the totals (--json) only.
"Refused" is every write not acknowledged: refused outright, or timed out (an unknown outcome,
"info" in the history). `--out` gets a PNG of every operation on each side over time, green
if acknowledged, red if refused, orange if timed out, with the partition shaded."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from .common import console, duration

if TYPE_CHECKING:
    import aiohttp

    from ..check import CheckResult, Event
    from ..client import Client
    from ..crdt.node import CrdtProcessCluster
    from ..local.cluster import LocalProcessCluster

app = typer.Typer()

CUT_AT, HEAL_AT = 0.15, 0.75  # fractions of the run
OP_TIMEOUT = 0.5  # seconds a client waits for one operation
PACE = 0.02  # mean seconds between one client's operations, so the history stays checkable
NODE_ARGS = ["--tick-ms", "50", "--election-ticks", "10"]
CONVERGE_TIMEOUT = 20.0
CHECK_TIME_LIMIT = 60.0
SIDES = ("minority", "majority")
# One register per phase, named so they sort in time order (the checker reports the first
# failing key): each phase's history starts from an absent register of its own.
PHASES = ("before", "partition", "healed")
COLOURS = {"ok": "#2e9d46", "fail": "#d62728", "info": "#ff7f0e"}


def register(phase: str) -> str:
    return f"x-{PHASES.index(phase) + 1}-{phase}"


@dataclass
class Op:
    """One operation, for the timeline and the counts (times in seconds from the start)."""

    side: str
    client: int
    f: str  # "write", "read" or "incr"
    start: float
    end: float
    outcome: str  # "ok", "fail" or "info"


@dataclass
class Run:
    """What one system did under the partition."""

    system: str  # "cp" or "ap"
    title: str
    nodes: dict[str, list[int]]  # side -> the nodes it reaches
    t0: int = field(default_factory=time.monotonic_ns)
    phase: str = "before"
    history: list[Event] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    sides: dict[int, str] = field(default_factory=dict)  # process -> side
    cut: float = 0.0
    heal: float = 0.0
    converged: bool = False
    converge_seconds: float | None = None
    verdict: CheckResult | None = None  # of the whole history
    phases: dict[str, CheckResult] = field(default_factory=dict)  # of each phase's register
    notes: dict[str, Any] = field(default_factory=dict)

    def now(self) -> float:
        return (time.monotonic_ns() - self.t0) / 1e9

    def record(self, process: int, kind: str, f: str, key: str, value: object) -> None:
        from ..check import Event

        self.history.append(Event(process, kind, f, key, value, time.monotonic_ns()))

    def counts(self, side: str, window: bool) -> dict[str, int]:
        """Writes of `side`: all of them, or (window) those wholly inside the partition."""
        writes = [o for o in self.ops if o.side == side and o.f in ("write", "incr")
                  and (not window or (o.start >= self.cut and o.end <= self.heal))]
        acked = sum(1 for o in writes if o.outcome == "ok")
        return {"attempted": len(writes), "acknowledged": acked, "refused": len(writes) - acked}

    def check(self) -> None:
        from ..check import check_history

        self.verdict = check_history(self.history, CHECK_TIME_LIMIT)
        for phase in PHASES:
            key = register(phase)
            self.phases[phase] = check_history([e for e in self.history if e.key == key],
                                               CHECK_TIME_LIMIT)

    def anomaly(self) -> CheckResult | None:
        """The violation to show: the partition's if it has one, else the first found."""
        found = self.phases.get("partition")
        if found is not None and found.ok is False:
            return found
        return self.verdict if self.verdict is not None and self.verdict.ok is False else None

    def to_json(self) -> dict[str, Any]:
        def result(v: CheckResult) -> dict[str, Any]:
            return {"linearizable": v.ok, "verdict": v.verdict, "key": v.key,
                    "explanation": v.explanation, "ops_checked": v.ops_checked,
                    "window": [{**e.to_json(), "side": self.sides.get(e.process)}
                               for e in v.window]}

        return {
            "title": self.title, "cut_at": round(self.cut, 3), "heal_at": round(self.heal, 3),
            "sides": {s: {"nodes": self.nodes[s], "partition": self.counts(s, True),
                          "total": self.counts(s, False)} for s in SIDES},
            "converged": self.converged,
            "converge_seconds": None if self.converge_seconds is None
            else round(self.converge_seconds, 3),
            "linearizable": None if self.verdict is None else self.verdict.ok,
            "checker": None if self.verdict is None else result(self.verdict),
            "phases": {p: result(v) for p, v in self.phases.items()},
            **self.notes,
        }


class Backend:
    """How a client of one system reads and writes a register (and, AP, bumps a counter)."""

    async def write(self, key: str, value: int) -> None:
        raise NotImplementedError

    async def read(self, key: str) -> int | None:
        raise NotImplementedError

    async def incr(self) -> None:
        raise NotImplementedError


class _Client:
    """One client: a random mix of register writes (fresh values) and reads, and with `incr`
    counter increments, at a random pace, each operation recorded in the run's history."""

    def __init__(self, run: Run, side: str, index: int, backend: Backend,
                 processes: itertools.count[int], values: itertools.count[int], seed: int = 0):
        self.run, self.side, self.index, self.backend = run, side, index, backend
        self.processes, self.values = processes, values
        self.process = self._new_process()
        # Each client its own random mix and pace: clients in lockstep would overlap every
        # read with every write, and no history of overlapping batches shows an anomaly.
        self.rng = random.Random(f"{seed}/{run.system}/{side}/{index}")

    def _new_process(self) -> int:
        p = next(self.processes)
        self.run.sides[p] = self.side
        return p

    async def loop(self, until: float, writes: float, incr: float = 0.0) -> None:
        """Operations until `until` seconds into the run: a share `writes` of register
        writes, `incr` of increments, the rest reads."""
        while self.run.now() < until:
            roll = self.rng.random()
            await self.op("write" if roll < writes else "incr" if roll < writes + incr
                          else "read")
            await asyncio.sleep(PACE * (0.2 + 1.6 * self.rng.random()))

    async def op(self, f: str) -> str:
        """One operation, recorded; its outcome."""
        key = register(self.run.phase)
        value: int | None = next(self.values) if f == "write" else None
        checked = f != "incr"  # the counter is not a register: not in the history
        if checked:
            self.run.record(self.process, "invoke", f, key, value)
        start = self.run.now()
        result: int | None = None
        try:
            if f == "write":
                assert value is not None
                await self.backend.write(key, value)
            elif f == "read":
                result = await self.backend.read(key)
            else:
                await self.backend.incr()
            outcome = "ok"
        except _Refused:
            outcome = "fail"
        except Exception as exc:  # no answer: the outcome of a write is unknown
            if not _expected(exc):
                raise
            outcome = "fail" if f == "read" else "info"
        if checked:
            self.run.record(self.process, outcome, f, key, result if f == "read" else value)
            if outcome == "info":
                self.process = self._new_process()  # an unknown outcome stays open for ever
        self.run.ops.append(Op(self.side, self.index, f, start, self.run.now(), outcome))
        return outcome


class _Refused(Exception):
    """The system said no for sure (nothing was written)."""


def _expected(exc: BaseException) -> bool:
    """Failures a client meets in a partition, as opposed to bugs."""
    import aiohttp

    from ..client import ClientError
    from ..kv.errors import KVError

    return isinstance(exc, ClientError | KVError | TimeoutError | OSError | aiohttp.ClientError)


class _System:
    """One system under test: its clients, how to cut and heal it, and what to do after."""

    def __init__(self, run: Run):
        self.run = run
        self.processes, self.values = itertools.count(), itertools.count(1)

    async def open(self, clients: int) -> list[Backend]:
        """Connect `clients` clients per side: their backends, minority's first."""
        raise NotImplementedError

    async def cut(self) -> None:
        raise NotImplementedError

    async def heal(self) -> None:
        raise NotImplementedError

    async def converge(self) -> None:
        """Wait for the nodes to converge (setting run.converged and converge_seconds)."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def workload(self, backends: list[Backend], seconds: float,
                 seed: int) -> list[Coroutine[Any, Any, None]]:
        raise NotImplementedError

    def last_readers(self, backends: list[Backend]) -> list[Backend]:
        """A backend per side for the reads once healed: each side's first client's."""
        per = len(backends) // len(SIDES)
        return backends[::per]

    async def finals(self, backends: list[Backend]) -> None:
        """One read on each side once healed, into the history (a lost write shows here)."""
        for side, b in zip(SIDES, self.last_readers(backends), strict=True):
            await _Client(self.run, side, 0, b, self.processes, self.values).op("read")


async def _run(systems: list[_System], seconds: float, clients: int, seed: int,
               say: Callable[[str], None]) -> None:
    """The workloads of every system at once, under one schedule: cut at CUT_AT and heal at
    HEAL_AT of the run (sleeps that keep a schedule, not synchronisation)."""
    backends = [await s.open(clients) for s in systems]
    try:
        t0 = time.monotonic_ns()
        for s in systems:
            s.run.t0 = t0
        clock = systems[0].run

        async def schedule() -> None:
            await asyncio.sleep(max(0.0, seconds * CUT_AT - clock.now()))
            await asyncio.gather(*(s.cut() for s in systems))
            say(f"  t={clock.now():.1f}s cut one node of 3 off, in every system")
            for s in systems:
                s.run.cut, s.run.phase = s.run.now(), "partition"
            await asyncio.sleep(max(0.0, seconds * HEAL_AT - clock.now()))
            await asyncio.gather(*(s.heal() for s in systems))
            say(f"  t={clock.now():.1f}s healed")
            for s in systems:
                s.run.heal, s.run.phase = s.run.now(), "healed"

        await asyncio.gather(schedule(), *(w for s, b in zip(systems, backends, strict=True)
                                           for w in s.workload(b, seconds, seed)))
        await asyncio.gather(*(s.converge() for s in systems))
        for s, b in zip(systems, backends, strict=True):
            await s.finals(b)
    finally:
        for s in systems:
            await s.close()
    await asyncio.gather(*(asyncio.to_thread(s.run.check) for s in systems))


def run(seconds: float, clients: int, say: Callable[[str], None], systems: tuple[str, ...] =
        ("cp", "ap"), seed: int = 0) -> list[Run]:
    """Start the clusters (together: that is most of the wait), run, check; one Run each."""
    import contextlib

    from ..crdt.node import CrdtProcessCluster
    from ..local.cluster import LocalProcessCluster

    with contextlib.ExitStack() as stack:
        chosen: list[_System] = []
        crdt = stack.enter_context(CrdtProcessCluster(3)) if "ap" in systems else None
        if crdt is not None:
            for i in crdt.ids:
                crdt.start_node(i)  # they come up while Shoal's nodes elect a leader
        if "cp" in systems:
            shoal = stack.enter_context(LocalProcessCluster(3, node_args=NODE_ARGS))
            leader = shoal.start(timeout=30.0)
            say(f"shoal: 3 nodes up, leader n{leader}; the partition will cut n{leader} off")
            chosen.append(_Shoal(shoal, leader))
        if crdt is not None:
            for i in crdt.ids:
                crdt.wait_serving(i)
            say("crdt: 3 replicas up; the partition will cut n1 off")
            chosen.append(_Crdt(crdt))
        asyncio.run(_run(chosen, seconds, clients, seed, say))
        return [s.run for s in chosen]


# ---------------------------------------------------------------------- CP: Shoal's store


class _ShoalBackend(Backend):
    def __init__(self, client: Client, timeout: float | None = None):
        self.client, self.timeout = client, timeout

    async def write(self, key: str, value: int) -> None:
        await self.client.put(key.encode(), str(value).encode(), timeout=self.timeout)

    async def read(self, key: str) -> int | None:
        resp = await self.client.get(key.encode(), timeout=self.timeout)
        return int(resp.kvs[0].value) if resp.kvs else None


class _Shoal(_System):
    """Shoal's store: the leader is the node cut off."""

    def __init__(self, cluster: LocalProcessCluster, leader: int):
        others = [i for i in cluster.ids if i != leader]
        super().__init__(Run("cp", "Shoal store (CP)", {"minority": [leader], "majority": others}))
        self.cluster, self.leader, self.others = cluster, leader, others
        self.conns: list[Client] = []

    async def open(self, clients: int) -> list[Backend]:
        from ..client import Client

        eps = dict(zip(self.cluster.ids, self.cluster.endpoints, strict=True))
        # The minority's clients know only the cut-off node, as a real partition would leave
        # them: it never learns the new leader, so it has nobody to redirect them to.
        self.conns = [Client([eps[i] for i in self.run.nodes[side]], timeout=OP_TIMEOUT,
                             connect_timeout=0.5) for side in SIDES for _ in range(clients)]
        return [_ShoalBackend(c) for c in self.conns]

    def workload(self, backends: list[Backend], seconds: float,
                 seed: int) -> list[Coroutine[Any, Any, None]]:
        per = len(backends) // len(SIDES)
        return [_Client(self.run, SIDES[n // per], n % per, b, self.processes, self.values,
                        seed).loop(seconds, 0.6) for n, b in enumerate(backends)]

    def last_readers(self, backends: list[Backend]) -> list[Backend]:
        per = len(self.conns) // len(SIDES)  # with a longer timeout: the heal is fresh
        return [_ShoalBackend(c, 5.0) for c in self.conns[::per]]

    async def cut(self) -> None:
        await self._keep_leader()
        body = {"block_to": self.others, "block_from": self.others}
        await asyncio.to_thread(self.cluster.faults, self.leader, body)

    async def _keep_leader(self, timeout: float = 10.0) -> None:
        """The node to cut off must still lead (its clients were given only it): if the
        leadership moved meanwhile (a busy machine), hand it back first."""
        from ..client import ClientError

        deadline = time.monotonic() + timeout
        while (now := await asyncio.to_thread(self.cluster.leader)) != self.leader:
            if time.monotonic() > deadline:
                raise RuntimeError(f"n{self.leader} no longer leads (n{now} does) and would not "
                                   "take the leadership back")
            if now is not None:
                with contextlib.suppress(ClientError, TimeoutError):
                    await self.conns[-1].transfer_leadership(self.leader, timeout=2.0)
            await asyncio.sleep(0.1)

    async def heal(self) -> None:
        await asyncio.to_thread(self.cluster.faults, self.leader, {"heal": True})

    async def converge(self) -> None:
        started = time.monotonic()
        self.run.converged = await asyncio.to_thread(_shoal_converged, self.cluster,
                                                     CONVERGE_TIMEOUT)
        self.run.converge_seconds = time.monotonic() - started if self.run.converged else None

    async def close(self) -> None:
        for c in self.conns:
            await c.close()


def _shoal_converged(cluster: LocalProcessCluster, timeout: float) -> bool:
    """Every node at the same revision with all it committed applied."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sts = cluster.statuses()
        if all(st is not None for st in sts.values()):
            marks = {(st["revision"], st["applied"]) for st in sts.values() if st}
            if len(marks) == 1 and all(st and st["commit"] == st["applied"] for st in sts.values()):
                return True
        time.sleep(0.1)
    return False


# ---------------------------------------------------------------------- AP: the CRDT store


class _HttpBackend(Backend):
    def __init__(self, http: aiohttp.ClientSession, url: str):
        self.http, self.url = http, url

    async def _call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        url = self.url + path
        async with (self.http.get(url) if body is None else self.http.post(url, json=body)) as resp:
            if resp.status != 200:  # the node refused: nothing was applied
                raise _Refused(f"{url}: {resp.status} {await resp.text()}")
            return await resp.json()

    async def write(self, key: str, value: int) -> None:
        await self._call(f"/register/{key}", {"value": value})

    async def read(self, key: str) -> int | None:
        got: int | None = (await self._call(f"/register/{key}"))["value"]
        return got

    async def incr(self) -> None:
        await self._call("/counter/hits", {"add": 1})


class _Crdt(_System):
    """The CRDT store: node 1 is cut off; the majority's clients spread over nodes 2 and 3."""

    def __init__(self, cluster: CrdtProcessCluster):
        super().__init__(Run("ap", "CRDT store (AP)", {"minority": [1], "majority": [2, 3]}))
        self.cluster = cluster
        self.http: aiohttp.ClientSession | None = None

    async def open(self, clients: int) -> list[Backend]:
        import aiohttp

        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=OP_TIMEOUT))
        return [_HttpBackend(self.http, self.cluster.url(nodes[k % len(nodes)]))
                for side in SIDES for k in range(clients) for nodes in [self.run.nodes[side]]]

    def workload(self, backends: list[Backend], seconds: float,
                 seed: int) -> list[Coroutine[Any, Any, None]]:
        per = len(backends) // len(SIDES)
        return [_Client(self.run, SIDES[n // per], n % per, b, self.processes, self.values,
                        seed).loop(seconds, 0.4, 0.2) for n, b in enumerate(backends)]

    async def cut(self) -> None:
        await asyncio.to_thread(self.cluster.isolate, 1)

    async def heal(self) -> None:
        await asyncio.to_thread(self.cluster.heal)

    async def converge(self) -> None:
        try:
            self.run.converge_seconds = await asyncio.to_thread(self.cluster.wait_converged,
                                                                CONVERGE_TIMEOUT)
            self.run.converged = True
        except TimeoutError:
            self.run.converged = False
        states = await asyncio.to_thread(self.cluster.states)
        incr = [o for o in self.run.ops if o.f == "incr"]
        self.run.notes["counter"] = {
            "acknowledged": sum(1 for o in incr if o.outcome == "ok"),
            "unknown": sum(1 for o in incr if o.outcome == "info"),
            "final": {i: (st or {}).get("objects", {}).get("hits", {}).get("value")
                      for i, st in states.items()}}

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()


# ---------------------------------------------------------------------- output


def table(runs: list[Run]) -> Any:
    from rich.table import Table

    t = Table(title="CAP, shown: one node of 3 cut off (writes invoked and completed during "
                    "the partition)", title_justify="left")
    for col in ("system", "side", "nodes", "attempted", "acknowledged", "refused", "converged",
                "checker"):
        t.add_column(col, justify="right" if col in ("attempted", "acknowledged", "refused")
                     else "left")
    for r in runs:
        conv = (f"yes, {r.converge_seconds:.2f}s after the heal" if r.converged and
                r.converge_seconds is not None else "NO")
        for k, side in enumerate(SIDES):
            c = r.counts(side, True)
            t.add_row(r.title if k == 0 else "", side, ", ".join(f"n{i}" for i in r.nodes[side]),
                      str(c["attempted"]), str(c["acknowledged"]), str(c["refused"]),
                      conv if k == 0 else "", verdict(r) if k == 0 else "",
                      end_section=k == len(SIDES) - 1)
    return t


def verdict(r: Run) -> str:
    """The checker's verdict on the whole history, and which phases' registers failed."""
    if r.verdict is None:
        return "-"
    if r.verdict.ok is None:
        return f"undecided ({r.verdict.explanation})"
    if r.verdict.ok:
        return "linearizable"
    failed = [p for p in PHASES if p in r.phases and r.phases[p].ok is False]
    return f"NOT linearizable ({', '.join(failed)})"


def window_table(run: Run, context: int = 8) -> Any:
    """The checker's failing window, with the operations on that register just before it
    (the checker summarises those as "it can only hold v"), each with the side it ran on."""
    from rich.table import Table

    from ..check.history import operations

    found = run.anomaly()
    assert found is not None and found.window
    end = found.window[-1].time
    inside = {(e.process, e.time) for e in found.window}
    upto = [e for e in run.history if e.key == found.key and e.time <= end]
    ops = operations(upto)[-context:]  # bounded: the window and what led to it
    t = Table(title=f"{run.title}: the operations of the anomaly on register {found.key!r} "
                    "(*: in the checker's failing window)", title_justify="left")
    for col in ("", "process", "side", "op", "value", "result", "invoked (s)", "completed (s)"):
        t.add_column(col)
    for op in ops:
        done = op.complete
        mark = "*" if (op.process, op.invoke.time) in inside else ""
        t.add_row(mark, str(op.process), run.sides.get(op.process, "?"), op.f,
                  json.dumps(op.value) if op.f == "write" else "",
                  (json.dumps(op.result) if op.f == "read" and op.status == "ok" else op.status)
                  if done is not None else "(in flight)",
                  f"{(op.invoke.time - run.t0) / 1e9:.3f}",
                  f"{(done.time - run.t0) / 1e9:.3f}" if done is not None else "-",
                  style="bold" if mark else None)
    return t


def chart(runs: list[Run], path: Path) -> None:
    """A PNG: per system, one row per side, each operation a bar from invoke to completion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(len(runs), 1, figsize=(11, 2.4 * len(runs) + 0.9), squeeze=False)
    for ax, r in zip(axes[:, 0], runs, strict=True):
        clients = max((o.client for o in r.ops), default=0) + 1
        for row, side in enumerate(SIDES):
            mine = [o for o in r.ops if o.side == side]
            # One collection per side: thousands of separate lines would take seconds to draw.
            segments = [[(o.start, y), (max(o.end, o.start + 0.005), y)] for o in mine
                        for y in [row + 0.1 + 0.8 * (o.client + 0.5) / clients]]
            ax.add_collection(LineCollection(segments, colors=[COLOURS[o.outcome] for o in mine],
                                             linewidths=3, capstyle="butt"))
        ax.axvspan(r.cut, r.heal, color="#999999", alpha=0.2)
        ax.set_yticks([0.5, 1.5])
        ax.set_yticklabels([f"{s}\n({', '.join(f'n{i}' for i in r.nodes[s])})" for s in SIDES])
        ax.set_ylim(0, 2)
        ax.set_xlim(0, max([r.heal, *(o.end for o in r.ops)]) + 0.2)
        ax.set_title(r.title, loc="left")
        ax.set_xlabel("seconds")
    fig.legend(handles=[Patch(color=COLOURS["ok"], label="acknowledged"),
                        Patch(color=COLOURS["fail"], label="refused / failed"),
                        Patch(color=COLOURS["info"], label="timed out (outcome unknown)"),
                        Patch(color="#999999", alpha=0.3, label="partition")],
               loc="upper center", bbox_to_anchor=(0.5, 0.965), ncol=4, fontsize="small",
               frameon=False)
    fig.suptitle("Availability on each side of a partition: every operation from invoke to "
                 "completion, one line per client", y=0.995, fontsize="medium")
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary(runs: list[Run]) -> dict[str, Any]:
    return {r.system: r.to_json() for r in runs}


def as_predicted(runs: list[Run]) -> list[str]:
    """What did not come out as CAP says it must (empty: all of it did)."""
    wrong = []
    for r in runs:
        minority, majority = r.counts("minority", True), r.counts("majority", True)
        if not r.converged:
            wrong.append(f"{r.title}: the nodes did not converge after the heal")
        if r.system == "cp":
            if minority["acknowledged"] or not minority["refused"]:
                wrong.append(f"{r.title}: the minority side should refuse every write: {minority}")
            if not majority["acknowledged"]:
                wrong.append(f"{r.title}: the majority side acknowledged no write: {majority}")
            if r.verdict is None or r.verdict.ok is not True:
                wrong.append(f"{r.title}: the history should be linearizable")
        else:
            for side, c in (("minority", minority), ("majority", majority)):
                if c["refused"] or not c["acknowledged"]:
                    wrong.append(f"{r.title}: the {side} side should accept every write: {c}")
            during = r.phases.get("partition")
            if during is None or during.ok is not False:
                wrong.append(f"{r.title}: the checker should find a violation in the partition")
            n = r.notes.get("counter", {})
            lost = [v for v in n.get("final", {}).values()
                    if v is None or not n["acknowledged"] <= v <= n["acknowledged"] + n["unknown"]]
            if lost:
                wrong.append(f"{r.title}: the counter should hold every acknowledged increment "
                             f"({n['acknowledged']}) on every node, not {n.get('final')}")
    return wrong


@app.command()
def cap(
    time_: str = typer.Option("20s", "--time", help="how long each system runs, e.g. 6s or 1m"),
    out: Path = typer.Option(Path("cap.png"), "--out", help="the timeline chart (PNG)"),
    as_json: bool = typer.Option(False, "--json", help="print the results as JSON"),
    clients: int = typer.Option(2, "--clients", min=1, max=8, help="clients per side"),
    only: str = typer.Option("both", "--system", help="cp, ap or both"),
    seed: int = typer.Option(0, "--seed", help="the clients' mix of operations and pace"),
) -> None:
    """The same partition against Shoal's store (CP) and the CRDT store (AP): who stays available, who stays linearizable."""
    seconds = duration(time_)
    if seconds < 3:
        raise typer.BadParameter(f"--time {time_} is too short to cut and heal: give at least 3s")
    if only not in ("cp", "ap", "both"):
        raise typer.BadParameter(f"--system must be cp, ap or both, not {only!r}")
    err = console(stderr=True)

    def say(text: str) -> None:
        err.print(f"[dim]{text}[/]", highlight=False)

    runs = run(seconds, clients, say, ("cp", "ap") if only == "both" else (only,), seed)
    chart(runs, out)
    wrong = as_predicted(runs)
    if as_json:
        typer.echo(json.dumps({"seconds": seconds, "clients_per_side": clients,
                               "systems": summary(runs), "chart": str(out),
                               "as_predicted": not wrong, "unexpected": wrong}, indent=2))
    else:
        out_ = console()
        out_.print(table(runs))
        for r in runs:
            found = r.anomaly()
            if found is not None:
                out_.print(f"{r.title}: {found.explanation}", highlight=False, markup=False)
                out_.print(window_table(r))
            if "counter" in r.notes:
                n = r.notes["counter"]
                out_.print(f"{r.title}: the counter took {n['acknowledged']} acknowledged "
                              f"increments on both sides; after the heal every node reads "
                              f"{sorted(set(n['final'].values()), key=str)}", highlight=False)
        out_.print(f"timeline: {out}")
        for line in wrong:
            out_.print(f"[red]unexpected: {line}[/]")
    raise typer.Exit(1 if wrong else 0)
