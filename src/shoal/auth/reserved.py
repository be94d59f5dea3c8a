"""The reserved keyspace: Shoal's own state (the auth state with its signing secret and password
hashes, the group directory) lives in the store under RESERVED_START, and no client request on
any port reads, writes, compares or watches it, whatever its permissions. The node writes it
with requests it builds itself, which never pass through here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from ..kv.keyvalue import ALL_KEYS, RESERVED, Event
from ..kv.requests import (
    DeleteRangeRequest,
    DeleteRangeResponse,
    PutRequest,
    RangeRequest,
    RangeResponse,
    TxnPrepareRequest,
    TxnRequest,
    TxnResolveRequest,
    TxnResponse,
)
from ..kv.store import KVStore
from .model import PERMISSION_DENIED

RESERVED_START = RESERVED
RESERVED_END = b"\xff\xfe/shoal0"  # the prefix's end: '/' + 1

# (key, range_end, revision) -> how many reserved keys [key, range_end) holds at that revision
# (0: now). The guard asks for that many more keys, and takes them out again.
CountHidden = Callable[[bytes, bytes, int], int]
Fix = Callable[[Any], Any]


def hidden_counter(store: KVStore) -> CountHidden:
    return lambda key, end, rev: store.range(RangeRequest(key, end, revision=rev, count_only=True)).count


def is_reserved(key: bytes) -> bool:
    return RESERVED_START <= key < RESERVED_END


def overlap(key: bytes, range_end: bytes) -> tuple[bytes, bytes] | None:
    """The part of [key, range_end) (etcd's conventions) inside the reserved span, if any."""
    if range_end == b"":
        return (key, b"") if is_reserved(key) else None
    if key >= RESERVED_END or (range_end != ALL_KEYS and range_end <= RESERVED_START):
        return None
    end = RESERVED_END if range_end == ALL_KEYS else min(range_end, RESERVED_END)
    return max(key, RESERVED_START), end


def visible_events(events: Sequence[Event]) -> list[Event]:
    return [e for e in events if not is_reserved(e.kv.key)]


def guard(op: Any, count_hidden: CountHidden) -> tuple[Any, Fix]:
    """The request to run instead of `op`, and the function that turns its response into the one
    the client asked for: puts and compares on reserved keys are refused, deletes are split
    around the span, and ranges have reserved keys taken out (counts and limits kept exact)."""
    if isinstance(op, PutRequest):
        if is_reserved(op.key):
            raise PERMISSION_DENIED
        return op, _same
    if isinstance(op, RangeRequest):
        span = overlap(op.key, op.range_end)
        if span is None:
            return op, _same
        limit = op.limit
        extra = count_hidden(*span, op.revision) if limit else 0  # room for what is taken out

        def hide(resp: RangeResponse) -> RangeResponse:
            kvs = [kv for kv in resp.kvs if not is_reserved(kv.key)]
            more = resp.more
            if limit and len(kvs) > limit:
                kvs, more = kvs[:limit], True
            hidden = count_hidden(*span, resp.header.revision)
            return replace(resp, kvs=tuple(kvs), more=more, count=max(0, resp.count - hidden))

        return (replace(op, limit=limit + extra) if limit and extra else op), hide
    if isinstance(op, DeleteRangeRequest):
        if overlap(op.key, op.range_end) is None:
            return op, _same
        if op.range_end == b"":
            raise PERMISSION_DENIED
        parts = []
        if op.key < RESERVED_START:
            parts.append(DeleteRangeRequest(op.key, RESERVED_START, op.prev_kv))
        if op.range_end == ALL_KEYS or op.range_end > RESERVED_END:
            parts.append(DeleteRangeRequest(max(op.key, RESERVED_END), op.range_end, op.prev_kv))
        return TxnRequest((), tuple(parts)), _merge_deletes
    if isinstance(op, TxnPrepareRequest | TxnResolveRequest):
        keys = [*(r.key for r in op.reads), *(w.key for w in op.writes)] \
            if isinstance(op, TxnPrepareRequest) else list(op.keys)
        if any(is_reserved(k) for k in keys):
            raise PERMISSION_DENIED
        return op, _same
    if not isinstance(op, TxnRequest):
        return op, _same  # leases, sessions, compaction, records: no keys of their own
    if any(overlap(c.key, c.range_end) is not None for c in op.compare):
        raise PERMISSION_DENIED
    succ = [guard(o, count_hidden) for o in op.success]
    fail = [guard(o, count_hidden) for o in op.failure]
    new = replace(op, success=tuple(o for o, _ in succ), failure=tuple(o for o, _ in fail))

    def fix(resp: TxnResponse) -> TxnResponse:
        fixers = [f for _, f in (succ if resp.succeeded else fail)]
        return replace(resp, responses=tuple(
            f(x) for f, x in zip(fixers, resp.responses, strict=True)))

    return new, fix


def _same(resp: Any) -> Any:
    return resp


def _merge_deletes(resp: TxnResponse) -> DeleteRangeResponse:
    parts = [r for r in resp.responses if isinstance(r, DeleteRangeResponse)]
    return DeleteRangeResponse(resp.header, sum(p.deleted for p in parts),
                               tuple(kv for p in parts for kv in p.prev_kvs))
