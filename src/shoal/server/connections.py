"""Connections a port admits: at most `total`, and at most `per_address` from one address, so
one host's idle sockets cannot lock everyone else out. Shared by the client port and the etcd
port's front listener."""

from __future__ import annotations

from collections import Counter
from typing import Any


def peer_address(peername: Any) -> str:
    """The address part of a transport's `peername` (a unix socket's is the whole of it)."""
    return str(peername[0]) if isinstance(peername, tuple) else str(peername)


class ConnectionLimits:
    def __init__(self, total: int, per_address: int):
        assert total > 0 and per_address > 0, (total, per_address)
        self.total, self.per_address = total, per_address
        self._open: Counter[str] = Counter()
        self.count = 0
        self.refused = 0  # connections turned away at a bound (for stats and tests)

    def admit(self, address: str) -> bool:
        """Count a new connection from `address` in, unless a bound is reached."""
        if self.count >= self.total or self._open[address] >= self.per_address:
            self.refused += 1
            return False
        self._open[address] += 1
        self.count += 1
        return True

    def release(self, address: str) -> None:
        """An admitted connection from `address` has ended."""
        assert self._open[address] > 0, address
        self._open[address] -= 1
        self.count -= 1
        if not self._open[address]:
            del self._open[address]
