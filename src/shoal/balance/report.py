"""`shoal lb-report`: measure every picker's balance, disruption, lookup speed and, for the
dynamic ones, tail latency in a simulated cluster with one slow backend. Deterministic."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from .base import Backend, Picker, Request
from .bounded import BoundedLoadPicker
from .hashing import HashPicker, key_hash
from .registry import PICKERS, make_picker, options
from .rendezvous import RendezvousPicker, score
from .simulate import Cluster, simulate

SIZES = (10, 100)  # cluster sizes for balance and lookup speed
CHURN_N = 10  # cluster size for disruption: remove the last of 10, or add an 11th
KEYED = ("ip-hash", "ring-hash", "maglev", "rendezvous", "jump", "bounded-load")
BALANCED = ("random", "weighted-random", "round-robin", *KEYED)
DYNAMIC = ("random", "round-robin", "least-connections", "least-request", "peak-ewma",
           "shortest-response")
SEED = 1
CHUNK = 20_000  # keys scored at once by vectorised rendezvous: CHUNK × N floats in memory


@dataclass
class PickerRow:
    balance: dict[int, float] = field(default_factory=dict)  # N -> max/mean keys per backend
    moved_remove: float | None = None  # fraction of keys whose backend changes
    moved_add: float | None = None
    ns_per_pick: dict[int, float] = field(default_factory=dict)


@dataclass
class SimRow:
    p50_ms: float
    p99_ms: float
    slow_share: float


@dataclass
class Report:
    keys: int
    rows: dict[str, PickerRow]
    sim: dict[str, SimRow]
    cluster: Cluster


def cluster_of(n: int) -> list[Backend]:
    return [Backend(f"b{i}", f"10.0.{i // 256}.{i % 256}") for i in range(n)]


def new_picker(name: str, backends: Sequence[Backend]) -> Picker:
    opts = {"rng": random.Random(SEED)} if "rng" in options(name) else {}
    return make_picker(name, backends, **opts)


def rendezvous_many(picker: RendezvousPicker, hashes: np.ndarray) -> np.ndarray:
    """picker.pick_hash over many keys at once, with the picker's own score function."""
    seeds = np.array(picker.seeds, dtype=np.uint64)[None, :]
    weights = np.array(picker.weights, dtype=np.float64)[None, :]
    chosen = np.empty(len(hashes), dtype=np.int64)
    for s in range(0, len(hashes), CHUNK):
        scores = score(hashes[s : s + CHUNK, None], seeds, weights, log=np.log)
        chosen[s : s + CHUNK] = scores.argmax(axis=1)
    return chosen


def assign(picker: Picker, hashes: list[int], hashes_np: np.ndarray) -> np.ndarray:
    """Backend number (b<number>) for every key. Bounded-load holds every key as in flight,
    the case its bound is about; key-less pickers get one request per key."""
    number = np.array([int(b.id[1:]) for b in picker.backends])
    if isinstance(picker, RendezvousPicker):
        chosen = rendezvous_many(picker, hashes_np)
        sample = [picker.backends.index(picker.pick_hash(h)) for h in hashes[:500]]
        assert chosen[:500].tolist() == sample, "vectorised rendezvous disagrees with pick_hash"
        return number[chosen]
    index = {b.id: i for i, b in enumerate(picker.backends)}
    if isinstance(picker, BoundedLoadPicker):
        out = []
        for h in hashes:
            backend = picker.pick_hash(h)
            picker.on_start(backend.id)
            out.append(index[backend.id])
    elif isinstance(picker, HashPicker):
        out = [index[picker.pick_hash(h).id] for h in hashes]
    else:
        request = Request()
        out = [index[picker.pick(request).id] for _ in hashes]
    return number[np.array(out)]


def max_over_mean(assigned: np.ndarray, n: int) -> float:
    counts = np.bincount(assigned, minlength=n)
    return float(counts.max() / counts.mean())


