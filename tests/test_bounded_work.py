"""Bounded work per request (issue 10, finding 4 and the map-key half of finding 8): no frame,
command or range makes a node do work out of proportion to what a legal request can ask for.

The probes of the finding are each here: a client frame and a peer frame of empty arrays
(refused before they are built: memory stays small), nested txns (counted, refused), a range
over many keys (served in slices that let the loop run), a map with an array key (a protocol
error, not an unhandled exception). The last test sends the two frames to the leader of a real
3-process cluster and checks it stays leader, and that its own loop-stall figure stays small."""

from __future__ import annotations

import asyncio
import random
import socket
import tracemalloc

import msgpack
import pytest

from cluster import LocalCluster, run
from shoal.consensus.messages import RemoteProtocolError
from shoal.etcdapi import convert
from shoal.etcdapi import errors as E
from shoal.etcdapi.pb import rpc_pb2
from shoal.kv import KVStore
from shoal.kv.errors import ErrCompacted, ErrTooManyOps, MalformedRequest
from shoal.kv.keyvalue import KeyValue
from shoal.kv.limits import KVLimits
from shoal.kv.mvcc import RANGE_SLICE
from shoal.kv.requests import (
    Command,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
    RangeResponse,
    ResponseHeader,
    TxnRequest,
    decode_command,
    encode_command,
    encode_response,
    encode_response_steps,
    validate,
)
from shoal.local.cluster import LocalProcessCluster
from shoal.net import paxos_codec
from shoal.net.codec import RAFT
from shoal.wire import bounded
from shoal.wire.protocol import (
    MAX_REQUEST_DEPTH,
    MAX_REQUEST_VALUES,
    FrameTooComplex,
    ProtocolError,
    read_frame,
)

LIMITS = KVLimits()


def empty_arrays(size: int) -> bytes:
    """A msgpack array32 of empty arrays, `size` bytes in all: each byte one Python list."""
    return b"\xdd" + (size - 5).to_bytes(4, "big") + b"\x90" * (size - 5)


def nested_arrays(width: int, inner: int) -> bytes:
    """`width` arrays of `inner` empty arrays: under any per-array length bound."""
    return msgpack.packb([[[]] * inner] * width)


def peak_mb(f) -> float:
    """The most memory `f()` held at once (it is expected to raise)."""
    tracemalloc.start()
    try:
        f()
    except Exception:  # noqa: BLE001 - each caller checks the exception itself
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


# ---- the two tools ----------------------------------------------------------------------


def _count_and_depth(v: object) -> tuple[int, int]:
    if isinstance(v, list | dict):
        items = [x for kv in v.items() for x in kv] if isinstance(v, dict) else v
        inner = [_count_and_depth(x) for x in items]
        return 1 + sum(c for c, _ in inner), 1 + max((d for _, d in inner), default=-1) \
            if items else 0
    return 1, 0


def _random_value(rng: random.Random, depth: int = 0) -> object:
    r = rng.random()
    if depth > 3 or r < 0.4:
        return rng.choice([0, -1, 300, -300, 2**40, 1.5, None, True, "ab", "é" * 40, b"",
                           b"z" * 300, b"q" * 70_000, msgpack.ExtType(1, b"abc"),
                           msgpack.ExtType(2, b"a" * 20)])
    n = rng.choice([0, 1, 3, 16])
    if r < 0.7:
        return [_random_value(rng, depth + 1) for _ in range(n)]
    return {rng.randrange(1000): _random_value(rng, depth + 1) for _ in range(n)}


def test_check_shape_counts_every_value_and_level_exactly():
    rng = random.Random(10)
    for _ in range(300):
        value = _random_value(rng)
        data = msgpack.packb(value, use_bin_type=True)
        count, depth = _count_and_depth(value)
        bounded.check_shape(data, count, depth)  # exactly at the bounds: accepted
        with pytest.raises(bounded.TooComplex, match="elements"):
            bounded.check_shape(data, count - 1, depth)
        if depth:
            with pytest.raises(bounded.TooComplex, match="deeper"):
                bounded.check_shape(data, count, depth - 1)


