"""shoal.events.protocol: primitives, every API's schema at every version, and the connection.

Round-trips fill every field a version carries with a non-default value (so tagged fields are
really written, and a field in the wrong place shows), for every request and response class
at every schema version. The connection tests drive KafkaConnection with whole, split and
malformed byte streams. Cross-checks against other clients' encoders are in
test_kafka_crosscheck.py; record batches in test_kafka_records.py. `sample` here is shared
with them.
"""

from __future__ import annotations

import random
import struct
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.events.protocol import (
    APIS,
    CLOSED,
    NEED_DATA,
    ErrorCode,
    FrameTooLarge,
    KafkaClientConnection,
    KafkaConnection,
    LocalProtocolError,
    RemoteProtocolError,
    RequestReceived,
    UnsupportedRequest,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from shoal.events.protocol import schema as sch
from shoal.events.protocol.api_versions import ApiVersionsRequest, ApiVersionsResponse
from shoal.events.protocol.fetch import FetchResponse
from shoal.events.protocol.heartbeat import HeartbeatRequest, HeartbeatResponse
from shoal.events.protocol.metadata import (
    MetadataRequest,
    MetadataRequestTopic,
    MetadataResponse,
    MetadataResponseBroker,
)
from shoal.events.protocol.primitives import Reader, Writer
from shoal.events.protocol.produce import (
    PartitionProduceData,
    ProduceRequest,
    TopicProduceData,
)

# -- sample values from a schema --------------------------------------------------------------

_INT_RANGE = {"int8": 7, "int16": 15, "int32": 31, "int64": 63}


def _sample_type(t: sch.KafkaType, version: int, flexible: bool, nullable: bool,
                 rng: random.Random, depth: int) -> Any:
    if nullable and rng.random() < 0.15:
        return None
    if isinstance(t, sch.Array):
        return [_sample_type(t.elem, version, flexible, False, rng, depth + 1)
                for _ in range(rng.randint(1, 2))]
    if isinstance(t, sch.StructType):
        return sample(t.cls, version, flexible, rng, depth + 1)
    name = t.name
    if name in _INT_RANGE:
        bits = _INT_RANGE[name]
        v = rng.choice([rng.randint(-(1 << bits), (1 << bits) - 1), rng.randint(1, 100)])
        return v if v != 0 else 1
    if name == "uint16":
        return rng.randint(1, 0xFFFF)
    if name == "uint32":
        return rng.randint(1, 0xFFFFFFFF)
    if name == "float64":
        return rng.uniform(-1e6, 1e6) or 1.5
    if name == "bool":
        return True
    if name == "uuid":
        return uuid.UUID(int=rng.getrandbits(128) | 1)
    if name == "string":
        return rng.choice(["topic-a", "grp", "Ωmega", "x" * rng.randint(1, 40)])
    if name in ("bytes", "records"):
        return rng.randbytes(rng.randint(1, 30))
    raise AssertionError(name)


def sample(cls: type[sch.Struct], version: int, flexible: bool, rng: random.Random,
           depth: int = 0) -> Any:
    """An instance of `cls` with every field present at `version` set (not to its default)."""
    kw: dict[str, Any] = {}
    for spec in sch.fields_of(cls):
        present = (version in spec.versions and (flexible or version not in spec.tagged))
        if not present:
            continue
        v = _sample_type(spec.type, version, flexible, version in spec.nullable, rng, depth)
        if spec.is_default(v) and spec.type.name == "bool":
            v = not v
        kw[spec.attr] = v
    return cls(**kw)


def message_classes() -> list[tuple[type[sch.Message], int]]:
    out: list[tuple[type[sch.Message], int]] = []
    for api in APIS.values():
        for cls in (api.request, api.response):
            out += [(cls, v) for v in range(cls.VERSIONS.lo, cls.VERSIONS.hi + 1)]
    return out


def _id(p: Any) -> str:
    return p.__name__ if isinstance(p, type) else str(p)


# -- primitives --------------------------------------------------------------------------------


@given(st.integers(-(1 << 31), (1 << 31) - 1))
def test_varint_round_trip(n: int) -> None:
    w = Writer()
    w.varint(n)
    r = Reader(w.getvalue())
    assert r.varint() == n and r.remaining == 0


@given(st.integers(-(1 << 63), (1 << 63) - 1))
def test_varlong_round_trip(n: int) -> None:
    w = Writer()
    w.varlong(n)
    assert Reader(w.getvalue()).varlong() == n


def test_varint_known_encodings() -> None:
    # Zigzag: 0 -> 0, -1 -> 1, 1 -> 2, -64 -> 127, 64 -> 128 (two bytes), per the protocol guide.
    for n, enc in [(0, b"\x00"), (-1, b"\x01"), (1, b"\x02"), (-64, b"\x7f"), (64, b"\x80\x01"),
                   ((1 << 31) - 1, b"\xfe\xff\xff\xff\x0f"), (-(1 << 31), b"\xff\xff\xff\xff\x0f")]:
        w = Writer()
        w.varint(n)
        assert w.getvalue() == enc, n
    w = Writer()
    w.uvarint(300)
    assert w.getvalue() == b"\xac\x02"


@pytest.mark.parametrize("data", [
    b"\x80\x80\x80\x80\x80\x01",  # six bytes
    b"\xff\xff\xff\xff\x1f",  # fifth byte carries bits past 32
    b"\x80\x80",  # truncated
])
def test_bad_varints_are_remote_errors(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        Reader(data).uvarint()


def test_bad_varlong() -> None:
    with pytest.raises(RemoteProtocolError):
        Reader(b"\xff" * 9 + b"\x02").varlong()
    assert Reader(b"\xff" * 9 + b"\x01").varlong() == -(1 << 63)


def test_strings_bytes_arrays_and_bounds() -> None:
    w = Writer()
    w.string("héllo")
    w.string(None, nullable=True)
    w.string("c", compact=True)
    w.string(None, compact=True, nullable=True)
    w.blob(b"xyz")
    w.blob(None, compact=True, nullable=True)
    r = Reader(w.getvalue())
    assert r.string() == "héllo"
    assert r.string(nullable=True) is None
    assert r.string(compact=True) == "c"
    assert r.string(compact=True, nullable=True) is None
    assert r.blob() == b"xyz"
    assert r.blob(compact=True, nullable=True) is None
    r.expect_end("test")
    with pytest.raises(RemoteProtocolError, match="non-nullable"):
        Reader(b"\xff\xff").string()
    with pytest.raises(RemoteProtocolError, match="truncated"):
        Reader(b"\x00\x05ab").string()
    with pytest.raises(RemoteProtocolError, match="UTF-8"):
        Reader(b"\x00\x01\xff").string()
    # A count that could never fit is refused before anything is allocated.
    with pytest.raises(RemoteProtocolError, match="cannot fit"):
        Reader(b"\x7f\xff\xff\xff" + b"\0" * 8).array_length(False, False, 4)
    budgeted = Reader(b"\x00\x00\x00\x05" + b"\0" * 5, element_budget=4)
    with pytest.raises(RemoteProtocolError, match="budget"):
        budgeted.array_length(False, False, 1)


def test_writer_refuses_out_of_range_values() -> None:
    w = Writer()
    for call in (lambda: w.int8(128), lambda: w.int16(-40000), lambda: w.int32(1 << 31),
                 lambda: w.string(None), lambda: w.boolean(1),  # type: ignore[arg-type]
                 lambda: w.string("x" * 40000)):
        with pytest.raises(LocalProtocolError):
            call()


# -- schemas -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "version"), message_classes(), ids=_id)
def test_every_message_round_trips_at_every_version(cls: type[sch.Message], version: int
                                                    ) -> None:
    flexible = version in cls.FLEXIBLE
    assert cls().decode(cls().encode(version), version) == cls()
    for seed in range(3):
        value = sample(cls, version, flexible, random.Random(f"{cls.__name__}{version}{seed}"))
        data = value.encode(version)
        assert cls.decode(data, version) == value
        # Trailing garbage and truncation are malformed input, never a silent partial parse.
        with pytest.raises(RemoteProtocolError):
            cls.decode(data + b"\0", version)
        if data:
            with pytest.raises(RemoteProtocolError):
                cls.decode(data[:-1], version)


def test_schema_declarations_are_consistent() -> None:
    for api in APIS.values():
        for cls in (api.request, api.response):
            assert api.min_version in cls.VERSIONS and api.max_version in cls.VERSIONS
            assert cls.VERSIONS.lo == 0
            for spec in sch.fields_of(cls):
                assert spec.tagged.empty or spec.tag is not None


def test_field_absent_from_version_is_refused_unless_ignorable() -> None:
    # MetadataRequest.allow_auto_topic_creation is v4+ and not ignorable: False can't be said.
    with pytest.raises(LocalProtocolError, match="allow_auto_topic_creation"):
        MetadataRequest(topics=[], allow_auto_topic_creation=False).encode(3)
    with pytest.raises(LocalProtocolError, match="include_topic_authorized_operations"):
        MetadataRequest(include_topic_authorized_operations=True).encode(3)
    # A broker's rack is ignorable: silently dropped at v0, which has no rack.
    resp = MetadataResponse(brokers=[MetadataResponseBroker(node_id=1, host="h", rack="r")])
    assert MetadataResponse.decode(resp.encode(0), 0).brokers[0].rack is None
    with pytest.raises(LocalProtocolError, match="nullable|None"):
        MetadataRequest(topics=None).encode(0)  # null topics only from v1
    with pytest.raises(LocalProtocolError):
        MetadataRequest().encode(99)


def test_tagged_fields_written_only_when_set_and_unknown_tags_skipped() -> None:
    plain = FetchResponse().encode(12)
    body = FetchResponse(node_endpoints=[]).encode(12)
    assert plain == body and plain.endswith(b"\x00")  # no tags: count 0
    # An unknown tag (99, 3 bytes) in the top-level tagged section is skipped by its size.
    hb = HeartbeatResponse(error_code=27).encode(4)
    assert hb.endswith(b"\x00")
    extended = hb[:-1] + b"\x01\x63\x03abc"
    assert HeartbeatResponse.decode(extended, 4) == HeartbeatResponse(error_code=27)
    with pytest.raises(RemoteProtocolError):
        HeartbeatResponse.decode(hb[:-1] + b"\x01\x63\x09abc", 4)  # size past the end


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=30), st.lists(st.integers(-1, 1 << 20), max_size=4)),
                max_size=5), st.integers(0, 12), st.booleans())
