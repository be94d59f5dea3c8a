"""Record batches (v2), compression, legacy message sets, murmur2 and the error-code table.

Batches are cross-checked both ways with kafka-python's and aiokafka's own batch builders and
readers for every codec each can do (kafka-python: gzip, lz4 via python-lz4, zstd via
zstandard, so those codecs are checked against libraries other than cramjam; aiokafka: all
four, snappy in xerial framing), and legacy message sets with both libraries' legacy
builders. The broker's re-stamping of baseOffset is verified to leave the CRC valid, by our
check and by kafka-python's.
"""

from __future__ import annotations

import gzip
import random
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.events.protocol import (
    Codec,
    CorruptRecord,
    ErrorCode,
    NewRecord,
    RecordBatch,
    RecordTooLarge,
    TimestampType,
    UnsupportedCompression,
    build_batch,
    decode_batches,
    iter_batches,
    legacy,
    murmur2,
    partition_for_key,
    records,
    restamp,
    set_log_append_time,
)
from shoal.events.protocol.compression import XERIAL_MAGIC, compress, decompress

kp_default = pytest.importorskip("kafka.record.default_records")
kp_legacy = pytest.importorskip("kafka.record.legacy_records")
ak_default = pytest.importorskip("aiokafka.record.default_records")
ak_legacy = pytest.importorskip("aiokafka.record.legacy_records")
kp_memory = pytest.importorskip("kafka.record.memory_records")
ak_memory = pytest.importorskip("aiokafka.record.memory_records")

ALL_CODECS = [Codec.NONE, Codec.GZIP, Codec.SNAPPY, Codec.LZ4, Codec.ZSTD]
KP_CODECS = [Codec.NONE, Codec.GZIP, Codec.LZ4, Codec.ZSTD]  # kafka-python without snappy

ENTRIES = [
    NewRecord(b"value-0", b"key-0", 1_700_000_000_000, [("trace", b"abc"), ("empty", None)]),
    NewRecord(None, b"tombstone", 1_700_000_000_007),
    NewRecord(b"x" * 5000, None, 1_699_999_999_990),  # compressible, earlier than the base
    NewRecord(b"", b"", 1_700_000_000_100, [("ünï", b"\x00\xff")]),
]


def _expected() -> list[tuple[bytes | None, bytes | None, int, list[tuple[str, bytes | None]]]]:
    return [(e.key, e.value, e.timestamp, list(e.headers)) for e in ENTRIES]


def _ours(batch: RecordBatch) -> list[tuple[bytes | None, bytes | None, int, list]]:
    return [(r.key, r.value, batch.timestamp_of(r), r.headers) for r in batch.records]


def _theirs(batch: object) -> list[tuple[bytes | None, bytes | None, int, list]]:
    out = []
    for r in batch:  # type: ignore[attr-defined]
        value = None if r.value is None else bytes(r.value)
        key = None if r.key is None else bytes(r.key)
        headers = [(k, None if v is None else bytes(v)) for k, v in r.headers]
        out.append((key, value, r.timestamp, headers))
    return out


@pytest.mark.parametrize("codec", ALL_CODECS, ids=lambda c: c.name)
def test_batch_round_trip_and_layout(codec: Codec) -> None:
    batch = build_batch(ENTRIES, base_offset=100, compression=codec, producer_id=7,
                        producer_epoch=1, base_sequence=40)
    data = batch.encode()
    h = records.read_header(data)
    assert (h.base_offset, h.magic, h.records_count, h.size) == (100, 2, 4, len(data))
    assert h.compression == codec and h.last_offset_delta == 3 and h.next_offset == 104
    assert h.crc == records.crc32c(data[21:])  # CRC-32C over attributes..end
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == (7, 1, 40)
    decoded = RecordBatch.decode(data)
    assert decoded == batch
    assert _ours(decoded) == _expected()
    assert decoded.max_timestamp == 1_700_000_000_100


def test_crc32c_known_value() -> None:
    assert records.crc32c(b"123456789") == 0xE3069283  # the Castagnoli check value


