"""Throughput of fsync'd Readys: `python -m shoal.storage.bench`.

Saves Readys of `--entries` entries of `--size` bytes (plus a hard state), each with
must_sync, and compares with the floor for the same bytes: one os.write and one fdatasync
of an equally long buffer per batch. The ratio is what our encoding and bookkeeping cost."""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from ..consensus.messages import Entry, HardState, Ready
from .storage import Storage


def run_storage(dir: Path, readys: int, entries: int, size: int) -> tuple[float, int]:
    """Seconds for `readys` synced saves, and the WAL bytes written."""
    payload = os.urandom(size)
    storage, _ = Storage.open(dir, cluster_id=1, node_id=1)
    with storage:
        before = storage.size_bytes()
        start = time.perf_counter()
        for r in range(readys):
            first = r * entries + 1
            batch = [Entry(1, first + k, data=payload) for k in range(entries)]
            storage.save(Ready(hard_state=HardState(1, 1, first), entries=batch, must_sync=True))
        elapsed = time.perf_counter() - start
        return elapsed, storage.size_bytes() - before


def run_raw(path: Path, readys: int, batch_bytes: int) -> float:
    buf = os.urandom(batch_bytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        start = time.perf_counter()
        for _ in range(readys):
            os.write(fd, buf)
            os.fdatasync(fd)
        return time.perf_counter() - start
    finally:
        os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readys", type=int, default=300)
    ap.add_argument("--entries", type=int, default=100)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5, help="report the median run")
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = ap.parse_args()
    ours, raw = [], []
    batch_bytes = 0
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(dir=args.dir) as d:
            if run % 2 and batch_bytes:  # alternate who goes first: the disk warms up
                raw.append(run_raw(Path(d) / "raw", args.readys, batch_bytes))
            secs, written = run_storage(Path(d) / "data", args.readys, args.entries, args.size)
            ours.append(secs)
            batch_bytes = written // args.readys
            if not run % 2:
                raw.append(run_raw(Path(d) / "raw", args.readys, batch_bytes))
    s, r = statistics.median(ours), statistics.median(raw)
    print(f"{args.readys} Readys x {args.entries} entries x {args.size} B, fsync per Ready, "
          f"median of {args.runs}")
    print(f"shoal.storage : {args.readys / s:8.0f} Readys/s {args.readys * args.entries / s:10.0f} "
          f"entries/s")
    print(f"write+fdatasync: {args.readys / r:8.0f} Readys/s {args.readys * args.entries / r:10.0f} "
          f"entries/s (same bytes, no encoding)")
    print(f"ratio shoal/raw: {r / s:.2f}")


if __name__ == "__main__":
    main()
