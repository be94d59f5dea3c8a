"""The transaction simulator: the production coordinator (`TxnClient`) and participant
(`KVStore`'s prepare, resolve and record) under faults, deterministically from one seed.

- txn_loop.py: the virtual-time event loop the whole run lives on (no real sleeping, no
  sockets), so a seed replays byte for byte and a run of many virtual seconds costs
  milliseconds;
- txn_world.py: the cluster (shards as stores, made by real splits), the network (latency,
  loss, outages), coordinator kills, the leaders' lease chores and the oracle of commit points;
- txn_workload.py: the bank and list-append workloads, the run and its checks;
- txn_bugs.py: the planted bugs and the bounds within which each is caught;
- this module: one seed (`run_seed`), campaigns, the crash-at-every-step check, and what
  `shoal sim --workload bank|list-append` prints.

**Crash at every step** (`crash_steps`): one fixed transaction (a three-way transfer across
three shards) runs once per crash point: its coordinator is killed just before the n-th
request of a kind reaches its group (`CRASH_POINTS`), the requests it had in flight dying with
it. A reader then reads the whole bank at once (waiting out the orphaned record's lease, as
presumed abort has it), a sweeper touches every key, and the check is that no intent or pending
record is left, the transfer took effect entirely or not at all, it committed exactly when the
kill came after the decision, and the reader saw what the final state holds."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import time
import traceback
from collections import Counter
from collections.abc import Generator, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import client as _client  # noqa: F401  (first: shoal.txn.coordinator imported before
from ..check import dump_txn_history  # shoal.client fails, a cycle through client/aio.py)
from ..check.txn_history import TxnEvent
from ..kv.requests import (
    Request,
    TxnPrepareRequest,
    TxnRecordAction,
    TxnRecordRequest,
    TxnResolveRequest,
)
from ..txn.coordinator import Transaction
from .txn_loop import run_virtual
from .txn_workload import KNOWN_ISSUES, Bank, Op, Run
from .txn_world import WORKLOADS, Process, TxnSimConfig, TxnWorld

__all__ = ["CRASH_POINTS", "WORKLOADS", "StepResult", "TxnSeedResult", "TxnSimConfig",
           "campaign", "crash_step", "crash_steps", "run_seed"]


@dataclass
class TxnSeedResult:
    seed: int
    workload: str
    violations: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)  # one entry per violation
    stats: dict[str, int] = field(default_factory=dict)
    virtual_s: float = 0.0
    seconds: float = 0.0
    elle: str = ""  # Elle's verdict (list-append)
    history: list[TxnEvent] = field(default_factory=list, repr=False)
    trace: str = ""  # the last requests before the end of the run
    notes: list[str] = field(default_factory=list)  # retries the harness made (splits, sweep)

    @property
    def ok(self) -> bool:
        return not self.violations

    def history_text(self) -> str:
        return "".join(json.dumps(e.to_json()) + "\n" for e in self.history)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        del out["history"]
        out["ok"] = self.ok
        return out


def run_seed(seed: int, cfg: TxnSimConfig) -> TxnSeedResult:
    """One run of `cfg` from `seed`, checked."""
    started = time.perf_counter()
    world = TxnWorld(seed, cfg)
    run = Run(world)
    res = TxnSeedResult(seed, cfg.workload)
    problems: list[tuple[str, str]] = []
    loop_errors: list[str] = []
    try:
        _, loop = run_virtual(run.main())
        res.virtual_s = loop.time()
        loop_errors = loop.errors  # (exceptions nobody retrieved: none expected)
        problems = run.check()
    except Exception as exc:  # noqa: BLE001 - whatever broke the run is the finding
        problems = [(f"the run failed: {type(exc).__name__}: {exc}",
                     "".join(traceback.format_exception(exc)[-6:]))]
    res.violations = [p for p, _ in problems]
    res.evidence = [e for _, e in problems]
    res.stats = dict(sorted(world.stats.items()))
    res.stats["commits"] = len(world.commits)
    orphans = sum(world.intents_left(owned=False).values()), sum(world.orphaned_keys().values())
    if any(orphans):
        run.known["split-drop-skipped"] += 1
        res.stats["orphaned_intents"], res.stats["orphaned_keys"] = orphans
    res.stats.update({f"known_{k}": n for k, n in run.known.items()})
    res.elle = run.elle.explanation if run.elle is not None else ""
    res.history = run.history
    res.trace = world.trace_text()
    res.notes = loop_errors[:5] + run.notes[-10:]
    res.seconds = time.perf_counter() - started
    return res


def _run(args: tuple[int, TxnSimConfig]) -> TxnSeedResult:
    res = run_seed(*args)
    res.history = []  # (not shipped back from a worker process: the report needs none)
    return res


def campaign(cfg: TxnSimConfig, seeds: Iterable[int],
             workers: int | None = None) -> Generator[TxnSeedResult]:
    """Yield results as seeds finish (in any order with several workers)."""
    jobs = [(s, cfg) for s in seeds]
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    if workers <= 1:
        yield from map(_run, jobs)
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield from pool.imap_unordered(_run, jobs, chunksize=2)


# ------------------------------------------------------------------------ crash at every step
# point -> (the kind of request, which of them) the coordinator dies just before; None: no kill.
CRASH_POINTS: dict[str, tuple[str, int] | None] = {
    "before-prepare": ("prepare", 1),
    "after-1-prepare": ("prepare", 2),
    "after-2-prepares": ("prepare", 3),
    "after-all-prepares": ("commit", 1),
    "after-decision": ("resolve", 1),
    "after-1-resolve": ("resolve", 2),
    "after-2-resolves": ("resolve", 3),
    "before-forget": ("forget", 1),
    "no-crash": None,
}
COMMITTING = frozenset({"after-decision", "after-1-resolve", "after-2-resolves", "before-forget",
                        "no-crash"})
STEP_CONFIG = TxnSimConfig(workload="bank", shards=3, clients=1, ops=0, loss=0.0, outages=False,
                           crashes=False, splits=0)


@dataclass
class StepResult:
    point: str
    seed: int
    committed: bool
    killed: bool = False  # the coordinator was killed where the point says
    violations: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    trace: str = ""

    @property
    def ok(self) -> bool:
        return not self.violations


def _kind(request: Request) -> str:
    if isinstance(request, TxnPrepareRequest):
        return "prepare"
    if isinstance(request, TxnResolveRequest):
        return "resolve"
    if isinstance(request, TxnRecordRequest):
        return {TxnRecordAction.COMMIT: "commit", TxnRecordAction.FORGET: "forget"}.get(
            request.action, "")
    return ""


def crash_step(point: str, seed: int = 0, cfg: TxnSimConfig = STEP_CONFIG) -> StepResult:
    """The fixed three-shard transfer, its coordinator killed at `point` (CRASH_POINTS)."""
    trigger = CRASH_POINTS[point]
    world = TxnWorld(seed, replace(cfg, workload="bank"))
    bank = Bank(world.cfg)
    run = Run(world, bank)
    amount = 7
    spread = [bank.keys[0], *bank.split_points(world.cfg.shards)]  # one key per shard
    seen: Counter[str] = Counter()
    victim_box: list[Process] = []

    def hook(process: Process, request: Request) -> bool:
        if not victim_box or process is not victim_box[0] or trigger is None:
            return False
        kind = _kind(request)
        seen[kind] += 1
        return (kind, seen[kind]) == trigger

    async def transfer(tx: Transaction) -> list[Any]:
        values = [bank.decode(await tx.get(k)) for k in spread]
        tx.put(spread[0], str(values[0] - amount * (len(spread) - 1)).encode())
        for k, v in zip(spread[1:], values[1:], strict=True):
            tx.put(k, str(v + amount).encode())
        return [["r", bank.name_of(k), v] for k, v in zip(spread, values, strict=True)]

    async def main() -> tuple[Op, Op]:
        chores = asyncio.create_task(world.chores())
        await run.setup()
        victim = world.process()
        victim_box.append(victim)
        world.crash_hook = hook
        op = Op(0, 0, "transfer", [["transfer3", *map(bank.name_of, spread), amount]], transfer)
        await run.execute(world.txn_client(victim), op)  # (it may return before resolving)
        reader = bank.read_all(run, 1, 1)
        await run.execute(world.txn_client(world.process()), reader)
        await asyncio.sleep(world.cfg.record_ttl_s + 1)
        await run.final_read()
        await asyncio.sleep(world.cfg.record_ttl_s + 1)
        await run.sweep()
        chores.cancel()
        return op, reader

    res = StepResult(point, seed, False)
    problems: list[tuple[str, str]] = []
    try:
        (op, reader), _ = run_virtual(main())
        problems = run.check()
        res.committed = any(t in world.commits for t in op.attempts)
        expect = point in COMMITTING
        if res.committed != expect:
            did, should = ("committed" if x else "aborted" for x in (res.committed, expect))
            problems.append((f"killed {point}: the transfer {did}, it should have {should}", ""))
        if run.final is not None:
            before = {k: bank.cfg.balance for k in spread}
            after = {spread[0]: bank.cfg.balance - amount * (len(spread) - 1),
                     **{k: bank.cfg.balance + amount for k in spread[1:]}}
            final = {k: bank.decode(run.final[k]) for k in spread}
            if final not in (before, after):
                problems.append((f"killed {point}: the transfer took effect in part: {final}",
                                 f"before {before}, after {after}"))
            if reader.status == "ok" and reader.value is not None:
                saw = {bank.keys[i]: v for i, (_, _, v) in enumerate(reader.value)}
                if any(saw[k] != final[k] for k in spread):
                    problems.append((f"killed {point}: a reader saw {saw}, the final state is "
                                     f"{final}", ""))
            else:
                problems.append((f"killed {point}: the reader never read: {reader.error}", ""))
    except Exception as exc:  # noqa: BLE001 - whatever broke the run is the finding
        problems = [(f"the run failed: {type(exc).__name__}: {exc}",
                     "".join(traceback.format_exception(exc)[-6:]))]
    res.killed = world.stats["kills"] > 0
    if res.killed != (trigger is not None):
        problems.append((f"{point}: the coordinator was {'' if res.killed else 'not '}killed",
                         ""))
    res.violations = [p for p, _ in problems]
    res.evidence = [e for _, e in problems]
    res.trace = world.trace_text()
    return res


def crash_steps(seed: int = 0, cfg: TxnSimConfig = STEP_CONFIG) -> list[StepResult]:
    return [crash_step(point, seed, cfg) for point in CRASH_POINTS]


# ------------------------------------------------------------------------ what the CLI prints
def replay_command(cfg: TxnSimConfig, seed: int, bug: str | None, extra: str = "") -> str:
    base = f"shoal sim --workload {cfg.workload} --seed {seed}"
    return base + (f" --bug {bug}" if bug else "") + extra


def report(cfg: TxnSimConfig, *, seeds: int, first_seed: int, seed: int | None,
           workers: int | None, as_json: bool, history: Path | None, bug: str | None,
           stop_at_first: bool, crash_points: bool, replay_extra: str = "") -> int:
    """Run, print (a progress bar, a table, the evidence; or JSON) and return the exit code."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table
    from rich.text import Text

    console = Console()
    if crash_points:
        steps = crash_steps(seed or 0, replace(STEP_CONFIG, bugs=cfg.bugs))
        if as_json:
            console.print_json(json.dumps([asdict(s) | {"ok": s.ok} for s in steps]))
        else:
            t = Table(title="One three-shard transfer, its coordinator killed at each step")
            for col in ("crash point", "outcome", "verdict"):
                t.add_column(col)
            for s in steps:
                t.add_row(s.point, "committed" if s.committed else "aborted",
                          "[green]all-or-nothing, no intent left[/]" if s.ok
                          else f"[red]{'; '.join(s.violations)}[/]")
            console.print(t)
        return 0 if all(s.ok for s in steps) else 1
    if seed is not None:
        results = [run_seed(seed, cfg)]
        if history is not None:
            dump_txn_history(results[0].history, history)
    else:
        results = []
        started = time.perf_counter()
        with Progress(TextColumn("[bold]sim[/] {task.description}"), BarColumn(),
                      MofNCompleteColumn(), TextColumn("{task.fields[bad]} violations"),
                      console=console, transient=True, disable=as_json) as bar:
            task = bar.add_task(f"{cfg.workload}, {cfg.shards}+{cfg.splits} shards, "
                                f"{cfg.ops} transactions", total=seeds, bad=0)
            runs = campaign(cfg, range(first_seed, first_seed + seeds), workers)
            for res in runs:
                results.append(res)
                bar.update(task, advance=1, bad=sum(not r.ok for r in results))
                if stop_at_first and not res.ok:
                    runs.close()
                    break
        results.sort(key=lambda r: r.seed)
        if not as_json:
            console.print(f"{len(results)} seeds in {time.perf_counter() - started:.1f}s "
                          f"({sum(r.stats.get('txn_ok', 0) for r in results)} transactions "
                          "committed)")
    bad = [r for r in results if not r.ok]
    if as_json:
        console.print_json(json.dumps({
            "workload": cfg.workload, "bugs": sorted(cfg.bugs), "ok": not bad,
            "seeds": [r.to_json() for r in results],
            "replay": replay_command(cfg, bad[0].seed, bug, replay_extra) if bad else None}))
        return 1 if bad else 0
    if seed is not None:
        r, st = results[0], results[0].stats
        console.print(f"seed {r.seed}: {'[green]ok[/]' if r.ok else '[red]violated[/]'} — "
                      f"{st.get('txn_ok', 0)} ok, {st.get('txn_fail', 0)} failed, "
                      f"{st.get('txn_info', 0)} unknown of {len(r.history) // 2} transactions; "
                      f"{st.get('kills', 0)} coordinators killed, {st.get('outages', 0)} outages,"
                      f" {st.get('splits', 0)} splits, {st.get('messages', 0)} messages, "
                      f"{r.virtual_s:.1f} virtual s" + (f"; Elle: {r.elle}" if r.elle else ""))
        if history is not None:
            console.print(f"wrote {len(r.history)} events to {history}")
    else:
        t = Table(title=f"{cfg.workload}: one run of the transaction layer per seed")
        for col in ("seed", "ok/fail/info", "kills", "outages", "splits", "virtual s",
                    "verdict"):
            t.add_column(col, justify="right")
        for r in results[:200]:
            st = r.stats
            t.add_row(str(r.seed), f"{st.get('txn_ok', 0)}/{st.get('txn_fail', 0)}/"
                      f"{st.get('txn_info', 0)}", str(st.get("kills", 0)),
                      str(st.get("outages", 0)), str(st.get("splits", 0)), f"{r.virtual_s:.1f}",
                      "[green]ok[/]" if r.ok else f"[red]{len(r.violations)} violation(s)[/]")
        console.print(t)
    known = Counter({k: n for r in results for k, n in r.stats.items() if k.startswith("known_")})
    for name, n in sorted(known.items()):
        console.print(f"[yellow]known production bug[/] {name.removeprefix('known_')} met {n} "
                      f"times (worked around): {KNOWN_ISSUES[name.removeprefix('known_')]}")
    if not bad:
        if cfg.bugs:
            console.print(f"[bold yellow]The planted bug went unnoticed[/] in {len(results)} "
                          "seeds: try more with --seeds.")
        else:
            console.print(f"[bold green]No violation[/] in {len(results)} seeds.")
        return 0
    first = bad[0]
    console.print(f"[bold red]{len(bad)} seed(s) violated safety:[/] "
                  f"{', '.join(str(r.seed) for r in bad[:20])}")
    text = "\n\n".join(f"{v}\n{e}".rstrip() for v, e in zip(first.violations[:4],
                                                             first.evidence, strict=False))
    console.print(Panel(Text(text), title=f"seed {first.seed}", border_style="red"))
    console.print(f"replay: {replay_command(cfg, first.seed, bug, replay_extra)}", markup=False,
                  highlight=False, soft_wrap=True)  # (one line: a command to paste)
    console.print("last requests before the end:")
    console.print("\n".join(first.trace.splitlines()[-25:]), markup=False, highlight=False)
    return 1