@pytest.mark.parametrize("codec", KP_CODECS, ids=lambda c: c.name)
def test_kafka_python_builds_we_decode(codec: Codec) -> None:
    b = kp_default.DefaultRecordBatchBuilder(magic=2, compression_type=int(codec),
                                             is_transactional=0, producer_id=-1,
                                             producer_epoch=-1, base_sequence=-1,
                                             batch_size=1 << 20)
    for i, e in enumerate(ENTRIES):
        b.append(i, timestamp=e.timestamp, key=e.key, value=e.value, headers=list(e.headers))
    batch = RecordBatch.decode(bytes(b.build()))
    assert batch.compression == codec and _ours(batch) == _expected()


@pytest.mark.parametrize("codec", KP_CODECS, ids=lambda c: c.name)
def test_we_build_kafka_python_decodes(codec: Codec) -> None:
    data = build_batch(ENTRIES, base_offset=5, compression=codec).encode()
    theirs = kp_default.DefaultRecordBatch(data)
    assert theirs.validate_crc() and theirs.base_offset == 5
    assert _theirs(theirs) == _expected()


@pytest.mark.parametrize("codec", ALL_CODECS, ids=lambda c: c.name)
def test_aiokafka_both_ways(codec: Codec) -> None:
    b = ak_default.DefaultRecordBatchBuilder(2, int(codec), 0, -1, -1, -1, 1 << 20)
    for i, e in enumerate(ENTRIES):
        b.append(i, timestamp=e.timestamp, key=e.key, value=e.value, headers=list(e.headers))
    built = bytes(b.build())
    assert _ours(RecordBatch.decode(built)) == _expected()
    if codec == Codec.SNAPPY:
        assert built[61:].startswith(XERIAL_MAGIC)  # aiokafka writes xerial, as Java does
    theirs = ak_default.DefaultRecordBatch(build_batch(ENTRIES, compression=codec).encode())
    assert theirs.validate_crc() and _theirs(theirs) == _expected()


def test_lz4_frames_use_independent_blocks_as_kafka_java_requires() -> None:
    frame = compress(Codec.LZ4, b"abc" * 50_000)
    assert frame[:4] == b"\x04\x22\x4d\x18"
    flg = frame[4]
    assert flg >> 6 == 1 and flg & 0x20  # version 01, block independence set


def test_snappy_reads_xerial_and_raw() -> None:
    import cramjam

    data = bytes(range(256)) * 1000
    xerial = compress(Codec.SNAPPY, data)
    assert xerial.startswith(XERIAL_MAGIC) and decompress(Codec.SNAPPY, xerial, 1 << 20) == data
    raw = bytes(cramjam.snappy.compress_raw(data))  # what librdkafka writes
    assert decompress(Codec.SNAPPY, raw, 1 << 20) == data


@pytest.mark.parametrize("codec", [Codec.GZIP, Codec.SNAPPY, Codec.LZ4, Codec.ZSTD],
                         ids=lambda c: c.name)
def test_decompression_is_bounded(codec: Codec) -> None:
    bomb = compress(codec, b"\0" * (8 << 20))
    assert len(bomb) < 1 << 20
    with pytest.raises(RecordTooLarge):
        decompress(codec, bomb, 1 << 20)
    assert len(decompress(codec, bomb, 8 << 20)) == 8 << 20
    # The same bound applies to a batch carrying it, and to many batches together.
    batch = RecordBatch(compression=codec, last_offset_delta=0,
                        records=[records.Record(value=b"\0" * (2 << 20))]).encode()
    with pytest.raises(RecordTooLarge):
        RecordBatch.decode(batch, max_uncompressed=1 << 20)
    with pytest.raises(RecordTooLarge):
        decode_batches(batch * 3, max_uncompressed=5 << 20)
    assert len(decode_batches(batch * 2, max_uncompressed=5 << 20)) == 2