def test_metadata_request_hypothesis(topics: list[tuple[str, list[int]]], version: int,
                                     auto: bool) -> None:
    req = MetadataRequest(topics=[MetadataRequestTopic(name=n) for n, _ in topics],
                          allow_auto_topic_creation=auto or version < 4)
    assert MetadataRequest.decode(req.encode(version), version) == req


# -- frames ------------------------------------------------------------------------------------


def test_request_frame_matches_the_protocol_guide_layout() -> None:
    frame = encode_request(ApiVersionsRequest(), 0, correlation_id=1, client_id="c")
    # size, api key 18, version 0, correlation id 1, client id "c", empty body
    assert frame == struct.pack(">ihhih", 11, 18, 0, 1, 1) + b"c"
    frame3 = encode_request(ApiVersionsRequest(client_software_name="k",
                                               client_software_version="1"), 3, 5, "c")
    # v3 is flexible: header v2 = classic client id + empty tag section; compact body strings
    assert frame3[4:] == struct.pack(">hhih", 18, 3, 5, 1) + b"c" + b"\x00" + b"\x02k\x021\x00"
    header, body = decode_request(frame3[4:])
    assert header.client_id == "c" and header.correlation_id == 5
    assert body == ApiVersionsRequest(client_software_name="k", client_software_version="1")


