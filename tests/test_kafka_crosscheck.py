"""Our Kafka codec against independent implementations: kafka-python and aiokafka.

Three kinds of evidence that the schemas are Kafka's:

- Faithfulness: kafka-python ships Kafka's own message JSON (from a later Kafka than the one
  transcribed here). For every version both define, every field's presence, type,
  nullability and tag must agree with our declaration.
- Re-encoding: bytes we encode (every field set) are decoded by kafka-python's JSON-driven
  codec and by aiokafka's hand-written struct classes and encoded again; the bytes must come
  back identical, which fails on any difference of field order, width or presence.
- Semantics: whole frames built with their request classes (headers included) are decoded by
  KafkaConnection and checked field by field, and our response frames are decoded by theirs.
"""

from __future__ import annotations

import importlib
import importlib.resources
import json
import random
import re
import struct
from typing import Any

import pytest

from shoal.events.protocol import (
    APIS,
    KafkaConnection,
    RecordBatch,
    RequestReceived,
    decode_response,
    encode_response,
)
from shoal.events.protocol import schema as sch
from shoal.events.protocol.api_versions import ApiVersion, ApiVersionsResponse
from shoal.events.protocol.fetch import FetchableTopicResponse, FetchResponse, PartitionData
from shoal.events.protocol.metadata import (
    MetadataResponse,
    MetadataResponseBroker,
    MetadataResponsePartition,
    MetadataResponseTopic,
)
from test_kafka_protocol import sample

kafka_msg = pytest.importorskip("kafka.protocol.api_message")
aiokafka_struct = pytest.importorskip("aiokafka.protocol.struct")

_OURS = {c.__name__: c for a in APIS.values() for c in (a.request, a.response)}


def _kafka_python_classes() -> dict[str, Any]:
    out = {}
    for m in ("producer", "consumer", "metadata", "admin"):
        mod = importlib.import_module(f"kafka.protocol.{m}")
        for n in dir(mod):
            c = getattr(mod, n)
            if isinstance(c, type) and issubclass(c, kafka_msg.ApiMessage) and n in _OURS:
                out[n] = c
    return out


KP = _kafka_python_classes()