def test_check_shape_stops_at_its_bound_whatever_the_size():
    with pytest.raises(bounded.TooComplex):
        bounded.check_shape(empty_arrays(8 << 20), 1000, 4)
    with pytest.raises(bounded.TooComplex, match="deeper than 16"):
        bounded.check_shape(b"\x91" * 1000 + b"\x90", 10_000, 16)


def test_bounded_unpackb_decodes_what_fits_and_refuses_the_rest_early():
    value = [1, [b"x", [2, 3]], {"a": [4]}]
    data = msgpack.packb(value)
    assert bounded.unpackb(data, 15, 5, max_len=4, raw=False) == value
    with pytest.raises(bounded.TooComplex):
        bounded.unpackb(data, 14, 5, max_len=4, raw=False)  # one value too many
    with pytest.raises(bounded.TooComplex):
        bounded.unpackb(data, 15, 4, max_len=4, raw=False)  # one container too many
    with pytest.raises(bounded.TooComplex, match="max_array_len"):
        bounded.unpackb(empty_arrays(8 << 20), 10**9, 10**9, max_len=65_536)


# ---- the peer codecs --------------------------------------------------------------------


@pytest.mark.parametrize("codec", [RAFT, paxos_codec.PAXOS], ids=["raft", "paxos"])
@pytest.mark.parametrize("payload", [
    empty_arrays(8 << 20),  # refused from the outer header
    nested_arrays(128, 65_536),  # every array within bounds, but 8 Mi of them
], ids=["one-array", "many-arrays"])
def test_a_peer_frame_of_empty_arrays_is_refused_in_small_memory(codec, payload):
    """It used to take 9 s and 570 MB: now the decode stops at what a legal message holds."""
    def decode():
        with pytest.raises(RemoteProtocolError, match="legal message"):
            codec.decode(payload)

    decode()
    assert peak_mb(decode) < 40


def test_a_deeply_nested_field_is_named_not_a_recursion_error():
    fields = [1, 1, 2, 0, 0, 0, [], 0, False, 0, b"", 0, None, 0, b"", False]
    deep: list = []
    for _ in range(1000):
        deep = [deep]
    fields[10] = deep  # the context, which must be bytes
    with pytest.raises(RemoteProtocolError, match="'context': expected bytes"):
        RAFT.decode(msgpack.packb(fields))


# ---- the client protocol ------------------------------------------------------------------


def read(data: bytes) -> object:
    async def main():
        reader = asyncio.StreamReader()
        reader.feed_data(len(data).to_bytes(4, "big") + data)
        reader.feed_eof()
        return await read_frame(reader, 2 << 20, MAX_REQUEST_VALUES, MAX_REQUEST_DEPTH)
    return asyncio.run(main())


def test_a_client_frame_of_empty_arrays_is_refused_before_it_is_decoded():
    """1.6 MB of empty arrays took the leader 5 s and 117 MB, and cost it the leadership."""
    frame = msgpack.packb([7, "status", None])[:-1] + empty_arrays(1_600_000)
    def refuse():
        with pytest.raises(FrameTooComplex, match="more than 1024") as refused:
            read(frame)
        assert refused.value.request_id == 7  # so the refusal goes back to its request

    refuse()
    assert peak_mb(refuse) < 8  # what holding the frame's bytes costs, and no more


def test_a_client_frame_nested_too_deep_is_refused():
    deep = b"\x91" * 200 + b"\x90"
    with pytest.raises(FrameTooComplex, match="deeper than 16"):
        read(b"\x93\x01\xa2kv" + deep)  # [1, "kv", [[[...]]]]
    assert read(msgpack.packb([1, "kv", {"cmd": b"x" * 100_000, "group": 0}])) == \
        [1, "kv", {"cmd": b"x" * 100_000, "group": 0}]


def test_a_map_with_an_array_key_is_a_protocol_error():
    """It was a TypeError escaping the connection handler ('Unhandled exception in
    client_connected_cb')."""
    with pytest.raises(ProtocolError, match="not valid msgpack"):
        read(msgpack.packb([1, "status", {(1, 2): 3}]))


# ---- kv commands and nested txns ------------------------------------------------------------


def test_a_command_of_empty_arrays_is_refused_in_small_memory():
    def decode():
        with pytest.raises(MalformedRequest, match="too complex"):
            decode_command(nested_arrays(24, 65_536), LIMITS)

    decode()
    assert peak_mb(decode) < 8


