"""Random and weighted random choice."""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

from .base import Backend, Picker, Request
from .slowstart import WeightedPicker


def weighted_index(rng: random.Random, cumulative: Sequence[int]) -> int:
    """Index i with probability proportional to its weight, given the running sums of weights."""
    return bisect_right(cumulative, rng.randrange(cumulative[-1]))


class RandomPicker(Picker):
    """Uniform choice; ignores weights."""

    name = "random"

    def __init__(self, backends: Sequence[Backend], *, rng: random.Random) -> None:
        self._rng = rng
        super().__init__(backends)

    def pick(self, request: Request) -> Backend:
        return self._backends[self._rng.randrange(len(self._backends))]


class WeightedRandomPicker(WeightedPicker):
    """Choice proportional to (slow-start) weight."""

    name = "weighted-random"

    def __init__(
        self, backends: Sequence[Backend], *, rng: random.Random, warmup_s: float = 0.0
    ) -> None:
        self._rng = rng
        super().__init__(backends, warmup_s=warmup_s)

    def _rebuild(self) -> None:
        super()._rebuild()
        self._full_cumulative = list(accumulate(self._full_weights))

    def pick(self, request: Request) -> Backend:
        if self.all_warm(request.now):
            cumulative = self._full_cumulative
        else:
            cumulative = list(accumulate(self.weights(request.now)))
        return self._backends[weighted_index(self._rng, cumulative)]