def ns_per_pick(name: str, n: int, picks: int, rounds: int = 3) -> float:
    """Best of `rounds` timed passes over `picks` distinct requests: the least disturbed one."""
    picker = new_picker(name, cluster_of(n))
    requests = [
        Request(key=f"key-{i}", client=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", now=i * 1e-3)
        for i in range(picks)
    ]
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for r in requests:
            picker.pick(r)
        best = min(best, (time.perf_counter_ns() - t0) / picks)
    return best


def measure(keys: int, requests: int, picks: int, console: Console) -> Report:
    rows = {name: PickerRow() for name in PICKERS}
    cluster = Cluster(requests=requests)
    with Progress(console=console) as progress:
        hashing = progress.add_task("hashing keys", total=keys)
        hashes = []
        for start in range(0, keys, 50_000):
            hashes += [key_hash(f"key-{i}") for i in range(start, min(keys, start + 50_000))]
            progress.update(hashing, completed=len(hashes))
        hashes_np = np.array(hashes, dtype=np.uint64)

        churn = progress.add_task("balance and disruption", total=len(BALANCED) * len(SIZES) + 2 * len(KEYED))
        for name in BALANCED:
            before = {}
            for n in SIZES:
                before[n] = assign(new_picker(name, cluster_of(n)), hashes, hashes_np)
                rows[name].balance[n] = max_over_mean(before[n], n)
                progress.advance(churn)
            if name in KEYED:  # does a key stay put through churn?
                removed = assign(new_picker(name, cluster_of(CHURN_N - 1)), hashes, hashes_np)
                added = assign(new_picker(name, cluster_of(CHURN_N + 1)), hashes, hashes_np)
                rows[name].moved_remove = float(np.mean(before[CHURN_N] != removed))
                rows[name].moved_add = float(np.mean(before[CHURN_N] != added))
                progress.advance(churn, 2)

        speed = progress.add_task("lookup speed", total=len(PICKERS) * len(SIZES))
        for name in PICKERS:
            for n in SIZES:
                rows[name].ns_per_pick[n] = ns_per_pick(name, n, picks)
                progress.advance(speed)

        sim_task = progress.add_task("simulated cluster", total=len(DYNAMIC))
        sim = {}
        for name in DYNAMIC:
            outcome = simulate(name, cluster)
            p50, p99 = np.percentile(np.array(outcome.latencies) * 1e3, [50, 99])
            sim[name] = SimRow(float(p50), float(p99), outcome.slow_share)
            progress.advance(sim_task)
    return Report(keys, rows, sim, cluster)


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def tables(report: Report) -> tuple[Table, Table]:
    n = CHURN_N
    keyed = Table(
        title=f"{report.keys:,} keys: balance (max/mean keys per backend), keys moved when "
        f"1 of {n} backends is removed (−1) or an {n + 1}th added (+1), ns per pick"
    )
    keyed.add_column("picker", no_wrap=True, min_width=len("shortest-response"))
    for title in (*(f"bal N={s}" for s in SIZES), "moved −1", "moved +1",
                  *(f"ns N={s}" for s in SIZES)):
        keyed.add_column(title, justify="right")
    keyed.add_row("ideal", "1.000", "1.000", f"{1 / n:.1%}", f"{1 / (n + 1):.1%}", "", "",
                  style="dim")
    for name, row in report.rows.items():
        keyed.add_row(
            name,
            *(_fmt(row.balance.get(s), ".3f") for s in SIZES),
            _fmt(row.moved_remove, ".1%"),
            _fmt(row.moved_add, ".1%"),
            *(_fmt(row.ns_per_pick.get(s), ",.0f") for s in SIZES),
        )
    c = report.cluster
    sim = Table(
        title=f"Simulated cluster: {c.backends} backends × {c.workers} workers, "
        f"{c.rate:.0f} req/s, b0 {c.slow_factor:g}× slower, {c.requests:,} requests"
    )
    for title in ("picker", "p50 ms", "p99 ms", "sent to slow b0"):
        sim.add_column(title, justify="left" if title == "picker" else "right")
    for name, srow in report.sim.items():
        sim.add_row(name, f"{srow.p50_ms:.1f}", f"{srow.p99_ms:.1f}", f"{srow.slow_share:.1%}")
    return keyed, sim


def chart(report: Report, out: Path) -> None:
    fig = Figure(figsize=(14, 10), layout="constrained")
    FigureCanvasAgg(fig)
    (bal, churn), (speed, tail) = fig.subplots(2, 2)
    width = 0.4

    names = list(BALANCED)
    x = np.arange(len(names))
    for k, s in enumerate(SIZES):
        bal.bar(x + (k - 0.5) * width, [report.rows[m].balance[s] for m in names], width,
                label=f"N={s}")
    bal.axhline(1.0, color="gray", linestyle="--", linewidth=1)
    bal.set(title="Balance: max/mean keys per backend (1 = perfect)", xticks=x, ylim=(0.9, None))
    bal.set_xticklabels(names, rotation=30, ha="right")
    bal.legend()

    keyed = [m for m in names if report.rows[m].moved_remove is not None]
    x = np.arange(len(keyed))
    churn.bar(x - width / 2, [report.rows[m].moved_remove for m in keyed], width,
              label=f"remove 1 of {CHURN_N}")
    churn.bar(x + width / 2, [report.rows[m].moved_add for m in keyed], width,
              label=f"add an {CHURN_N + 1}th")
    churn.axhline(1 / CHURN_N, color="gray", linestyle="--", linewidth=1, label="ideal −1: 1/N")
    churn.axhline(1 / (CHURN_N + 1), color="gray", linestyle=":", linewidth=1,
                  label="ideal +1: 1/(N+1)")
    churn.set(title="Disruption: fraction of keys that move (log)", yscale="log", xticks=x)
    churn.set_xticklabels(keyed, rotation=30, ha="right")
    churn.legend()

    names = list(report.rows)
    y = np.arange(len(names))
    for k, s in enumerate(SIZES):
        speed.barh(y + (k - 0.5) * width, [report.rows[m].ns_per_pick[s] for m in names], width,
                   label=f"N={s}")
    speed.set(title="Lookup: ns per pick (log)", xscale="log", yticks=y)
    speed.set_yticklabels(names)
    speed.invert_yaxis()
    speed.legend()

    names = list(report.sim)
    x = np.arange(len(names))
    tail.bar(x - width / 2, [report.sim[m].p50_ms for m in names], width, label="p50")
    tail.bar(x + width / 2, [report.sim[m].p99_ms for m in names], width, label="p99")
    tail.set(title="Latency with one slow backend, ms (log)", yscale="log", xticks=x)
    tail.set_xticklabels(names, rotation=30, ha="right")
    tail.legend()

    fig.savefig(out, dpi=110)


def run_report(
    *,
    out: Path,
    keys: int = 1_000_000,
    requests: int = 100_000,
    picks: int = 10_000,
    console: Console | None = None,
) -> Report:
    if keys < 1000 or requests < 100 or picks < 1:
        raise ValueError(f"need keys >= 1000, requests >= 100, picks >= 1; got {keys}, "
                         f"{requests}, {picks}")
    console = console or Console()
    report = measure(keys, requests, picks, console)
    for table in tables(report):
        console.print(table)
    chart(report, out)
    console.print(f"chart written to {out}")
    return report
