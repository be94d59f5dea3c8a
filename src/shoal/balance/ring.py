"""A ketama-style hash ring and the ring-hash picker.

Each backend owns points on a 64-bit circle, as many as its weight asks for; a key belongs to
the first point clockwise from its hash. Removing a backend moves only the keys it owned,
adding one moves only the keys it takes: about 1/N of them either way."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from .base import DEFAULT_WEIGHT, Backend
from .hashing import HashPicker, key_hash

DEFAULT_REPLICAS = 160  # points per backend of default weight, as in libketama (40 × 4)


class Ring:
    def __init__(self, backends: Sequence[Backend], replicas: int) -> None:
        if not (isinstance(replicas, int) and replicas >= 1):
            raise ValueError(f"replicas must be an int >= 1, got {replicas!r}")
        # Sorting ties by id keeps the ring independent of the order backends are listed in.
        points = sorted(
            (key_hash(f"{b.id}#{k}"), b.id, i)
            for i, b in enumerate(backends)
            for k in range(max(1, round(replicas * b.weight / DEFAULT_WEIGHT)))
        )
        self.points = [p for p, _, _ in points]
        self.owners = [i for _, _, i in points]

    def owner(self, h: int) -> int:
        """Index of the backend owning hash `h`."""
        k = bisect_left(self.points, h)
        return self.owners[k if k < len(self.points) else 0]

    def walk(self, h: int) -> Iterator[int]:
        """Each backend index once, in clockwise order from `h`: the fallbacks, in order."""
        start = bisect_left(self.points, h)
        n = len(self.points)
        seen: set[int] = set()
        for k in range(start, start + n):
            i = self.owners[k % n]
            if i not in seen:
                seen.add(i)
                yield i


class RingHashPicker(HashPicker):
    name = "ring-hash"

    def __init__(self, backends: Sequence[Backend], *, replicas: int = DEFAULT_REPLICAS) -> None:
        self._replicas = replicas
        super().__init__(backends)

    def _rebuild(self) -> None:
        self._ring = Ring(self._backends, self._replicas)

    def pick_hash(self, h: int) -> Backend:
        return self._backends[self._ring.owner(h)]
