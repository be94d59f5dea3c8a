"""Jump consistent hash (Lamping & Veach 2014): no table, no memory, and growing from N to
N+1 buckets moves exactly 1/(N+1) of keys. Buckets are numbered, so backends are the list in
the order given: only adding or removing at the end is cheap. Removing a backend in the middle
renumbers those after it — use it for numbered shards, not for an arbitrary pool."""

from __future__ import annotations

from .base import Backend
from .hashing import M64, HashPicker


def jump_hash(key: int, buckets: int) -> int:
    """Bucket in [0, buckets) for a 64-bit key; the paper's figure 1, line for line."""
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & M64
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b


class JumpPicker(HashPicker):
    name = "jump"

    def _check(self, backends: tuple[Backend, ...]) -> None:
        weights = {b.weight for b in backends}
        if len(weights) > 1:
            raise ValueError(f"jump hash cannot weight backends; got weights {sorted(weights)}")

    def pick_hash(self, h: int) -> Backend:
        return self._backends[jump_hash(h, len(self._backends))]