def test_corrupt_compressed_data_is_corrupt_record() -> None:
    for codec in (Codec.GZIP, Codec.SNAPPY, Codec.LZ4, Codec.ZSTD):
        with pytest.raises(CorruptRecord):
            decompress(codec, b"definitely not compressed data", 1 << 20)


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def test_bad_crc_and_bad_framing_are_corrupt_records() -> None:
    data = build_batch(ENTRIES).encode()
    for at in (21, 30, 70, len(data) - 1):  # attributes, timestamps, records: all CRC'd
        with pytest.raises(CorruptRecord, match="CRC"):
            RecordBatch.decode(_flip(data, at))
    with pytest.raises(CorruptRecord, match="magic"):
        RecordBatch.decode(data[:16] + b"\x01" + data[17:])
    with pytest.raises(CorruptRecord):
        RecordBatch.decode(data[:-1])  # length disagrees
    with pytest.raises(CorruptRecord):
        RecordBatch.decode(data[:40])

    def resealed(buf: bytearray) -> bytes:
        struct.pack_into(">i", buf, 8, len(buf) - 12)
        struct.pack_into(">I", buf, 17, records.crc32c(bytes(buf[21:])))
        return bytes(buf)

    more = bytearray(data)
    struct.pack_into(">i", more, 57, 5)  # declares 5 records, holds 4
    with pytest.raises(CorruptRecord):
        RecordBatch.decode(resealed(more))
    huge = bytearray(data)
    struct.pack_into(">i", huge, 57, 1 << 30)  # refused before any record is read
    with pytest.raises(CorruptRecord, match="cannot fit"):
        RecordBatch.decode(resealed(huge))
    with pytest.raises(CorruptRecord, match="trailing"):
        RecordBatch.decode(resealed(bytearray(data) + b"\x00"))
    bad_varint = bytearray(data[:61]) + b"\xff" * 11
    struct.pack_into(">i", bad_varint, 57, 1)
    with pytest.raises(CorruptRecord):
        RecordBatch.decode(resealed(bad_varint))
    odd_codec = bytearray(data)
    struct.pack_into(">h", odd_codec, 21, 5)
    with pytest.raises(UnsupportedCompression):
        RecordBatch.decode(resealed(odd_codec))
    assert CorruptRecord("x").error_code == ErrorCode.CORRUPT_MESSAGE


def test_restamp_rewrites_offset_and_epoch_without_touching_the_crc() -> None:
    for codec in (Codec.NONE, Codec.ZSTD):
        data = build_batch(ENTRIES, compression=codec).encode()
        moved = restamp(data, 123_456_789, partition_leader_epoch=9)
        assert moved[17:] == data[17:]  # CRC and everything it covers, byte for byte
        records.verify_crc(moved)
        assert kp_default.DefaultRecordBatch(moved).validate_crc()
        h = records.read_header(moved)
        assert (h.base_offset, h.partition_leader_epoch, h.last_offset) == (
            123_456_789, 9, 123_456_792)
        decoded = RecordBatch.decode(moved)
        assert [decoded.offset_of(r) for r in decoded.records] == list(
            range(123_456_789, 123_456_793))
    buf = bytearray(data * 2)
    records.restamp_into(buf, len(data), 4)
    assert [h.base_offset for h, _ in iter_batches(bytes(buf))] == [0, 4]


def test_set_log_append_time_recomputes_the_crc() -> None:
    data = build_batch(ENTRIES).encode()
    stamped = set_log_append_time(data, 1_800_000_000_000)
    records.verify_crc(stamped)
    b = RecordBatch.decode(stamped)
    assert b.timestamp_type == TimestampType.LOG_APPEND_TIME
    assert {b.timestamp_of(r) for r in b.records} == {1_800_000_000_000}
    theirs = kp_default.DefaultRecordBatch(stamped)
    assert theirs.validate_crc() and {r.timestamp for r in theirs} == {1_800_000_000_000}


def test_iter_batches_and_truncated_tail() -> None:
    a = build_batch(ENTRIES[:2], base_offset=0).encode()
    b = build_batch(ENTRIES[2:], base_offset=2, compression=Codec.GZIP).encode()
    both = a + b
    assert [h.base_offset for h, _ in iter_batches(both)] == [0, 2]
    assert [len(x.records) for x in decode_batches(both)] == [2, 2]
    cut = both[:-10]  # a Fetch response may end in a partial batch
    with pytest.raises(CorruptRecord):
        list(iter_batches(cut))
    assert [h.base_offset for h, _ in iter_batches(cut, allow_truncated_tail=True)] == [0]
    assert list(iter_batches(a[:5], allow_truncated_tail=True)) == []
    with pytest.raises(RecordTooLarge):
        list(iter_batches(both, max_batch_size=len(a) - 1))
    assert len(list(iter_batches(both, max_batch_size=max(len(a), len(b))))) == 2


