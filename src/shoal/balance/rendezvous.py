"""Rendezvous, or highest random weight, hashing (Thaler & Ravishankar 1998): every backend
scores the key, the highest score wins. Weighted by the logarithmic method
(score = -w / ln u, u uniform in (0,1)), which picks each backend with probability w / Σw.
Removing a backend moves exactly its keys; O(N) per lookup."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .base import Backend
from .hashing import HashPicker, key_hash, mix64, unit


def score(h: Any, seed: Any, weight: Any, log: Callable[[Any], Any] = math.log) -> Any:
    """Score of a backend (`seed` = hash of its id) for key hash `h`. Given numpy arrays and
    log=numpy.log it scores many keys and backends at once, identically."""
    return -weight / log(unit(mix64(h ^ seed)))


class RendezvousPicker(HashPicker):
    name = "rendezvous"

    def _rebuild(self) -> None:
        self.seeds = [key_hash(b.id) for b in self._backends]
        self.weights = [b.weight for b in self._backends]

    def pick_hash(self, h: int) -> Backend:
        best, best_score = 0, -math.inf
        for i, (seed, weight) in enumerate(zip(self.seeds, self.weights, strict=True)):
            s = score(h, seed, weight)
            if s > best_score:
                best, best_score = i, s
        return self._backends[best]