def test_api_versions_response_always_uses_header_v0() -> None:
    body = ApiVersionsResponse(api_keys=[])
    frame = encode_response(body, 3, correlation_id=9)
    assert frame[4:8] == struct.pack(">i", 9) and frame[8:10] == b"\x00\x00"  # no tag byte
    assert decode_response(frame[4:], 18, 3) == (9, body)
    hb = encode_response(HeartbeatResponse(), 4, 9)
    assert hb[8] == 0  # a flexible response header's empty tag section


# -- connection --------------------------------------------------------------------------------


def _drain(conn: KafkaConnection) -> list[Any]:
    out = []
    while (ev := conn.next_request()) is not NEED_DATA:
        out.append(ev)
        if ev is CLOSED:
            break
    return out


def test_connection_decodes_pipelined_and_split_frames() -> None:
    frames = [encode_request(HeartbeatRequest(group_id="g", generation_id=i, member_id="m"),
                             4, i, "cli") for i in range(3)]
    stream = b"".join(frames)
    conn = KafkaConnection()
    for i in range(0, len(stream), 7):  # dribbled in 7-byte reads
        conn.receive_data(stream[i : i + 7])
    events = _drain(conn)
    assert [e.correlation_id for e in events] == [0, 1, 2]
    assert all(isinstance(e, RequestReceived) and e.client_id == "cli" for e in events)
    assert events[1].body == HeartbeatRequest(group_id="g", generation_id=1, member_id="m")
    assert conn.pending == 3
    # Responses must go in request order.
    with pytest.raises(LocalProtocolError, match="order"):
        conn.send_response(events[1], HeartbeatResponse())
    with pytest.raises(LocalProtocolError):
        conn.send_response(events[0], ApiVersionsResponse())  # wrong response type
    out = [conn.send_response(e, HeartbeatResponse(error_code=ErrorCode.REBALANCE_IN_PROGRESS))
           for e in events]
    assert conn.pending == 0
    client = KafkaClientConnection()
    for _ in range(3):
        client.send_request(HeartbeatRequest(), 4)
    client.receive_data(b"".join(out))
    got = [client.next_response() for _ in range(3)]
    assert [g.correlation_id for g in got] == [0, 1, 2]  # type: ignore[union-attr]
    assert got[0].body == HeartbeatResponse(error_code=27)  # type: ignore[union-attr]
    assert client.next_response() is NEED_DATA
    conn.receive_data(b"")
    assert conn.next_request() is CLOSED


