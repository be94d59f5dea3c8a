"""A circuit breaker per backend: closed → open → half-open → closed.

Closed: requests flow; `failure_threshold` consecutive failures open it. Open: nothing is
sent for `open_s`, which gives a struggling backend room to recover instead of a retry storm.
Half-open: at most `half_open_probes` requests at a time test it; `success_threshold`
successes close it, any failure opens it again.

Pure: time arrives as `now`; no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    failure_threshold: int = 5
    open_s: float = 5.0
    half_open_probes: int = 1
    success_threshold: int = 1

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.half_open_probes < 1 or self.success_threshold < 1:
            raise ValueError("breaker thresholds and probes must be >= 1")
        if self.open_s <= 0:
            raise ValueError("breaker open_s must be > 0")


class CircuitBreaker:
    def __init__(self, config: BreakerConfig | None = None):
        self.config = config or BreakerConfig()
        self._state = BreakerState.CLOSED
        self._failures = 0  # consecutive, while closed
        self._successes = 0  # while half-open
        self._probes = 0  # half-open requests in flight
        self._opened_at = 0.0

    def state(self, now: float) -> BreakerState:
        if self._state is BreakerState.OPEN and now >= self._opened_at + self.config.open_s:
            self._state, self._successes, self._probes = BreakerState.HALF_OPEN, 0, 0
        return self._state

    def allow(self, now: float) -> bool:
        """May a request go now? In half-open this takes one of the probe slots, so every
        True must be followed by exactly one on_success, on_failure or on_cancel."""
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN or self._probes >= self.config.half_open_probes:
            return False
        self._probes += 1
        return True

    def on_success(self, now: float) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._probes = max(0, self._probes - 1)
            self._successes += 1
            if self._successes >= self.config.success_threshold:
                self._state, self._failures = BreakerState.CLOSED, 0
        else:
            self._failures = 0

    def on_failure(self, now: float) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._open(now)
        elif self._state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.config.failure_threshold:
                self._open(now)

    def on_cancel(self) -> None:
        """A request allowed by `allow` ended without a verdict (the caller gave up)."""
        if self._state is BreakerState.HALF_OPEN:
            self._probes = max(0, self._probes - 1)

    def _open(self, now: float) -> None:
        self._state, self._opened_at, self._failures = BreakerState.OPEN, now, 0
