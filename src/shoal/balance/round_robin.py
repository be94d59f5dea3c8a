"""Round robin, plain and nginx's smooth weighted variant."""

from __future__ import annotations

from collections.abc import Sequence

from .base import Backend, Picker, Request
from .slowstart import WeightedPicker


class RoundRobinPicker(Picker):
    """Each backend in turn; ignores weights."""

    name = "round-robin"

    def __init__(self, backends: Sequence[Backend]) -> None:
        self._next = 0
        super().__init__(backends)

    def pick(self, request: Request) -> Backend:
        n = len(self._backends)
        backend = self._backends[self._next % n]  # % n: the list may have shrunk since
        self._next = (self._next + 1) % n
        return backend


class SmoothWeightedRoundRobinPicker(WeightedPicker):
    """nginx's smooth weighted round robin (ngx_http_upstream_get_peer): every pick each backend
    earns its weight, the richest is chosen and pays the total. Weights 5,1,1 give a a b a c a a:
    the heavy backend's turns are spread out instead of bunched."""

    name = "smooth-wrr"

    def __init__(self, backends: Sequence[Backend], *, warmup_s: float = 0.0) -> None:
        self._current: list[int] = []
        self._ids: tuple[str, ...] = ()
        super().__init__(backends, warmup_s=warmup_s)

    def _rebuild(self) -> None:
        super()._rebuild()
        # Survivors keep their credit, so a membership change does not restart the cycle.
        old = dict(zip(self._ids, self._current, strict=True))
        self._ids = tuple(b.id for b in self._backends)
        self._current = [old.get(i, 0) for i in self._ids]

    def pick(self, request: Request) -> Backend:
        weights = self.weights(request.now)
        current = self._current
        best = 0
        for i, w in enumerate(weights):
            current[i] += w
            if current[i] > current[best]:
                best = i
        current[best] -= sum(weights)
        return self._backends[best]
