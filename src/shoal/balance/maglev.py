"""Maglev hashing (Eisenbud et al., NSDI 2016, §3.4): a lookup table of prime size M filled
by each backend's own permutation of the slots; lookup is one modulo and one index.

Weights follow Envoy's variant: a backend takes a turn filling a slot only as often as its
weight allows relative to the heaviest. A membership change moves a little more than the
ideal 1/N of keys (the paper's trade-off for even balance and O(1) lookup)."""

from __future__ import annotations

from collections.abc import Sequence

from .base import Backend
from .hashing import HashPicker, key_hash, mix64

DEFAULT_TABLE_SIZE = 65537  # the paper's small table size; prime, >> backends


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n**0.5) + 1))


def build_table(backends: Sequence[Backend], size: int) -> list[int]:
    """Slot -> index into `backends`. Every slot is filled: the heaviest backend takes a turn
    each round, so this ends within `size` rounds."""
    offsets, skips = [], []
    for b in backends:
        h = key_hash(b.id)
        offsets.append(h % size)
        skips.append(mix64(h) % (size - 1) + 1)  # in [1, size-1]: coprime with a prime size
    weights = [b.weight for b in backends]
    heaviest = max(weights)
    turns_due = [0] * len(backends)  # weighted turns: compared against round × weight
    tried = [0] * len(backends)  # how far along its permutation each backend is
    table = [-1] * size
    filled = 0
    round_ = 0
    while True:
        for i in range(len(backends)):
            if round_ * weights[i] < turns_due[i]:
                continue
            turns_due[i] += heaviest
            slot = (offsets[i] + tried[i] * skips[i]) % size
            while table[slot] >= 0:
                tried[i] += 1
                slot = (offsets[i] + tried[i] * skips[i]) % size
            table[slot] = i
            tried[i] += 1
            filled += 1
            if filled == size:
                return table
        round_ += 1


class MaglevPicker(HashPicker):
    name = "maglev"

    def __init__(
        self, backends: Sequence[Backend], *, table_size: int = DEFAULT_TABLE_SIZE
    ) -> None:
        if not (isinstance(table_size, int) and is_prime(table_size)):
            raise ValueError(f"maglev table_size must be a prime, got {table_size!r}")
        self._size = table_size
        super().__init__(backends)

    def _check(self, backends: tuple[Backend, ...]) -> None:
        if len(backends) > self._size:
            raise ValueError(
                f"maglev table_size {self._size} is smaller than {len(backends)} backends"
            )

    def _rebuild(self) -> None:
        # Filling in id order makes the table independent of the order backends are listed in.
        ordered = sorted(self._backends, key=lambda b: b.id)
        self._table = [ordered[i] for i in build_table(ordered, self._size)]

    def pick_hash(self, h: int) -> Backend:
        return self._table[h % self._size]
