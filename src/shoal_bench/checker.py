"""`shoal check` beside Porcupine, the Go linearizability checker, on the same histories.

    python -m shoal_bench.checker [--ops 10000,100000] [--repeat 3] [--json]

Each history comes from `shoal.check.generate.random_history` (10 processes, 5 keys, 5% of
operations with unknown outcome) and is written once to a file; a "stale" variant ends with one
read of an overwritten value, so both checkers must search and say no, and a third is that
stale variant of a history whose every outcome is known. Porcupine, given an unknown outcome
the usual way (the operation returns at the end of the history), explores the orders of the
ones still open when a search fails; Shoal's checker keeps them apart and prunes them. Both
run as their own process on the file, alternately, `repeat` times:
- Shoal: `load_operations` then `check_operations`, what `shoal check FILE` runs, without the
  interpreter's start-up (timed inside the process);
- Porcupine: tools/porcupine (the library at a pinned commit, and a reader of Shoal's format),
  built here with Debian's Go, timed inside its process too.
Each side reports the whole check (reading the file included) and the search alone, in wall
time inside its process, and the CPU time of its whole process (start-up included); the table
quotes medians and Shoal's time over Porcupine's. Both use one core, and the same time limit
and memory cap (a checker that passes either is "undecided" or "out of memory" at that time).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from shoal.check.generate import random_history
from shoal.check.history import Event, dump_history

from .debian import ensure

TOOL = Path(__file__).resolve().parents[2] / "tools" / "porcupine"

_SHOAL = """
import json, sys, time
from shoal.check.history import load_operations
from shoal.check.linearizability import check_operations
start = time.perf_counter()
events, ops = load_operations(sys.argv[1])
loaded = time.perf_counter()
result = check_operations(ops, float(sys.argv[2]), int(sys.argv[3]))
done = time.perf_counter()
print(json.dumps({"verdict": result.verdict, "parse_s": loaded - start, "check_s": done - loaded}))
"""


def bench_checker(
    n_ops: int = 10_000, processes: int = 10, keys: int = 5, seed: int = 1
) -> dict[str, object]:
    """Time the in-process check of a generated linearizable history (generation untimed)."""
    from shoal.check.linearizability import check_history

    events = random_history(n_ops, processes, keys, seed)
    start = time.perf_counter()
    result = check_history(events)
    return {"ops": n_ops, "processes": processes, "keys": keys,
            "seconds": round(time.perf_counter() - start, 3), "verdict": result.verdict}


def with_stale_read(events: list[Event]) -> list[Event]:
    """`events`, then a write of a new value to a key and a read of that key returning a value
    an acknowledged write put there before: not linearizable. The stale value is one no
    operation of unknown outcome could put back later."""
    pending: dict[int, Event] = {}
    acked: dict[str, list[object]] = {}
    maybe: set[tuple[str, str]] = set()
    for e in events:
        if e.type == "invoke":
            pending[e.process] = e
            continue
        invoke = pending.pop(e.process)
        if invoke.f != "read" and e.type in ("ok", "info"):
            value = invoke.value[1] if invoke.f == "cas" else invoke.value  # type: ignore[index]
            if e.type == "ok" and invoke.f == "write":
                acked.setdefault(invoke.key, []).append(value)
            else:
                maybe.add((invoke.key, json.dumps(value)))
    maybe |= {(p.key, json.dumps(p.value[1] if p.f == "cas" else p.value))  # type: ignore[index]
              for p in pending.values() if p.f != "read"}
    key, stale = next((k, v) for k, values in sorted(acked.items()) for v in values
                      if (k, json.dumps(v)) not in maybe)
    t, process = events[-1].time + 1, max(e.process for e in events) + 1
    return [*events,
            Event(process, "invoke", "write", key, "overwritten", t),
            Event(process, "ok", "write", key, "overwritten", t + 1),
            Event(process, "invoke", "read", key, None, t + 2),
            Event(process, "ok", "read", key, stale, t + 3)]


def build_porcupine(out_dir: Path) -> Path:
    go = ensure({"go": "golang-go"})["go"]
    binary = out_dir / "porcupine-check"
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOPROXY": "off",
           "GOCACHE": str(out_dir / "gocache"), "GOPATH": str(out_dir / "gopath")}
    subprocess.run([go, "build", "-o", str(binary), "."], cwd=TOOL, env=env, check=True,
                   capture_output=True)
    return binary


def _run(cmd: list[str], max_memory: int) -> dict[str, float | str]:
    """One checker's report; a checker killed by the memory cap is "out of memory" at the
    time it took."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (max_memory, max_memory))

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=cap)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if proc.returncode != 0:
        if "out of memory" not in proc.stderr and "MemoryError" not in proc.stderr:
            raise RuntimeError(f"{cmd[0]} failed: {proc.stderr.strip()[-500:]}")
        spent = time.perf_counter() - start
        return {"verdict": "out of memory", "parse_s": 0.0, "check_s": spent, "whole_s": spent,
                "cpu_s": cpu}
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    report["whole_s"] = report["parse_s"] + report["check_s"]
    report["cpu_s"] = cpu
    return report


