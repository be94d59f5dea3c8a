"""Slow start: a backend that just joined gets a weight ramping up linearly to its full weight,
so a cold cache or JIT is not flooded (Dubbo's warm-up, `AbstractLoadBalance.getWeight`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .base import Backend, Picker


def effective_weight(backend: Backend, now: float, warmup_s: float) -> int:
    """The weight at `now`: ~0 when the backend joins, its full weight `warmup_s` later."""
    start = backend.warmup_start
    if start is None or warmup_s <= 0 or now - start >= warmup_s:
        return backend.weight
    ramped = int(backend.weight * max(0.0, now - start) / warmup_s)
    return max(1, ramped)  # as in Dubbo, never 0: a cold backend still gets a trickle


class WeightedPicker(Picker):
    """A picker that honours weights, with optional slow start of `warmup_s` seconds."""

    def __init__(self, backends: Sequence[Backend], *, warmup_s: float = 0.0) -> None:
        if not warmup_s >= 0:
            raise ValueError(f"warmup_s must be >= 0 seconds, got {warmup_s!r}")
        self._warmup_s = warmup_s
        super().__init__(backends)

    def _rebuild(self) -> None:
        self._full_weights = tuple(b.weight for b in self._backends)
        starts = [b.warmup_start for b in self._backends if b.warmup_start is not None]
        # Past this instant every backend is warm and the full weights can be reused as is.
        self._warm_at = max(starts) + self._warmup_s if starts and self._warmup_s else -math.inf

    def all_warm(self, now: float) -> bool:
        return now >= self._warm_at

    def weights(self, now: float) -> tuple[int, ...]:
        """Effective weights at `now`, aligned with `self.backends`."""
        if self.all_warm(now):
            return self._full_weights
        return tuple(effective_weight(b, now, self._warmup_s) for b in self._backends)
