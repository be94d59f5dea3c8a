"""Consistent hashing with bounded loads (Mirrokni, Thorup & Zadimoghaddam, SODA 2018).

A key goes to its ring owner unless that backend already holds its capacity,
ceil((1 + eps) × mean load) counting the request being placed; then it walks the ring
clockwise to the first backend with room. No backend ever exceeds the bound, and keys stay
put while their backend has room."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .base import Backend
from .hashing import HashPicker
from .ring import DEFAULT_REPLICAS, Ring


class BoundedLoadPicker(HashPicker):
    name = "bounded-load"

    def __init__(
        self,
        backends: Sequence[Backend],
        *,
        eps: float = 0.25,  # HAProxy's hash-balance-factor 125
        replicas: int = DEFAULT_REPLICAS,
    ) -> None:
        if not eps > 0:
            raise ValueError(f"bounded-load eps must be > 0, got {eps!r}")
        self._eps = eps
        self._replicas = replicas
        super().__init__(backends)

    def _rebuild(self) -> None:
        self._ring = Ring(self._backends, self._replicas)
        self._total_weight = sum(b.weight for b in self._backends)

    def capacity(self, backend: Backend, load: int) -> int:
        """Most requests `backend` may hold when the cluster holds `load` (mean weighted)."""
        return math.ceil((1 + self._eps) * load * backend.weight / self._total_weight)

    def pick_hash(self, h: int) -> Backend:
        load = self._total_inflight + 1
        for i in self._ring.walk(h):
            backend = self._backends[i]
            if self._inflight[backend.id] < self.capacity(backend, load):
                return backend
        # Capacities sum to at least (1 + eps) × load > current load, so someone has room.
        raise AssertionError("bounded-load: no backend below capacity")