def test_control_and_transactional_attributes() -> None:
    batch = RecordBatch(is_transactional=True, is_control=True, producer_id=3,
                        producer_epoch=0, last_offset_delta=0,
                        records=[records.Record(key=b"\x00\x00\x00\x01", value=b"\x00" * 6)])
    h = records.read_header(batch.encode())
    assert h.is_transactional and h.is_control and h.attributes == 0x30
    assert RecordBatch.decode(batch.encode()) == batch


# -- legacy message sets -----------------------------------------------------------------------


@pytest.mark.parametrize(("magic", "codec"), [(0, Codec.NONE), (1, Codec.NONE), (0, Codec.GZIP),
                                              (1, Codec.GZIP), (1, Codec.LZ4),
                                              (1, Codec.SNAPPY)])
def test_legacy_message_sets_both_ways(magic: int, codec: Codec) -> None:
    entries = [(b"k1", b"v1", 1_600_000_000_000), (None, b"v2", 1_600_000_000_001),
               (b"k3", None, 1_600_000_000_002)]
    builder_mod = ak_legacy if codec == Codec.SNAPPY else kp_legacy
    b = builder_mod.LegacyRecordBatchBuilder(magic, int(codec), 1 << 20)
    for i, (k, v, ts) in enumerate(entries):
        b.append(i, timestamp=ts if magic else None, key=k, value=v)
    data = bytes(b.build())
    assert legacy.records_magic(data) == magic
    got = legacy.decode_message_set(data)
    assert [(r.offset, r.key, r.value) for r in got] == [
        (i, k, v) for i, (k, v, _) in enumerate(entries)]
    if magic:
        assert [r.timestamp for r in got] == [ts for _, _, ts in entries]
    batch = legacy.to_record_batch(got)
    assert RecordBatch.decode(batch.encode()) == batch
    assert [(r.key, r.value) for r in batch.records] == [(k, v) for k, v, _ in entries]
    # Down-conversion: kafka-python/aiokafka read what we write.
    ours = legacy.encode_message_set(got, magic=magic, compression=codec)
    memory = (ak_memory if codec == Codec.SNAPPY else kp_memory).MemoryRecords(ours)
    theirs = []
    while (batch_ := memory.next_batch()) is not None:
        assert batch_.validate_crc()
        theirs += list(batch_)
    assert [(r.offset, None if r.key is None else bytes(r.key),
             None if r.value is None else bytes(r.value)) for r in theirs] == [
        (i, k, v) for i, (k, v, _) in enumerate(entries)]
    assert legacy.decode_message_set(ours) == got


def test_legacy_corruption() -> None:
    data = legacy.encode_message_set([legacy.LegacyRecord(0, b"v")], magic=1)
    with pytest.raises(CorruptRecord, match="CRC"):
        legacy.decode_message_set(_flip(data, len(data) - 1))
    with pytest.raises(CorruptRecord):
        legacy.decode_message_set(data[:-1])
    assert legacy.decode_message_set(data[:-1], allow_truncated_tail=True) == []
    nested_inner = legacy.encode_message_set([legacy.LegacyRecord(0, b"v")], magic=1,
                                             compression=Codec.GZIP)
    wrapper = legacy._message(0, 1, int(Codec.GZIP), 0, None, gzip.compress(nested_inner))
    with pytest.raises(CorruptRecord, match="inside a compressed"):
        legacy.decode_message_set(wrapper)
    assert zlib.crc32(data[16:]) == struct.unpack(">I", data[12:16])[0]


# -- murmur2 and error codes -------------------------------------------------------------------

# Kafka's UtilsTest.testMurmur2.
MURMUR2_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_murmur2_matches_kafkas_vectors() -> None:
    for key, expected in MURMUR2_VECTORS.items():
        assert murmur2(key) == expected, key