def compare(ops_list: list[int], repeat: int, console: Console, time_limit: float,
            max_memory: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="shoal-checker-") as tmp:
        with console.status("building Porcupine with Go..."):
            porcupine = build_porcupine(Path(tmp))
        for n in ops_list:
            base = random_history(n, 10, 5, seed=1)
            known = random_history(n, 10, 5, seed=1, info_rate=0.0)
            for name, events in (("linearizable", base), ("stale read", with_stale_read(base)),
                                 ("stale read, no info", with_stale_read(known))):
                path = Path(tmp) / f"h{n}-{name.replace(' ', '-')}.jsonl"
                dump_history(events, path)
                runs: dict[str, list[dict[str, float | str]]] = {"shoal": [], "porcupine": []}
                for i in range(repeat):
                    with console.status(f"{n:,} ops, {name}: run {i + 1}/{repeat}..."):
                        runs["shoal"].append(_run(
                            [sys.executable, "-c", _SHOAL, str(path), str(time_limit),
                             str(max_memory)], 2 * max_memory))  # its own cap is resident
                        runs["porcupine"].append(_run(
                            [str(porcupine), str(path), str(time_limit)], max_memory))
                row: dict[str, object] = {"ops": n, "history": name}
                for side, reports in runs.items():
                    verdicts = {str(r["verdict"]) for r in reports}
                    row[f"{side}_verdict"] = "/".join(sorted(verdicts))
                    for what in ("whole_s", "check_s", "cpu_s"):
                        row[f"{side}_{what}"] = statistics.median(float(r[what]) for r in reports)
                for what in ("whole_s", "check_s", "cpu_s"):
                    row[f"ratio_{what}"] = (float(row[f"shoal_{what}"]) /  # type: ignore[arg-type]
                                            float(row[f"porcupine_{what}"]))  # type: ignore[arg-type]
                rows.append(row)
    return rows


def table(rows: list[dict[str, object]], repeat: int) -> Table:
    t = Table(title=f"shoal check beside Porcupine (medians of {repeat}; ratio = Shoal / "
                    "Porcupine, lower is better)")
    for col in ("ops", "history", "verdicts", "Shoal whole s", "Porcupine whole s", "ratio",
                "Shoal search s", "Porcupine search s", "ratio ", "Shoal CPU s",
                "Porcupine CPU s", "ratio  "):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(f"{r['ops']:,}", str(r["history"]),
                  f"{r['shoal_verdict']} / {r['porcupine_verdict']}",
                  f"{r['shoal_whole_s']:.3f}", f"{r['porcupine_whole_s']:.3f}",
                  f"{r['ratio_whole_s']:.2f}x", f"{r['shoal_check_s']:.3f}",
                  f"{r['porcupine_check_s']:.3f}", f"{r['ratio_check_s']:.2f}x",
                  f"{r['shoal_cpu_s']:.3f}", f"{r['porcupine_cpu_s']:.3f}",
                  f"{r['ratio_cpu_s']:.2f}x")
    return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shoal_bench.checker", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", default="10000,100000", help="history sizes, comma-separated")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--time-limit", type=float, default=60.0,
                    help="seconds each checker may search before it is undecided")
    ap.add_argument("--max-memory-gib", type=float, default=4.0,
                    help="memory each checker may use (Shoal's --max-memory; an address-space "
                         "limit on Porcupine)")
    args = ap.parse_args(argv)
    try:
        sizes = [int(x) for x in args.ops.split(",")]
    except ValueError:
        ap.error(f"--ops must be integers separated by commas, not {args.ops!r}")
    console = Console(stderr=args.json)
    rows = compare(sizes, args.repeat, console, args.time_limit,
                   int(args.max_memory_gib * (1 << 30)))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        console.print(table(rows, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
