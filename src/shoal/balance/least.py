"""Load-aware pickers that count in-flight requests: least connections (a full scan, nginx's
least_conn) and least request (Envoy's power of two random choices)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from itertools import chain

from .base import Backend, Request, two_choices
from .slowstart import WeightedPicker


def connection_load(inflight: int, weight: int) -> float:
    """In-flight requests per unit of weight, counting the one about to be sent."""
    return (inflight + 1) / weight


class LeastConnectionsPicker(WeightedPicker):
    """The backend with the fewest in-flight requests per weight; ties go round robin so an
    idle cluster is not served by its first backend alone."""

    name = "least-connections"

    def __init__(self, backends: Sequence[Backend], *, warmup_s: float = 0.0) -> None:
        self._start = 0
        super().__init__(backends, warmup_s=warmup_s)

    def pick(self, request: Request) -> Backend:
        weights = self.weights(request.now)
        inflight = self._inflight
        loads = [
            connection_load(inflight[b.id], w)
            for b, w in zip(self._backends, weights, strict=True)
        ]
        least = min(loads)
        n = len(loads)
        start = self._start % n
        self._start = start + 1
        best = next(i for i in chain(range(start, n), range(start)) if loads[i] == least)
        return self._backends[best]


class LeastRequestPicker(WeightedPicker):
    """Envoy's least request: of two distinct random backends, the one with fewer in-flight
    requests per weight. O(1) per pick, and it avoids the herd a full scan causes when many
    clients see the same least-loaded backend."""

    name = "least-request"

    def __init__(
        self, backends: Sequence[Backend], *, rng: random.Random, warmup_s: float = 0.0
    ) -> None:
        self._rng = rng
        super().__init__(backends, warmup_s=warmup_s)

    def pick(self, request: Request) -> Backend:
        weights = self.weights(request.now)
        i, j = two_choices(self._rng, len(self._backends))
        a, b = self._backends[i], self._backends[j]
        if connection_load(self._inflight[b.id], weights[j]) < connection_load(
            self._inflight[a.id], weights[i]
        ):
            return b
        return a
