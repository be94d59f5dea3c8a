"""The picker interface: a list of backends in, one backend per request out.

Pickers are pure: no I/O, no clock, no global randomness. Time arrives as `Request.now` and
the `now` of `on_result`; randomness comes from an injected `random.Random`. That keeps every
choice reproducible in the simulator, in tests and in the report."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

DEFAULT_WEIGHT = 100


@dataclass(frozen=True, slots=True)
class Backend:
    id: str
    address: str
    weight: int = DEFAULT_WEIGHT  # relative share; 0 = drained, never picked
    warmup_start: float | None = None  # when it joined (the clock of Request.now); None = warm

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"backend id must be a non-empty string, got {self.id!r}")
        if isinstance(self.weight, bool) or not isinstance(self.weight, int) or self.weight < 0:
            raise ValueError(f"backend {self.id!r}: weight must be an int >= 0, got {self.weight!r}")


@dataclass(frozen=True, slots=True)
class Request:
    key: str | bytes | None = None  # affinity key for the hashing pickers
    client: str | None = None  # client address: ip-hash's key, the other hashers' fallback
    now: float = 0.0  # seconds, for time-dependent pickers (slow start, latency decay)

    @property
    def hash_key(self) -> str | bytes | None:
        return self.key if self.key is not None else self.client


def check_backends(backends: Sequence[Backend]) -> tuple[Backend, ...]:
    """The pickable backends (weight > 0) in the given order, or a ValueError naming the fault."""
    if not backends:
        raise ValueError("no backends: a picker needs at least one")
    seen: set[str] = set()
    for b in backends:
        if not isinstance(b, Backend):
            raise ValueError(f"expected a Backend, got {b!r}")
        if b.id in seen:
            raise ValueError(f"duplicate backend id {b.id!r}")
        seen.add(b.id)
    live = tuple(b for b in backends if b.weight > 0)
    if not live:
        raise ValueError("every backend has weight 0 (drained): nothing to pick")
    return live


class Picker(ABC):
    """Chooses a backend per request. Callers report `on_start` when a request is sent and
    `on_finish` when it ends (in-flight counts), and `on_result` with its latency."""

    name: ClassVar[str]

    def __init__(self, backends: Sequence[Backend]) -> None:
        self._inflight: dict[str, int] = {}
        self._total_inflight = 0
        self.update(backends)

    @property
    def backends(self) -> tuple[Backend, ...]:
        """The pickable backends, in the order the picker indexes them."""
        return self._backends

    def update(self, backends: Sequence[Backend]) -> None:
        """Replace the membership; in-flight counts of surviving backends carry over.
        A rejected membership raises ValueError and leaves the picker as it was."""
        live = check_backends(backends)
        self._check(live)
        self._backends = live
        self._inflight = {b.id: self._inflight.get(b.id, 0) for b in self._backends}
        self._total_inflight = sum(self._inflight.values())
        self._rebuild()

    def _check(self, backends: tuple[Backend, ...]) -> None:  # noqa: B027 - optional hook
        """Raise ValueError if this picker cannot serve `backends`."""

    def _rebuild(self) -> None:  # noqa: B027 - optional hook, most pickers derive nothing
        """Recompute whatever a picker derives from `self._backends`."""

    @abstractmethod
    def pick(self, request: Request) -> Backend: ...

    def on_start(self, backend_id: str) -> None:
        if backend_id in self._inflight:  # a backend removed meanwhile is no longer counted
            self._inflight[backend_id] += 1
            self._total_inflight += 1

    def on_finish(self, backend_id: str) -> None:
        # 0 here means the request started before its backend was removed and re-added.
        if self._inflight.get(backend_id, 0) > 0:
            self._inflight[backend_id] -= 1
            self._total_inflight -= 1

    def on_result(  # noqa: B027 - optional hook, only latency-aware pickers listen
        self, backend_id: str, latency_s: float, ok: bool, now: float
    ) -> None:
        """A request to `backend_id` completed; latency-aware pickers learn from it."""

    def inflight(self, backend_id: str) -> int:
        return self._inflight.get(backend_id, 0)


def two_choices(rng: random.Random, n: int) -> tuple[int, int]:
    """Two distinct random indices, so the worse of the pair is never chosen when n >= 2."""
    if n == 1:
        return 0, 0
    i = rng.randrange(n)
    j = rng.randrange(n - 1)
    return i, j + (j >= i)