def _snake(n: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", n).lower()


def _json_of(name: str) -> dict[str, Any]:
    text = importlib.resources.files("kafka.protocol.schemas.resources").joinpath(
        f"{name}.json").read_text()
    return dict(json.loads(re.sub(r"(?m)^\s*//.*$", "", text)))


def _json_versions(text: str | None) -> sch.Versions:
    return sch.Versions.parse(text) if text else sch.NONE


def _compare(cls: type[sch.Struct], fields: list[dict[str, Any]], versions: range,
             commons: dict[str, list[dict[str, Any]]], where: str) -> None:
    ours = {s.attr.rstrip("_"): s for s in sch.fields_of(cls)}
    for fd in fields:
        name = _snake(fd["name"])
        spec = ours.get(name)
        theirs_v = _json_versions(fd["versions"])
        t = fd["type"]
        for v in versions:
            present = v in theirs_v
            assert present == (spec is not None and v in spec.versions), f"{where}.{name} v{v}"
            if not present:
                continue
            assert spec is not None
            assert (v in _json_versions(fd.get("nullableVersions"))) == (v in spec.nullable), (
                f"{where}.{name} nullable at v{v}")
            tagged = v in _json_versions(fd.get("taggedVersions"))
            assert tagged == (v in spec.tagged), f"{where}.{name} tagged at v{v}"
            if tagged:
                assert fd["tag"] == spec.tag, f"{where}.{name} tag"
        if spec is None or not any(v in theirs_v for v in versions):
            continue
        base = t[2:] if t.startswith("[]") else t
        st = spec.type.elem if isinstance(spec.type, sch.Array) else spec.type
        assert t.startswith("[]") == isinstance(spec.type, sch.Array), f"{where}.{name} array"
        if isinstance(st, sch.StructType):
            sub = fd.get("fields") or commons[base]
            _compare(st.cls, sub, versions, commons, f"{where}.{name}")
        else:
            assert st.name == base, f"{where}.{name}: {st.name} vs {base}"


@pytest.mark.parametrize("name", sorted(_OURS), ids=str)
def test_schema_matches_kafkas_json_as_kafka_python_ships_it(name: str) -> None:
    cls = _OURS[name]
    data = _json_of(name)
    lo, hi = (int(x) for x in data["validVersions"].split("-"))
    versions = range(lo, min(hi, cls.VERSIONS.hi) + 1)  # versions both define
    assert len(versions) > 0
    assert data["apiKey"] == cls.API_KEY
    assert _json_versions(data["flexibleVersions"]).lo == cls.FLEXIBLE.lo
    commons = {c["name"]: c["fields"] for c in data.get("commonStructs", [])}
    _compare(cls, data["fields"], versions, commons, name)


def _kp_cases() -> list[tuple[str, int]]:
    out = []
    for name, theirs in sorted(KP.items()):
        lo = int(theirs._json["validVersions"].split("-")[0])
        hi = min(theirs.max_version, _OURS[name].VERSIONS.hi)
        out += [(name, v) for v in range(lo, hi + 1)]
    return out


@pytest.mark.parametrize(("name", "version"), _kp_cases(), ids=str)
def test_kafka_python_reencodes_our_bytes(name: str, version: int) -> None:
    ours, theirs = _OURS[name], KP[name]
    for seed in range(2):
        value = sample(ours, version, version in ours.FLEXIBLE,
                       random.Random(f"kp{name}{version}{seed}"))
        if isinstance(value, ApiVersionsResponse):
            value.error_code = 0  # kafka-python reads any error response as v0, as it should
        data = value.encode(version)
        decoded = theirs.decode(data, version=version)
        decoded._header = None  # decode() leaves it unset; encode() looks at it
        assert decoded.encode(version) == data


_AIOKAFKA_NAMES = {"ApiVersionRequest": "ApiVersionsRequest",
                   "ApiVersionResponse": "ApiVersionsResponse",
                   "OffsetRequest": "ListOffsetsRequest", "OffsetResponse": "ListOffsetsResponse"}
# aiokafka declares ListOffsets v4/v5's current_leader_epoch as Int64; Kafka's JSON says int32.
_AIOKAFKA_BUGS = {("OffsetRequest", 4), ("OffsetRequest", 5)}


def _aiokafka_classes() -> list[tuple[str, int, Any]]:
    out = []
    for m in ("admin", "commit", "coordination", "fetch", "group", "metadata", "offset",
              "produce", "transaction"):
        mod = importlib.import_module(f"aiokafka.protocol.{m}")
        for n in dir(mod):
            match = re.fullmatch(r"(\w+)_v(\d+)", n)
            c = getattr(mod, n)
            if not (match and isinstance(c, type) and issubclass(c, aiokafka_struct.Struct)):
                continue
            base, v = match.group(1), int(match.group(2))
            ours = _OURS.get(_AIOKAFKA_NAMES.get(base, base))
            if ours is not None and v in ours.VERSIONS and (base, v) not in _AIOKAFKA_BUGS:
                out.append((base, v, c))
    return sorted(out, key=lambda x: (x[0], x[1]))


@pytest.mark.parametrize(("name", "version", "theirs"), _aiokafka_classes(),
                         ids=lambda p: p if isinstance(p, (str, int)) else "")
def test_aiokafka_reencodes_our_bytes(name: str, version: int, theirs: Any) -> None:
    ours = _OURS[_AIOKAFKA_NAMES.get(name, name)]
    for seed in range(2):
        value = sample(ours, version, version in ours.FLEXIBLE,
                       random.Random(f"ak{name}{version}{seed}"))
        data = value.encode(version)
        assert theirs.decode(data).encode() == data


# -- whole frames, field by field --------------------------------------------------------------


def _serve(frame: bytes) -> RequestReceived:
    conn = KafkaConnection(supported={k: (0, a.request.VERSIONS.hi) for k, a in APIS.items()})
    conn.receive_data(frame)
    ev = conn.next_request()
    assert isinstance(ev, RequestReceived), ev
    return ev


def _kp_frame(req: Any, version: int, cid: int = 42, client_id: str = "kafka-python") -> bytes:
    req.API_VERSION = version
    req.with_header(correlation_id=cid, client_id=client_id)
    return bytes(req.encode(version, header=True, framed=True))


def test_kafka_python_request_frames_decode_field_by_field() -> None:
    from kafka.protocol.consumer import FetchRequest, JoinGroupRequest, OffsetCommitRequest
    from kafka.protocol.metadata import ApiVersionsRequest, MetadataRequest

    ev = _serve(_kp_frame(ApiVersionsRequest(client_software_name="kafka-python",
                                             client_software_version="3"), 3))
    assert (ev.api_key, ev.api_version, ev.correlation_id) == (18, 3, 42)
    assert ev.client_id == "kafka-python"
    assert ev.body.client_software_name == "kafka-python"  # type: ignore[attr-defined]

    for v in (1, 4, 9, 12):
        req = MetadataRequest(topics=[MetadataRequest.MetadataRequestTopic(name="a"),
                                      MetadataRequest.MetadataRequestTopic(name="b")])
        ev = _serve(_kp_frame(req, v, cid=v))
        assert [t.name for t in ev.body.topics] == ["a", "b"]  # type: ignore[attr-defined]
        assert ev.correlation_id == v

    fr = FetchRequest(replica_id=-1, max_wait_ms=500, min_bytes=1, max_bytes=1 << 20,
                      isolation_level=1, topics=[FetchRequest.FetchTopic(
                          topic="t", partitions=[FetchRequest.FetchTopic.FetchPartition(
                              partition=3, fetch_offset=1234, partition_max_bytes=4096)])])
    for v in (4, 7, 11, 12):
        ev = _serve(_kp_frame(fr, v))
        body: Any = ev.body
        assert (body.max_wait_ms, body.min_bytes, body.isolation_level) == (500, 1, 1)
        p = body.topics[0].partitions[0]
        assert (body.topics[0].topic, p.partition, p.fetch_offset, p.partition_max_bytes) == (
            "t", 3, 1234, 4096)

    jg = JoinGroupRequest(group_id="g", session_timeout_ms=10000, rebalance_timeout_ms=30000,
                          member_id="", protocol_type="consumer", protocols=[
                              JoinGroupRequest.JoinGroupRequestProtocol(name="range",
                                                                         metadata=b"\x00\x01")])
    for v in (1, 5, 6, 9):
        body = _serve(_kp_frame(jg, v)).body
        assert body.protocols[0].metadata == b"\x00\x01"
        assert body.rebalance_timeout_ms == 30000 and body.protocol_type == "consumer"

    oc = OffsetCommitRequest(group_id="g", generation_id_or_member_epoch=5, member_id="m",
                             topics=[OffsetCommitRequest.OffsetCommitRequestTopic(
                                 name="t", partitions=[
                                     OffsetCommitRequest.OffsetCommitRequestTopic
                                     .OffsetCommitRequestPartition(
                                         partition_index=0, committed_offset=99,
                                         committed_metadata=None)])])
    for v in (2, 7, 8):
        body = _serve(_kp_frame(oc, v)).body
        p = body.topics[0].partitions[0]
        assert (body.generation_id_or_member_epoch, p.committed_offset) == (5, 99)
        assert p.committed_metadata is None


def test_kafka_python_produce_with_its_own_record_batch() -> None:
    from kafka.protocol.producer import ProduceRequest
    from kafka.record.memory_records import MemoryRecordsBuilder

    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20)
    builder.append(timestamp=1700000000000, key=b"k", value=b"v", headers=[("h", b"x")])
    builder.append(timestamp=1700000000005, key=None, value=b"w", headers=[])
    builder.close()
    records = bytes(builder.buffer())
    req = ProduceRequest(transactional_id=None, acks=-1, timeout_ms=1000, topic_data=[
        ProduceRequest.TopicProduceData(name="t", partition_data=[
            ProduceRequest.TopicProduceData.PartitionProduceData(index=2, records=records)])])
    for v in (3, 7, 9):
        body: Any = _serve(_kp_frame(req, v)).body
        assert body.acks == -1 and body.transactional_id is None
        part = body.topic_data[0].partition_data[0]
        batch = RecordBatch.decode(part.records)
        assert [(r.key, r.value, r.headers) for r in batch.records] == [
            (b"k", b"v", [("h", b"x")]), (None, b"w", [])]
        assert batch.base_timestamp == 1700000000000 and batch.max_timestamp == 1700000000005