def test_murmur2_matches_kafka_python_on_random_keys() -> None:
    from kafka.partitioner.default import murmur2 as kp_murmur2

    rng = random.Random(2)
    for n in range(200):
        key = rng.randbytes(n % 37)
        assert murmur2(key) & 0x7FFFFFFF == kp_murmur2(key) & 0x7FFFFFFF
        assert partition_for_key(key, 12) == (kp_murmur2(key) & 0x7FFFFFFF) % 12


def test_error_codes_match_errors_java() -> None:
    expected = {
        "NONE": 0, "OFFSET_OUT_OF_RANGE": 1, "CORRUPT_MESSAGE": 2,
        "UNKNOWN_TOPIC_OR_PARTITION": 3, "INVALID_FETCH_SIZE": 4, "LEADER_NOT_AVAILABLE": 5,
        "NOT_LEADER_OR_FOLLOWER": 6, "REQUEST_TIMED_OUT": 7, "MESSAGE_TOO_LARGE": 10,
        "COORDINATOR_LOAD_IN_PROGRESS": 14, "COORDINATOR_NOT_AVAILABLE": 15,
        "NOT_COORDINATOR": 16, "INVALID_TOPIC_EXCEPTION": 17, "RECORD_LIST_TOO_LARGE": 18,
        "NOT_ENOUGH_REPLICAS": 19, "ILLEGAL_GENERATION": 22, "INCONSISTENT_GROUP_PROTOCOL": 23,
        "UNKNOWN_MEMBER_ID": 25, "INVALID_SESSION_TIMEOUT": 26, "REBALANCE_IN_PROGRESS": 27,
        "TOPIC_AUTHORIZATION_FAILED": 29, "GROUP_AUTHORIZATION_FAILED": 30,
        "UNSUPPORTED_VERSION": 35, "TOPIC_ALREADY_EXISTS": 36, "INVALID_PARTITIONS": 37,
        "INVALID_REPLICATION_FACTOR": 38, "INVALID_REQUEST": 42,
        "OUT_OF_ORDER_SEQUENCE_NUMBER": 45, "DUPLICATE_SEQUENCE_NUMBER": 46,
        "INVALID_PRODUCER_EPOCH": 47, "UNKNOWN_SERVER_ERROR": -1, "MEMBER_ID_REQUIRED": 79,
        "PRODUCER_FENCED": 90, "UNKNOWN_PRODUCER_ID": 59, "UNSUPPORTED_COMPRESSION_TYPE": 76,
    }
    for name, code in expected.items():
        assert ErrorCode[name] == code, name
    assert ErrorCode.NOT_LEADER_OR_FOLLOWER.retriable
    assert not ErrorCode.TOPIC_AUTHORIZATION_FAILED.retriable
    assert ErrorCode.of(35) is ErrorCode.UNSUPPORTED_VERSION and ErrorCode.of(9999) == 9999
    # kafka-python's own table agrees where it names the same errors.
    import kafka.errors as kerr

    for cls in vars(kerr).values():
        if isinstance(cls, type) and issubclass(cls, kerr.BrokerResponseError) and cls.errno:
            ours = ErrorCode.of(cls.errno)
            assert isinstance(ours, ErrorCode), cls


_blobs = st.one_of(st.none(), st.binary(max_size=64))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(_blobs, _blobs, st.integers(-(1 << 40), 1 << 40),
                       st.lists(st.tuples(st.text(max_size=8), _blobs), max_size=3)),
             min_size=1, max_size=8),
    st.sampled_from(ALL_CODECS),
    st.integers(0, (1 << 62)),
)
def test_batches_round_trip_hypothesis(
    entries: list[tuple[bytes | None, bytes | None, int, list[tuple[str, bytes | None]]]],
    codec: Codec, base_offset: int,
) -> None:
    batch = build_batch([NewRecord(v, k, ts, h) for k, v, ts, h in entries],
                        base_offset=base_offset, compression=codec)
    data = batch.encode()
    assert RecordBatch.decode(data) == batch
    assert [(r.key, r.value, batch.timestamp_of(r), r.headers) for r in batch.records] == [
        (k, v, ts, h) for k, v, ts, h in entries]
    moved = restamp(data, base_offset // 2)
    assert RecordBatch.decode(moved).base_offset == base_offset // 2
