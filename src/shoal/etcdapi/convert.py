"""etcd protobuf messages to Shoal's kv requests and back. Checks what etcd's v3rpc layer
checks before proposing (empty keys, value/lease with ignore_*, txn size), with its errors."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from ..kv import keyvalue as kvmod
from ..kv import requests as r
from ..kv.errors import ErrTooManyOps
from . import errors as E
from .pb import kv_pb2, rpc_pb2

MAX_TXN_OPS = 128  # etcd's --max-txn-ops default; also KVLimits.max_txn_ops
RESPONSE_SLICE = 2000  # keys put into a range response between two turns of the loop


def _nn(v: int) -> int:
    return v if v > 0 else 0


def range_request(m: rpc_pb2.RangeRequest) -> r.RangeRequest:
    if not m.key:
        raise E.EMPTY_KEY
    return r.RangeRequest(
        key=m.key, range_end=m.range_end, limit=_nn(m.limit), revision=_nn(m.revision),
        sort_order=r.SortOrder(m.sort_order) if m.sort_order in (0, 1, 2) else r.SortOrder.NONE,
        sort_target=r.SortTarget(m.sort_target) if 0 <= m.sort_target <= 4 else r.SortTarget.KEY,
        keys_only=m.keys_only, count_only=m.count_only,
        min_mod_revision=_nn(m.min_mod_revision), max_mod_revision=_nn(m.max_mod_revision),
        min_create_revision=_nn(m.min_create_revision),
        max_create_revision=_nn(m.max_create_revision))


def put_request(m: rpc_pb2.PutRequest) -> r.PutRequest:
    if not m.key:
        raise E.EMPTY_KEY
    if m.ignore_value and m.value:
        raise E.VALUE_PROVIDED
    if m.ignore_lease and m.lease:
        raise E.LEASE_PROVIDED
    if m.lease < 0:
        raise E.LEASE_NOT_FOUND
    return r.PutRequest(m.key, m.value, m.lease, m.prev_kv, m.ignore_value, m.ignore_lease)


def delete_request(m: rpc_pb2.DeleteRangeRequest) -> r.DeleteRangeRequest:
    if not m.key:
        raise E.EMPTY_KEY
    return r.DeleteRangeRequest(m.key, m.range_end, m.prev_kv)


def compare(m: rpc_pb2.Compare) -> r.Compare:
    if not m.key:
        raise E.EMPTY_KEY
    target = r.CompareTarget(m.target) if 0 <= m.target <= 4 else None
    if target is None or not 0 <= m.result <= 3:
        raise E.EtcdError(E.C.INVALID_ARGUMENT, "etcdserver: unknown compare target or result")
    operand: int | bytes
    if target == r.CompareTarget.VALUE:
        operand = m.value
    else:
        operand = {r.CompareTarget.VERSION: m.version, r.CompareTarget.CREATE: m.create_revision,
                   r.CompareTarget.MOD: m.mod_revision, r.CompareTarget.LEASE: m.lease}[target]
    return r.Compare(m.key, target, r.CompareResult(m.result), operand, m.range_end)


def op(m: rpc_pb2.RequestOp) -> r.Op:
    kind = m.WhichOneof("request")
    if kind == "request_range":
        return range_request(m.request_range)
    if kind == "request_put":
        return put_request(m.request_put)
    if kind == "request_delete_range":
        return delete_request(m.request_delete_range)
    if kind == "request_txn":
        return _txn(m.request_txn)
    raise E.EtcdError(E.C.INVALID_ARGUMENT, "etcdserver: a txn operation has no request")


def txn_request(m: rpc_pb2.TxnRequest) -> r.TxnRequest:
    # Sized on the protobuf, before converting a single op: a txn of 128 nested txns of 128
    # ranges each is refused at once, not after building 16k requests.
    try:
        r.check_txn_size(m, MAX_TXN_OPS, _nested)
    except ErrTooManyOps:
        raise E.TOO_MANY_OPS from None
    return _txn(m)


def _nested(o: rpc_pb2.RequestOp) -> rpc_pb2.TxnRequest | None:
    return o.request_txn if o.WhichOneof("request") == "request_txn" else None


def _txn(m: rpc_pb2.TxnRequest) -> r.TxnRequest:
    return r.TxnRequest(tuple(compare(c) for c in m.compare), tuple(op(o) for o in m.success),
                        tuple(op(o) for o in m.failure))


# --- responses --------------------------------------------------------------------------


def keyvalue(kv: kvmod.KeyValue) -> kv_pb2.KeyValue:
    return kv_pb2.KeyValue(key=kv.key, create_revision=kv.create_revision,
                           mod_revision=kv.mod_revision, version=kv.version, value=kv.value,
                           lease=kv.lease)


def event(ev: kvmod.Event) -> kv_pb2.Event:
    out = kv_pb2.Event(type=int(ev.type), kv=keyvalue(ev.kv))  # type: ignore[arg-type]
    if ev.prev_kv is not None:
        out.prev_kv.CopyFrom(keyvalue(ev.prev_kv))
    return out


def range_response(resp: r.RangeResponse, header: rpc_pb2.ResponseHeader) -> rpc_pb2.RangeResponse:
    out = rpc_pb2.RangeResponse(header=header, more=resp.more, count=resp.count)
    _add_keyvalues(out.kvs, resp.kvs)
    return out


async def range_response_sliced(resp: r.RangeResponse,
                                header: rpc_pb2.ResponseHeader) -> rpc_pb2.RangeResponse:
    """range_response, built RESPONSE_SLICE keys at a time with the loop let run between
    slices: 100k keys took 0.3-0.6 s of CPU in one go, enough to miss a heartbeat."""
    out = rpc_pb2.RangeResponse(header=header, more=resp.more, count=resp.count)
    for i in range(0, len(resp.kvs), RESPONSE_SLICE):
        if i:
            await asyncio.sleep(0)
        _add_keyvalues(out.kvs, resp.kvs[i:i + RESPONSE_SLICE])
    return out


def _add_keyvalues(field: Any, kvs: Sequence[kvmod.KeyValue]) -> None:
    add = field.add  # in place: building messages and copying them in costs twice as much
    for kv in kvs:
        add(key=kv.key, create_revision=kv.create_revision, mod_revision=kv.mod_revision,
            version=kv.version, value=kv.value, lease=kv.lease)


def put_response(resp: r.PutResponse, header: rpc_pb2.ResponseHeader) -> rpc_pb2.PutResponse:
    out = rpc_pb2.PutResponse(header=header)
    if resp.prev_kv is not None:
        out.prev_kv.CopyFrom(keyvalue(resp.prev_kv))
    return out


def delete_response(resp: r.DeleteRangeResponse,
                    header: rpc_pb2.ResponseHeader) -> rpc_pb2.DeleteRangeResponse:
    return rpc_pb2.DeleteRangeResponse(header=header, deleted=resp.deleted,
                                       prev_kvs=[keyvalue(k) for k in resp.prev_kvs])


def txn_response(resp: r.TxnResponse, header: rpc_pb2.ResponseHeader) -> rpc_pb2.TxnResponse:
    out = rpc_pb2.TxnResponse(header=header, succeeded=resp.succeeded)
    for sub in resp.responses:
        out.responses.append(response_op(sub, header))
    return out


def response_op(sub: Any, header: rpc_pb2.ResponseHeader) -> rpc_pb2.ResponseOp:
    if isinstance(sub, r.RangeResponse):
        return rpc_pb2.ResponseOp(response_range=range_response(sub, header))
    if isinstance(sub, r.PutResponse):
        return rpc_pb2.ResponseOp(response_put=put_response(sub, header))
    if isinstance(sub, r.DeleteRangeResponse):
        return rpc_pb2.ResponseOp(response_delete_range=delete_response(sub, header))
    return rpc_pb2.ResponseOp(response_txn=txn_response(sub, header))
