"""Passive outlier ejection, with Envoy's semantics (consecutive-errors detector).

A backend that fails `consecutive_failures` requests in a row is ejected for
`base_ejection_s × k`, where k counts its ejections and shrinks by one for every
`interval_s` it then spends un-ejected, capped at `max_ejection_s`: a backend that keeps
failing stays out longer each time, one that recovers is soon forgiven. At most
`max_ejection_percent` of the backends are ejected at once (but at least one when there are
two or more, as Envoy does, and never the last), so a bad signal cannot empty a service.

Pure: time arrives as `now`; no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OutlierConfig:
    consecutive_failures: int = 5
    base_ejection_s: float = 30.0
    max_ejection_s: float = 300.0
    interval_s: float = 10.0
    max_ejection_percent: float = 10.0

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1:
            raise ValueError("consecutive_failures must be >= 1")
        if not 0 < self.base_ejection_s <= self.max_ejection_s:
            raise ValueError("need 0 < base_ejection_s <= max_ejection_s")
        if self.interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        if not 0 <= self.max_ejection_percent <= 100:
            raise ValueError("max_ejection_percent must be in 0..100")


@dataclass(slots=True)
class _Host:
    failures: int = 0  # consecutive
    multiplier: int = 0  # ejections not yet forgiven
    ejected_until: float | None = None
    forgiven_at: float = 0.0  # when the multiplier was last decayed


class OutlierDetector:
    def __init__(self, config: OutlierConfig | None = None):
        self.config = config or OutlierConfig()
        self._hosts: dict[str, _Host] = {}
        self._ejected: set[str] = set()
        self.ejections = 0  # total, for metrics
        self.next_expiry = math.inf  # the earliest ejected_until, so callers can skip sweeps

    def update(self, backend_ids: list[str]) -> None:
        """The current membership; state of surviving backends carries over."""
        self._hosts = {b: self._hosts.get(b) or _Host() for b in backend_ids}
        self._ejected &= set(backend_ids)
        self._recompute_expiry()

    def on_result(self, backend_id: str, ok: bool, now: float) -> bool:
        """Record one request outcome; True if it ejected the backend."""
        host = self._hosts.get(backend_id)
        if host is None:
            return False
        if ok:
            host.failures = 0
            return False
        host.failures += 1
        if host.failures < self.config.consecutive_failures or backend_id in self._ejected:
            return False
        self.sweep(now)
        if len(self._ejected) >= self._max_ejected():
            return False  # over the cap: leave it in, keep counting
        self._decay(host, now)
        host.multiplier += 1
        duration = min(self.config.base_ejection_s * host.multiplier, self.config.max_ejection_s)
        host.ejected_until = now + duration
        host.failures = 0
        self._ejected.add(backend_id)
        self.ejections += 1
        self.next_expiry = min(self.next_expiry, host.ejected_until)
        return True

    def sweep(self, now: float) -> bool:
        """Return backends whose ejection has run out; True if any came back."""
        if now < self.next_expiry:
            return False
        back = [b for b in self._ejected if self._hosts[b].ejected_until <= now]  # type: ignore[operator]
        for b in back:
            host = self._hosts[b]
            host.forgiven_at, host.ejected_until = host.ejected_until or now, None
            self._ejected.discard(b)
        self._recompute_expiry()
        return bool(back)

    def ejected(self) -> frozenset[str]:
        """The ejected set as of the last `sweep`/`on_result`."""
        return frozenset(self._ejected)

    def ejection_multiplier(self, backend_id: str) -> int:
        return self._hosts[backend_id].multiplier

    def _decay(self, host: _Host, now: float) -> None:
        steps = int((now - host.forgiven_at) // self.config.interval_s)
        if steps > 0:
            host.multiplier = max(0, host.multiplier - steps)
            host.forgiven_at += steps * self.config.interval_s

    def _max_ejected(self) -> int:
        n = len(self._hosts)
        if n < 2:
            return 0
        return max(1, min(n - 1, int(n * self.config.max_ejection_percent / 100)))

    def _recompute_expiry(self) -> None:
        self.next_expiry = min((self._hosts[b].ejected_until or math.inf for b in self._ejected),
                               default=math.inf)