def ranges(n: int) -> tuple[RangeRequest, ...]:
    return tuple(RangeRequest(b"k%d" % i) for i in range(n))


def check(txn: TxnRequest) -> None:
    decode_command(encode_command(txn), LIMITS)


def test_the_largest_flat_txn_etcd_accepts_is_accepted():
    compares = tuple(Compare(b"c%d" % i, CompareTarget.VERSION, CompareResult.EQUAL, 0)
                     for i in range(128))
    check(TxnRequest(compares, ranges(128), ranges(128)))


def test_nested_txns_count_their_ops():
    """128 txns of 128 ranges each timed out after 6 s and cost an election every time."""
    probe = TxnRequest(success=(TxnRequest(success=ranges(128)),) * 128)
    with pytest.raises(ErrTooManyOps):
        check(probe)
    # etcd's rule: a nested txn gets what its parent's longest list leaves (128 - 64)
    check(TxnRequest(success=(TxnRequest(success=ranges(64)),) + ranges(63)))
    with pytest.raises(ErrTooManyOps, match="limit 64"):
        check(TxnRequest(success=(TxnRequest(success=ranges(65)),) + ranges(63)))
    # ... which alone would pass three levels of 42 (74,088 ranges); the total is bounded too
    wide = TxnRequest(success=(TxnRequest(success=ranges(42)),) * 42)
    with pytest.raises(ErrTooManyOps, match="1806 compares and operations in all"):
        validate(wide, LIMITS)  # as the etcd API proposes it, decoded
    with pytest.raises(ErrTooManyOps, match="too complex"):
        check(wide)  # encoded, it is refused before it is decoded
    with pytest.raises(ErrTooManyOps, match="427 compares and operations in all"):
        check(TxnRequest(success=(TxnRequest(success=ranges(60)),) * 7))
    check(TxnRequest(success=(TxnRequest(success=ranges(40)),) * 8))  # 328 in all: fine


# ---- ranges in slices ----------------------------------------------------------------------


def store_with(n: int) -> KVStore:
    store = KVStore()
    for i in range(n):
        store.apply(PutRequest(b"k/%06d" % i, b"v%d" % i), i + 1)
    return store


def test_a_range_pauses_every_slice_and_reads_at_one_revision():
    n = 3 * RANGE_SLICE + 17
    store = store_with(n)
    want = store.range(RangeRequest(b"k/", b"k0"))
    steps = store.range_steps(RangeRequest(b"k/", b"k0"))
    pauses, index = 0, n
    while True:
        try:
            next(steps)
        except StopIteration as done:
            got = done.value
            break
        pauses += 1
        # between slices the store moves on: deletes behind and ahead, a put in between
        index += 1
        store.apply(DeleteRangeRequest(b"k/", b"k0"), index)
        index += 1
        store.apply(PutRequest(b"k/%06d" % (pauses * 10 + 5), b"new"), index)
    assert pauses == 3
    assert got == want
    assert got.count == n and len(got.kvs) == n


def test_a_compaction_past_the_read_revision_ends_a_paused_range():
    store = store_with(2 * RANGE_SLICE)
    steps = store.range_steps(RangeRequest(b"k/", b"k0"))
    next(steps)
    store.apply(DeleteRangeRequest(b"k/", b"k0"), 2 * RANGE_SLICE + 1)
    store.mvcc.compact(store.revision)
    with pytest.raises(ErrCompacted):
        next(steps)


def test_a_node_serves_a_large_range_in_slices_that_let_the_loop_run(tmp_path):
    """Other tasks run between the slices of one read (a range over 100k keys held the
    leader's loop for up to 1.1 s): count the turns a bystander gets while it is served."""
    n = 4 * RANGE_SLICE

    async def main():
        async with LocalCluster(tmp_path, n=1) as c:
            await c.leader()
            node = c.servers[1].node
            puts = [PutRequest(b"k/%06d" % i, b"v") for i in range(n)]
            for lo in range(0, n, 128):
                await node.write(b"", 5.0, decoded=Command(TxnRequest(success=tuple(
                    puts[lo:lo + 128]))))
            turns = 0
            read = asyncio.ensure_future(node.read(RangeRequest(b"k/", b"k0"), True, 5.0))
            while not read.done():
                turns += 1
                await asyncio.sleep(0)
            assert len((await read).kvs) == n
            assert turns >= n // RANGE_SLICE - 1

    run(main())


