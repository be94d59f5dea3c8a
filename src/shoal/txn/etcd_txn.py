"""etcd's Txn (compares, then the success or the failure ops) over keys in several shards.

In one shard it is that shard's own Txn, applied in one revision. Across shards it runs as a
transaction of the coordinator: it reads every compared key, decides the branch from what it
read, does the branch's reads and writes in the transaction, and commits; two-phase commit
validates that nothing it read changed, so the result is the one etcd's Txn would give had all
the keys been in one store. Across shards each compare and op names one key: a range would
need a lock on the keys not yet there, which the transaction layer does not take."""

from __future__ import annotations

from collections.abc import Sequence

from ..kv.keyvalue import KeyValue
from ..kv.requests import (
    Compare,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Op,
    OpResponse,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    ResponseHeader,
    TxnRequest,
    TxnResponse,
)
from ..kv.store import compare_holds
from .coordinator import Transaction, TxnClient


async def etcd_txn(sharded: TxnClient, compare: Sequence[Compare], success: Sequence[Op],
                   failure: Sequence[Op]) -> TxnResponse:
    request = TxnRequest(tuple(compare), tuple(success), tuple(failure))
    if sharded.router.revision < 0:
        await sharded.router.refresh()
    ranges = [(c.key, c.range_end) for c in compare] + [
        (op.key, getattr(op, "range_end", b"")) for op in (*success, *failure)
        if not isinstance(op, TxnRequest)]
    groups = {shard.group for key, end in ranges for shard, _, _ in
              sharded.router.map.pieces(key, end)}
    if len(groups) <= 1 and not any(isinstance(op, TxnRequest) for op in (*success, *failure)):
        key = ranges[0][0] if ranges else b""
        return await sharded.router.on_key(key, lambda c: sharded.resolving(
            lambda: c.write_request(request, TxnResponse)))
    for key, end in ranges:
        if end:
            raise ValueError(f"a txn across shards takes single keys, not the range from {key!r}")
    for op in (*success, *failure):
        if isinstance(op, TxnRequest):
            raise ValueError("a txn across shards cannot nest txns")

    async def body(tx: Transaction) -> TxnResponse:
        held = [all([await _holds(tx, c) for c in compare])]
        ops = success if held[0] else failure
        return TxnResponse(ResponseHeader(0), held[0], tuple([await _run(tx, op) for op in ops]))

    return await sharded.run(body)


async def _holds(tx: Transaction, c: Compare) -> bool:
    value = await tx.get(c.key)
    if value is None:  # etcd: a missing key never matches a value compare, and is all zeros
        return c.target != CompareTarget.VALUE and compare_holds(c, KeyValue(c.key))
    kv = tx.reads[c.key][1] if c.key in tx.reads else None
    assert kv is not None or c.key in tx.writes
    return compare_holds(c, kv if kv is not None else KeyValue(c.key, value=value, version=1))


async def _run(tx: Transaction, op: Op) -> OpResponse:
    header = ResponseHeader(0)  # (each shard has its own revisions: none is the txn's)
    if isinstance(op, PutRequest):
        tx.put(op.key, op.value)
        return PutResponse(header)
    if isinstance(op, DeleteRangeRequest):
        existed = await tx.get(op.key) is not None
        tx.delete(op.key)
        return DeleteRangeResponse(header, int(existed))
    assert isinstance(op, RangeRequest)
    value = await tx.get(op.key)
    kv = tx.reads.get(op.key, (0, None))[1]
    kvs = () if value is None else (kv if kv is not None and kv.value == value
                                    else KeyValue(op.key, value=value),)
    return RangeResponse(header, kvs, False, len(kvs))