def test_aiokafka_request_frames_decode() -> None:
    from aiokafka.protocol.api import RequestHeader_v1, RequestHeader_v2
    from aiokafka.protocol.group import HeartbeatRequest_v1
    from aiokafka.protocol.metadata import MetadataRequest_v1, MetadataRequest_v5

    for req, v in ((MetadataRequest_v1(["x", "y"]), 1), (MetadataRequest_v5(["x", "y"], True), 5),
                   (HeartbeatRequest_v1("g", 3, "member"), 1)):
        header = (RequestHeader_v2 if req.FLEXIBLE_VERSION else RequestHeader_v1)(
            req, correlation_id=7, client_id="aiokafka")
        payload = header.encode() + req.encode()
        ev = _serve(struct.pack(">i", len(payload)) + payload)
        assert (ev.api_key, ev.api_version, ev.correlation_id, ev.client_id) == (
            req.API_KEY, v, 7, "aiokafka")
        body: Any = ev.body
        if req.API_KEY == 3:
            assert [t.name for t in body.topics] == ["x", "y"]
        else:
            assert (body.group_id, body.generation_id, body.member_id) == ("g", 3, "member")


def test_our_response_frames_decode_in_kafka_python() -> None:
    from kafka.protocol.consumer import FetchResponse as KFetch
    from kafka.protocol.metadata import ApiVersionsResponse as KApiVersions
    from kafka.protocol.metadata import MetadataResponse as KMetadata

    av = ApiVersionsResponse(api_keys=[ApiVersion(api_key=k, min_version=lo, max_version=hi)
                                       for k, (lo, hi) in sorted(KafkaConnection().supported
                                                                 .items())])
    for v in (0, 3):
        frame = encode_response(av, v, 11)
        got = KApiVersions.decode(frame, version=v, header=True, framed=True)
        assert got.header.correlation_id == 11
        assert [(k.api_key, k.max_version) for k in got.api_keys] == [
            (k.api_key, k.max_version) for k in av.api_keys]

    md = MetadataResponse(
        brokers=[MetadataResponseBroker(node_id=1, host="127.0.0.1", port=9092, rack=None)],
        cluster_id="shoal", controller_id=1,
        topics=[MetadataResponseTopic(name="t", partitions=[MetadataResponsePartition(
            partition_index=0, leader_id=1, leader_epoch=4, replica_nodes=[1], isr_nodes=[1])])])
    for v in (1, 7, 9, 12):
        got = KMetadata.decode(encode_response(md, v, 5), version=v, header=True, framed=True)
        assert got.brokers[0].host == "127.0.0.1" and got.brokers[0].port == 9092
        assert got.topics[0].name == "t" and got.topics[0].partitions[0].leader_id == 1
        if v >= 7:
            assert got.topics[0].partitions[0].leader_epoch == 4

    batch = RecordBatch(base_offset=10, last_offset_delta=0, records=[])
    fetch = FetchResponse(responses=[FetchableTopicResponse(topic="t", partitions=[
        PartitionData(partition_index=0, high_watermark=11, records=batch.encode())])])
    for v in (4, 11, 12):
        got = KFetch.decode(encode_response(fetch, v, 6), version=v, header=True, framed=True)
        part = got.responses[0].partitions[0]
        assert part.high_watermark == 11 and bytes(part.records) == batch.encode()
        cid, ours = decode_response(encode_response(fetch, v, 6)[4:], 1, v)
        assert cid == 6 and ours == fetch