def test_produce_acks_zero_expects_no_response() -> None:
    req = ProduceRequest(acks=0, timeout_ms=100, topic_data=[TopicProduceData(
        name="t", partition_data=[PartitionProduceData(index=0, records=None)])])
    conn = KafkaConnection()
    conn.receive_data(encode_request(req, 7, 1))
    ev = conn.next_request()
    assert isinstance(ev, RequestReceived) and not ev.expects_response
    assert conn.pending == 0


def test_oversized_size_prefix_refused_before_buffering() -> None:
    conn = KafkaConnection(max_request_size=1024)
    with pytest.raises(FrameTooLarge):
        conn.receive_data(struct.pack(">i", 1025) + b"x" * 100)
    assert conn.buffered == 0  # nothing of it was kept
    with pytest.raises(FrameTooLarge):  # and the connection stays broken
        conn.next_request()
    # The prefix split across reads is refused as soon as its fourth byte arrives.
    conn2 = KafkaConnection()
    conn2.receive_data(b"\x7f\xff")
    with pytest.raises(FrameTooLarge):
        conn2.receive_data(b"\xff\xff")
    with pytest.raises(RemoteProtocolError, match="negative"):
        KafkaConnection().receive_data(b"\xff\xff\xff\xfe")
    # Behind whole frames, too: the prefix is checked where it falls, not when it is reached.
    good = encode_request(HeartbeatRequest(), 0, 1)
    conn3 = KafkaConnection(max_request_size=1024)
    conn3.receive_data(good * 3)
    with pytest.raises(FrameTooLarge):
        conn3.receive_data(good[:-1])  # a fourth frame still arriving is fine...
        conn3.receive_data(good[-1:] + struct.pack(">i", 1 << 30) + b"y" * 10)  # ...this isn't
    assert conn3.buffered == 0


