"""How long the checker takes on a 10,000-operation history: `python -m shoal.check.bench`."""

from __future__ import annotations

import time

from .generate import random_history
from .linearizability import check_history


def bench_checker(
    n_ops: int = 10_000, processes: int = 10, keys: int = 5, seed: int = 1
) -> dict[str, object]:
    """Time check_history on a generated linearizable history (generation is not timed)."""
    events = random_history(n_ops, processes, keys, seed)
    start = time.perf_counter()
    result = check_history(events)
    seconds = time.perf_counter() - start
    return {
        "ops": n_ops,
        "processes": processes,
        "keys": keys,
        "seconds": round(seconds, 3),
        "verdict": result.verdict,
    }


if __name__ == "__main__":
    print(bench_checker())