# ---- the probes against a real cluster ------------------------------------------------------


def _send_client_frame(addr: tuple[str, int], payload: bytes) -> list:
    with socket.create_connection(addr, timeout=20) as s:
        s.sendall(len(payload).to_bytes(4, "big") + payload)
        data = b""
        while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
            chunk = s.recv(1 << 16)
            assert chunk, "the leader closed the connection without an answer"
            data += chunk
    return msgpack.unpackb(data[4:], strict_map_key=False)


def test_the_probe_frames_leave_the_leader_in_place(tmp_path):
    """A 1.6 MB client frame of empty arrays cost an election every time; now it is refused
    and the leader's loop is not held for even half the election timeout (500 ms). A map
    with an array key gets the connection closed, and nothing unhandled in the log."""
    with LocalProcessCluster(3, root=tmp_path) as cluster:
        leader = cluster.start()
        before = {i: st["term"] for i, st in cluster.statuses(timeout=5).items() if st}
        rid = 41
        frame = msgpack.packb([rid, "status", None])[:-1] + empty_arrays(1_600_000)
        answer = _send_client_frame(cluster.member(leader).client, frame)
        assert answer[:2] == [rid, "bad_request"] and "more than" in answer[2]["message"]
        with pytest.raises(AssertionError, match="closed the connection"):  # nonsense: hung up
            _send_client_frame(cluster.member(leader).client,
                               msgpack.packb([1, "status", {(1, 2): 3}]))
        assert _send_client_frame(cluster.member(leader).client,
                                  msgpack.packb([2, "status", None]))[0] == 2
        st = cluster.status(leader, timeout=5)
        assert st is not None and st["recent_loop_stall_ms"] < 250, st
        after = {i: s["term"] for i, s in cluster.statuses(timeout=5).items() if s}
        assert after == before and cluster.leader() == leader
        logs = "".join(cluster.log_path(i).read_text() for i in cluster.ids)
        assert "Unhandled exception" not in logs


# ------------------------------------------------------------------ etcd's API
def test_an_etcd_txn_too_big_when_nested_is_refused_before_any_op_is_converted(monkeypatch):
    def no(_):
        raise AssertionError("converted an op of a txn that was going to be refused")
    monkeypatch.setattr(convert, "range_request", no)
    inner = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(
        request_range=rpc_pb2.RangeRequest(key=b"k%d" % i)) for i in range(128)])
    outer = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_txn=inner)] * 128)
    with pytest.raises(E.EtcdError) as info:
        convert.txn_request(outer)
    assert info.value is E.TOO_MANY_OPS


def test_an_etcd_range_response_is_built_in_slices_that_let_the_loop_run():
    n = 5 * convert.RESPONSE_SLICE
    kvs = tuple(KeyValue(b"k%06d" % i, i + 1, i + 1, 1, b"v", 0) for i in range(n))
    resp = RangeResponse(ResponseHeader(len(kvs)), kvs, False, len(kvs))

    async def main():
        turns = 0

        async def other():
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)
        task = asyncio.ensure_future(other())
        await asyncio.sleep(0)
        start = turns
        out = await convert.range_response_sliced(resp, rpc_pb2.ResponseHeader(revision=1))
        task.cancel()
        return out, turns - start

    out, turns = asyncio.run(main())
    assert [kv.key for kv in out.kvs] == [kv.key for kv in kvs] and out.count == len(kvs)
    assert turns >= 4  # the other task ran between the five slices


def test_a_large_range_response_is_encoded_in_slices_to_the_same_bytes():
    n = 3 * RANGE_SLICE + 5
    kvs = tuple(KeyValue(b"k%06d" % i, i + 1, i + 1, 1, b"v", 0) for i in range(n))
    resp = RangeResponse(ResponseHeader(n), kvs, True, n + 1)
    steps = encode_response_steps(resp)
    pauses = 0
    while True:
        try:
            next(steps)
            pauses += 1
        except StopIteration as done:
            data = done.value
            break
    assert pauses == 4 and data == encode_response(resp)
