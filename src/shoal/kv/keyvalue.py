"""The values the store holds and emits: etcd's mvccpb.KeyValue and mvccpb.Event, and its
range conventions (range_end empty = one key, b"\\0" = every key >= key, else [key, range_end))."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

ALL_KEYS = b"\0"  # as range_end: no upper bound
RESERVED = b"\xff\xfe/shoal/"  # Shoal's own state; no client request reaches it (auth/reserved.py)


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One version of a key. A tombstone (the kv of a DELETE event) has version 0 and only key
    and mod_revision set, as in etcd."""

    key: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    value: bytes = b""
    lease: int = 0

    @property
    def tombstone(self) -> bool:
        return self.version == 0


class EventType(IntEnum):
    PUT = 0
    DELETE = 1


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None  # the version this event replaced, if it was live


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with `prefix` (etcd's GetPrefixRangeEnd):
    the prefix with its last byte below 0xff incremented and the rest dropped. A prefix with no
    such byte (b"" or all 0xff) has no upper bound: ALL_KEYS."""
    for i in range(len(prefix) - 1, -1, -1):
        if prefix[i] < 0xFF:
            return prefix[:i] + bytes((prefix[i] + 1,))
    return ALL_KEYS


def in_range(key: bytes, start: bytes, range_end: bytes) -> bool:
    if range_end == b"":
        return key == start
    if range_end == ALL_KEYS:
        return key >= start
    return start <= key < range_end