@pytest.mark.parametrize("mangle", ["truncate", "trailing", "short", "bad-varint", "eof"])
def test_malformed_frames_raise_remote_protocol_error(mangle: str) -> None:
    good = encode_request(MetadataRequest(topics=[MetadataRequestTopic(name="abc")]), 9, 3)
    payload = good[4:]
    if mangle == "truncate":
        payload = payload[:-3]
    elif mangle == "trailing":
        payload = payload + b"\x00\x01"
    elif mangle == "short":
        payload = payload[:6]
    elif mangle == "bad-varint":  # the compact array count becomes a six-byte varint
        head = len(struct.pack(">hhih", 3, 9, 3, 5)) + len("shoal") + 1
        payload = payload[:head] + b"\xff" * 6 + payload[head + 1 :]
    conn = KafkaConnection()
    data = struct.pack(">i", len(payload)) + payload
    if mangle == "eof":
        data = good[:-2]
    conn.receive_data(data)
    if mangle == "eof":
        assert conn.next_request() is NEED_DATA
        conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError):
        conn.next_request()
    with pytest.raises(RemoteProtocolError):
        conn.next_request()  # broken from then on


def test_unsupported_api_versions_answered_at_v0_with_the_ranges() -> None:
    conn = KafkaConnection()
    # A client newer than us asks with ApiVersions v9, flexible, with fields we can't know.
    payload = struct.pack(">hhih", 18, 9, 77, 3) + b"cli" + b"\x00" + b"\x05junk"
    conn.receive_data(struct.pack(">i", len(payload)) + payload)
    ev = conn.next_request()
    assert isinstance(ev, UnsupportedRequest) and ev.correlation_id == 77
    assert ev.client_id == "cli"
    out = conn.send_unsupported(ev)
    assert out is not None
    cid, body = decode_response(out[4:], 18, 0)
    assert cid == 77 and isinstance(body, ApiVersionsResponse)
    assert body.error_code == ErrorCode.UNSUPPORTED_VERSION == 35
    ranges = {k.api_key: (k.min_version, k.max_version) for k in body.api_keys}
    assert ranges == conn.supported and ranges[18] == (0, 4)
    # The client side falls back to v0 when the v3 parse fails, as Kafka's client does.
    client = KafkaClientConnection()
    cid, _ = client.send_request(ApiVersionsRequest(client_software_name="x"), 3)
    v0 = body.encode(0)
    client.receive_data(struct.pack(">ii", 4 + len(v0), cid) + v0)
    got = client.next_response()
    assert got is not NEED_DATA and got is not CLOSED
    assert got.body.error_code == 35  # type: ignore[attr-defined]


def test_unsupported_api_key_and_version_are_events_not_exceptions() -> None:
    conn = KafkaConnection(supported={18: (0, 3), 12: (0, 3)})
    unknown = struct.pack(">hhih", 999, 0, 1, 2) + b"me" + b"whatever"
    too_new = encode_request(HeartbeatRequest(group_id="g"), 4, 2)[4:]
    not_served = encode_request(MetadataRequest(), 1, 3)[4:]
    for p in (unknown, too_new, not_served):
        conn.receive_data(struct.pack(">i", len(p)) + p)
    evs = _drain(conn)
    assert [type(e) for e in evs] == [UnsupportedRequest] * 3
    assert evs[0].client_id == "me" and evs[0].api_key == 999
    assert conn.send_unsupported(evs[0]) is None  # Kafka closes on unknown api keys
    # Heartbeat v4 has a top-level error code: answered with UNSUPPORTED_VERSION at v4.
    out = conn.send_unsupported(evs[1])
    assert out is not None
    assert decode_response(out[4:], 12, 4) == (2, HeartbeatResponse(error_code=35))
    assert conn.send_unsupported(evs[2]) is None  # Metadata has no top-level error code
    with pytest.raises(LocalProtocolError):
        KafkaConnection(supported={12: (0, 4)})  # ApiVersions is mandatory
    with pytest.raises(LocalProtocolError):
        KafkaConnection(supported={18: (0, 40)})
