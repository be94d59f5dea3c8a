"""Campaigns: many seeds of the simulated world, each ending with the linearizability check
of its client history. A failing seed is the bug report: it replays exactly."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Generator
from dataclasses import dataclass, field

from ..check import check_history
from .world import SimConfig, Violation, World


@dataclass
class SeedResult:
    seed: int
    violation: str | None = None  # "invariant: detail"
    trace: str = ""  # the last events before the violation
    committed: int = 0
    ops: int = 0
    verdict: str = ""
    seconds: float = 0.0
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.violation is None


def run_seed(seed: int, cfg: SimConfig, check_time_limit: float = 30.0,
             world: World | None = None) -> SeedResult:
    """`world`: a World of this seed and config to run (a recording one, sim/timeline.py)."""
    start = time.perf_counter()
    world = world if world is not None else World(seed, cfg)
    res = SeedResult(seed)
    try:
        world.run()
        result = check_history(world.history, time_limit=check_time_limit)
        res.verdict = result.verdict
        if result.ok is False:
            res.violation = f"linearizability: {result.explanation}"
    except Violation as v:
        res.violation = str(v)
    except AssertionError as exc:  # the core's and the replica's own assertions
        res.violation = f"assertion in core: {exc}"
    if res.violation:
        res.trace = world.trace_text()
    res.committed = max(h.replica.applied for h in world.hosts.values())
    res.ops = sum(1 for e in world.history if e.type != "invoke") + sum(
        world.stats.get(k, 0) for k in ("batches_acked", "fetches"))  # (the log workload's)
    res.stats = dict(world.stats)
    res.seconds = time.perf_counter() - start
    return res


def _run(args: tuple[int, SimConfig]) -> SeedResult:
    return run_seed(*args)


def campaign(cfg: SimConfig, seeds: range, workers: int | None = None) -> Generator[SeedResult]:
    """Yield results as seeds finish (in any order), spread over worker processes."""
    workers = workers or min(len(seeds), os.cpu_count() or 1)
    jobs = [(s, cfg) for s in seeds]
    if workers <= 1:
        yield from map(_run, jobs)
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield from pool.imap_unordered(_run, jobs, chunksize=4)
