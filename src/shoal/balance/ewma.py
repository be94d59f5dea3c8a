"""Peak EWMA (Finagle's p2cPeakEwma, Linkerd's and tower's balancer): cost = latency estimate ×
(in-flight + 1), compared between two random backends."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from .base import Backend, Picker, Request, two_choices


@dataclass(slots=True)
class PeakEwma:
    """A latency estimate that jumps to any slower sample at once (the peak) and moves toward
    faster ones only gradually, so a backend turning slow is shunned immediately. Between
    samples it decays toward 0, so a shunned backend is eventually tried again."""

    rtt: float
    at: float | None = None  # when `rtt` was set; None = still the default guess

    def _decay(self, now: float, decay_s: float) -> float:
        assert self.at is not None
        return math.exp(-max(0.0, now - self.at) / decay_s)

    def value(self, now: float, decay_s: float) -> float:
        return self.rtt if self.at is None else self.rtt * self._decay(now, decay_s)

    def observe(self, rtt: float, now: float, decay_s: float) -> None:
        if self.at is None:  # a measurement beats the default guess
            self.rtt, self.at = rtt, now
            return
        decay = self._decay(now, decay_s)
        decayed = self.rtt * decay
        self.rtt = rtt if rtt > decayed else decayed + rtt * (1.0 - decay)
        self.at = max(self.at, now)


class PeakEwmaPicker(Picker):
    """Finagle's peak EWMA load with power of two choices; unweighted, as in Finagle."""

    name = "peak-ewma"

    def __init__(
        self,
        backends: Sequence[Backend],
        *,
        rng: random.Random,
        decay_s: float = 10.0,  # Finagle's and Linkerd's default decay time
        default_rtt_s: float = 0.030,  # what an unmeasured backend is assumed to cost (Linkerd)
    ) -> None:
        if not decay_s > 0:
            raise ValueError(f"decay_s must be > 0 seconds, got {decay_s!r}")
        if not default_rtt_s >= 0:
            raise ValueError(f"default_rtt_s must be >= 0 seconds, got {default_rtt_s!r}")
        self._rng = rng
        self._decay_s = decay_s
        self._default_rtt_s = default_rtt_s
        self._ewma: dict[str, PeakEwma] = {}
        super().__init__(backends)

    def _rebuild(self) -> None:
        self._ewma = {
            b.id: self._ewma.get(b.id) or PeakEwma(self._default_rtt_s) for b in self._backends
        }

    def cost(self, backend_id: str, now: float) -> float:
        rtt = self._ewma[backend_id].value(now, self._decay_s)
        return rtt * (self._inflight[backend_id] + 1)

    def pick(self, request: Request) -> Backend:
        i, j = two_choices(self._rng, len(self._backends))
        a, b = self._backends[i], self._backends[j]
        return b if self.cost(b.id, request.now) < self.cost(a.id, request.now) else a

    def on_result(self, backend_id: str, latency_s: float, ok: bool, now: float) -> None:
        # Failures count as latency samples too: ejecting fast-failing backends is the job of
        # outlier detection, not of the picker.
        ewma = self._ewma.get(backend_id)
        if ewma is not None:
            ewma.observe(latency_s, now, self._decay_s)
