"""Bounds of the state machine. Each is a part of the replicated configuration: every replica
must run with the same limits, or the same entry could be accepted on one and refused on
another."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KVLimits:
    max_key_bytes: int = 8 * 1024
    max_value_bytes: int = 1536 * 1024  # etcd's --max-request-bytes default
    max_txn_ops: int = 128  # etcd's --max-txn-ops default
    max_leases: int = 100_000
    max_sessions: int = 10_000
    quota_bytes: int = 2 * 1024**3  # etcd's --quota-backend-bytes default; 0 = no quota

    def __post_init__(self) -> None:
        for name in self.__slots__:  # type: ignore[attr-defined]
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 0):
                raise ValueError(f"KVLimits.{name} must be an int >= 0, got {value!r}")
