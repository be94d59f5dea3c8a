"""Dubbo's ShortestResponseLoadBalance: estimated response time = average successful latency
in the current window × requests in flight; the lowest estimate wins, ties by weighted random."""

from __future__ import annotations

import random
from collections.abc import Sequence
from itertools import accumulate

from .base import Backend, Request
from .random_ import weighted_index
from .slowstart import WeightedPicker


class ShortestResponsePicker(WeightedPicker):
    name = "shortest-response"

    def __init__(
        self,
        backends: Sequence[Backend],
        *,
        rng: random.Random,
        window_s: float = 30.0,  # Dubbo's slidePeriod: averages restart every window
        warmup_s: float = 0.0,
    ) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0 seconds, got {window_s!r}")
        self._rng = rng
        self._window_s = window_s
        self._window_start = 0.0
        self._elapsed: dict[str, float] = {}  # successful latency summed over the window
        self._succeeded: dict[str, int] = {}
        super().__init__(backends, warmup_s=warmup_s)

    def _rebuild(self) -> None:
        super()._rebuild()
        self._elapsed = {b.id: self._elapsed.get(b.id, 0.0) for b in self._backends}
        self._succeeded = {b.id: self._succeeded.get(b.id, 0) for b in self._backends}

    def _roll(self, now: float) -> None:
        if now - self._window_start >= self._window_s:
            self._window_start = now
            self._elapsed = dict.fromkeys(self._elapsed, 0.0)
            self._succeeded = dict.fromkeys(self._succeeded, 0)

    def estimate(self, backend_id: str) -> float:
        """Dubbo's estimate; `active` excludes the request being placed, as in Dubbo."""
        done = self._succeeded[backend_id]
        average = self._elapsed[backend_id] / done if done else 0.0
        return average * self._inflight[backend_id]

    def pick(self, request: Request) -> Backend:
        self._roll(request.now)
        estimates = [self.estimate(b.id) for b in self._backends]
        shortest = min(estimates)
        ties = [i for i, e in enumerate(estimates) if e == shortest]
        if len(ties) == 1:
            return self._backends[ties[0]]
        weights = self.weights(request.now)
        chosen = weighted_index(self._rng, list(accumulate(weights[i] for i in ties)))
        return self._backends[ties[chosen]]

    def on_result(self, backend_id: str, latency_s: float, ok: bool, now: float) -> None:
        self._roll(now)
        if ok and backend_id in self._elapsed:
            self._elapsed[backend_id] += latency_s
            self._succeeded[backend_id] += 1
