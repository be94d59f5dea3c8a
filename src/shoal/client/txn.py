"""Builders for transactions, named as etcd's Python clients name theirs (put, get, delete for
the ops; the compared field for the comparisons), so a compare-and-set reads as one line:

    await client.txn([txn.value_equals(b"k", old)], [txn.put(b"k", new)], [txn.get(b"k")])

Anything they do not cover is a Compare (or a request) built directly."""

from __future__ import annotations

from ..kv import prefix_end
from ..kv.requests import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
)


def value_equals(key: bytes, value: bytes) -> Compare:
    """Holds when `key` exists with this value."""
    return Compare(key, CompareTarget.VALUE, CompareResult.EQUAL, value)


def version_equals(key: bytes, version: int) -> Compare:
    """Holds when `key` has been written `version` times since it was created; 0: it does not
    exist."""
    return Compare(key, CompareTarget.VERSION, CompareResult.EQUAL, version)


def mod_revision_equals(key: bytes, revision: int) -> Compare:
    """Holds when `key` was last written at `revision` (0: it does not exist)."""
    return Compare(key, CompareTarget.MOD, CompareResult.EQUAL, revision)


def absent(key: bytes) -> Compare:
    """Holds when `key` does not exist (etcd's `CreateRevision(key) == 0`)."""
    return Compare(key, CompareTarget.CREATE, CompareResult.EQUAL, 0)


def put(key: bytes, value: bytes, *, lease: int = 0, prev_kv: bool = False) -> PutRequest:
    return PutRequest(key, value, lease=lease, prev_kv=prev_kv)


def get(key: bytes, *, prefix: bool = False, limit: int = 0) -> RangeRequest:
    return RangeRequest(key, prefix_end(key) if prefix else b"", limit)


def delete(key: bytes, *, prefix: bool = False, prev_kv: bool = False) -> DeleteRangeRequest:
    return DeleteRangeRequest(key, prefix_end(key) if prefix else b"", prev_kv)
