"""Record batches, message format v2 (magic 2): what Produce carries in and Fetch carries out.

Since Kafka 0.11 a partition's data is a sequence of record batches, and a broker stores and
serves them as the producer built them: the log is batches end to end. The layout (Kafka's
DefaultRecordBatch, all big-endian) is a 61-byte header and then the records:

| offset | field | notes |
| --- | --- | --- |
| 0 | baseOffset int64 | assigned by the broker on append |
| 8 | batchLength int32 | bytes after this field (total size - 12) |
| 12 | partitionLeaderEpoch int32 | set by the broker on append |
| 16 | magic int8 | 2 |
| 17 | crc uint32 | CRC-32C (Castagnoli) of everything from attributes to the end |
| 21 | attributes int16 | bits 0-2 codec, 3 timestamp type, 4 transactional, 5 control, 6 delete horizon |
| 23 | lastOffsetDelta int32 | offset of the last record minus baseOffset |
| 27 | baseTimestamp int64, then maxTimestamp int64 | |
| 43 | producerId int64, producerEpoch int16, baseSequence int32 | idempotence; -1 when unused |
| 57 | records count int32 | then the records, compressed as a whole if the codec says so |

and each record is a varint length followed by attributes int8, timestampDelta varlong,
offsetDelta varint, key and value (varint length, -1 for null) and a varint count of headers
(key: varint length + UTF-8, value: varint length or -1).

Because the CRC starts at attributes, the two fields a broker rewrites on append, baseOffset
and partitionLeaderEpoch, lie outside it: `restamp` patches them in place without touching
the CRC or the (possibly compressed) records, which is how Kafka appends a producer's batch
without re-encoding it (the tests verify the CRC still checks). Switching a batch to
LOG_APPEND_TIME does change covered bytes (attributes and maxTimestamp), so
`set_log_append_time` recomputes the CRC, still without re-encoding the records.

Decoding checks everything before believing it: the size and batchLength agree with the
bytes given, the magic is 2, the CRC matches (else `CorruptRecord`), the decompressed size is
bounded (`RecordTooLarge`), the records count fits in the bytes at a record's smallest size
(7 bytes), each record's fields end exactly at its length, and nothing follows the last
record. `iter_batches` walks a partition's concatenated batches, reading only headers, with
an option to stop quietly at a truncated last batch (a Fetch response may end in one, since
brokers cut at max bytes).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import crc32c as _crc32c

from .compression import Codec, compress, decompress
from .exceptions import CorruptRecord, LocalProtocolError, RecordTooLarge
from .primitives import Reader, Writer

MAGIC = 2
LOG_OVERHEAD = 12  # baseOffset + batchLength: the bytes batchLength does not count
HEADER_SIZE = 61
CRC_OFFSET = 17
ATTRIBUTES_OFFSET = 21  # the CRC covers from here to the end of the batch
MAX_TIMESTAMP_OFFSET = 35
MIN_RECORD_SIZE = 7  # length, attributes, timestamp, offset, key, value, headers: 1 byte each
DEFAULT_MAX_UNCOMPRESSED = 64 * 1024 * 1024

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
NO_PARTITION_LEADER_EPOCH = -1
NO_TIMESTAMP = -1

_COMPRESSION_MASK = 0x07
_TIMESTAMP_TYPE = 0x08
_TRANSACTIONAL = 0x10
_CONTROL = 0x20
_DELETE_HORIZON = 0x40

_Data = TypeVar("_Data", bytes, memoryview)
_HEADER = struct.Struct(">qiibIhiqqqhii")
assert _HEADER.size == HEADER_SIZE
_I64 = struct.Struct(">q")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I16 = struct.Struct(">h")


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC-32C (Castagnoli), the checksum of v2 batches; `value` continues an earlier one."""
    return int(_crc32c.crc32c(data, value))


class TimestampType(enum.IntEnum):
    CREATE_TIME = 0
    LOG_APPEND_TIME = 1


Header = tuple[str, bytes | None]


@dataclass(slots=True)
class Record:
    """One record of a v2 batch, with offset and timestamp relative to the batch."""

    offset_delta: int = 0
    timestamp_delta: int = 0
    key: bytes | None = None
    value: bytes | None = None
    headers: list[Header] = field(default_factory=list)
    attributes: int = 0  # unused by Kafka; kept so a decoded record re-encodes identically


@dataclass(slots=True)
class BatchHeader:
    """The fixed 61 bytes of a v2 batch, read without touching its records."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def size(self) -> int:
        """The whole batch's size in bytes."""
        return LOG_OVERHEAD + self.batch_length

    @property
    def compression(self) -> int:
        return self.attributes & _COMPRESSION_MASK

    @property
    def timestamp_type(self) -> TimestampType:
        return TimestampType((self.attributes & _TIMESTAMP_TYPE) >> 3)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & _TRANSACTIONAL)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & _CONTROL)

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.last_offset + 1


@dataclass(slots=True)
class RecordBatch:
    """A decoded (or to-be-encoded) v2 batch. `encode` writes exactly these fields."""

    base_offset: int = 0
    partition_leader_epoch: int = NO_PARTITION_LEADER_EPOCH
    compression: Codec = Codec.NONE
    timestamp_type: TimestampType = TimestampType.CREATE_TIME
    is_transactional: bool = False
    is_control: bool = False
    has_delete_horizon: bool = False
    last_offset_delta: int = -1
    base_timestamp: int = NO_TIMESTAMP
    max_timestamp: int = NO_TIMESTAMP
    producer_id: int = NO_PRODUCER_ID
    producer_epoch: int = NO_PRODUCER_EPOCH
    base_sequence: int = NO_SEQUENCE
    records: list[Record] = field(default_factory=list)

    @property
    def attributes(self) -> int:
        return (int(self.compression) | (int(self.timestamp_type) << 3)
                | (_TRANSACTIONAL if self.is_transactional else 0)
                | (_CONTROL if self.is_control else 0)
                | (_DELETE_HORIZON if self.has_delete_horizon else 0))

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    def offset_of(self, record: Record) -> int:
        return self.base_offset + record.offset_delta

    def timestamp_of(self, record: Record) -> int:
        """A record's timestamp: the batch's max for LOG_APPEND_TIME, as Kafka reads it."""
        if self.timestamp_type == TimestampType.LOG_APPEND_TIME:
            return self.max_timestamp
        return self.base_timestamp + record.timestamp_delta

    def encode(self, level: int | None = None) -> bytes:
        """The batch's bytes, records compressed with `self.compression` (at `level`)."""
        w = Writer()
        for rec in self.records:
            _encode_record(w, rec)
        payload = compress(self.compression, w.getvalue(), level)
        out = bytearray(HEADER_SIZE)
        out += payload
        try:
            _HEADER.pack_into(
                out, 0, self.base_offset, len(out) - LOG_OVERHEAD, self.partition_leader_epoch,
                MAGIC, 0, self.attributes, self.last_offset_delta, self.base_timestamp,
                self.max_timestamp, self.producer_id, self.producer_epoch, self.base_sequence,
                len(self.records),
            )
        except struct.error as e:
            raise LocalProtocolError(f"record batch field out of range: {e}") from None
        _U32.pack_into(out, CRC_OFFSET, crc32c(memoryview(out)[ATTRIBUTES_OFFSET:]))
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes, max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED
               ) -> RecordBatch:
        """Exactly one batch, verified (see the module docstring for what is checked)."""
        return _decode_batch(data, max_uncompressed)[0]


def _decode_batch(data: bytes, max_uncompressed: int) -> tuple[RecordBatch, int]:
    """The batch in `data`, and the size of its records once decompressed."""
    h = read_header(data, 0)
    if h.size != len(data):
        raise CorruptRecord(f"batch length says {h.size} bytes, {len(data)} given")
    _check_crc(data, 0, h)
    codec = h.compression
    payload = decompress(codec, data[HEADER_SIZE:], max_uncompressed)  # unknown codec: raises
    count = h.records_count
    if count < 0 or count * MIN_RECORD_SIZE > len(payload):
        raise CorruptRecord(f"{count} records cannot fit in {len(payload)} bytes")
    r = Reader(payload, error=CorruptRecord)
    r.spend(count)
    records = [_decode_record(r) for _ in range(count)]
    r.expect_end(f"the {count} records of the batch")
    batch = RecordBatch(
        base_offset=h.base_offset, partition_leader_epoch=h.partition_leader_epoch,
        compression=Codec(codec), timestamp_type=h.timestamp_type,
        is_transactional=h.is_transactional, is_control=h.is_control,
        has_delete_horizon=bool(h.attributes & _DELETE_HORIZON),
        last_offset_delta=h.last_offset_delta, base_timestamp=h.base_timestamp,
        max_timestamp=h.max_timestamp, producer_id=h.producer_id,
        producer_epoch=h.producer_epoch, base_sequence=h.base_sequence, records=records,
    )
    return batch, len(payload)


def read_header(data: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """The v2 header at `pos`, checked for magic and a plausible length (not the CRC)."""
    if len(data) - pos < HEADER_SIZE:
        # The magic byte sits at 16, so a short legacy message can still be told apart.
        raise CorruptRecord(f"{len(data) - pos} bytes cannot hold a record batch header")
    h = BatchHeader(*_HEADER.unpack_from(data, pos))
    if h.magic != MAGIC:
        raise CorruptRecord(f"record batch magic {h.magic}, expected {MAGIC}"
                            + (" (legacy message set: see legacy.py)" if h.magic in (0, 1)
                               else ""))
    if h.batch_length < HEADER_SIZE - LOG_OVERHEAD:
        raise CorruptRecord(f"batch length {h.batch_length} shorter than its header")
    return h


def _check_crc(data: bytes | bytearray | memoryview, pos: int, h: BatchHeader) -> None:
    actual = crc32c(memoryview(data)[pos + ATTRIBUTES_OFFSET : pos + h.size])
    if actual != h.crc:
        raise CorruptRecord(f"batch at offset {h.base_offset}: CRC {actual:#010x}, "
                            f"header says {h.crc:#010x}")


def verify_crc(batch: bytes | bytearray | memoryview) -> None:
    """Raise CorruptRecord unless `batch` (one whole batch) has a good CRC."""
    h = read_header(batch, 0)
    if h.size != len(batch):
        raise CorruptRecord(f"batch length says {h.size} bytes, {len(batch)} given")
    _check_crc(batch, 0, h)


def iter_batches(
    data: _Data, *, allow_truncated_tail: bool = False, verify: bool = True,
    max_batch_size: int | None = None,
) -> Iterator[tuple[BatchHeader, _Data]]:
    """(header, bytes) of each batch in a partition's records, CRCs checked if `verify`; given
    a memoryview, each batch is a view into it (no copy).

    With `allow_truncated_tail`, a last batch cut short ends the walk (Fetch responses may end
    so); otherwise it is CorruptRecord. A batch larger than `max_batch_size` (a broker's
    message.max.bytes) is RecordTooLarge, found from its header alone."""
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < LOG_OVERHEAD + 5:  # through the magic byte
            if allow_truncated_tail:
                return
            raise CorruptRecord(f"{end - pos} trailing bytes are not a batch")
        (length,) = _I32.unpack_from(data, pos + 8)
        if length >= 0 and pos + LOG_OVERHEAD + length > end and allow_truncated_tail:
            return
        h = read_header(data, pos)
        if max_batch_size is not None and h.size > max_batch_size:
            raise RecordTooLarge(f"batch of {h.size} bytes over the limit of {max_batch_size}")
        if pos + h.size > end:
            raise CorruptRecord(f"batch of {h.size} bytes runs past the records' end")
        if verify:
            _check_crc(data, pos, h)
        yield h, data[pos : pos + h.size]
        pos += h.size


def restamp(batch: bytes | bytearray | memoryview, base_offset: int,
            partition_leader_epoch: int | None = None) -> bytes:
    """`batch` with a new baseOffset (and leader epoch): the broker's append, no re-encoding.

    Both fields precede the CRC'd range, so the CRC stays valid. One copy of the batch, made
    by joining the new fields to the rest (a batch may be a megabyte, copied per replica)."""
    h = read_header(batch)
    if not -(1 << 63) <= base_offset < (1 << 63) - h.last_offset_delta:
        raise LocalProtocolError(f"base offset {base_offset} out of range")
    view = memoryview(batch)
    if partition_leader_epoch is None:
        return b"".join((_I64.pack(base_offset), view[8:]))
    return b"".join((_I64.pack(base_offset), view[8:12], _I32.pack(partition_leader_epoch),
                     view[16:]))


def restamp_into(buf: bytearray, pos: int, base_offset: int,
                 partition_leader_epoch: int | None = None) -> None:
    """`restamp` in place, for the batch starting at `pos` in `buf`."""
    h = read_header(buf, pos)
    if not -(1 << 63) <= base_offset < (1 << 63) - h.last_offset_delta:
        raise LocalProtocolError(f"base offset {base_offset} out of range")
    _I64.pack_into(buf, pos, base_offset)
    if partition_leader_epoch is not None:
        _I32.pack_into(buf, pos + 12, partition_leader_epoch)
    assert read_header(buf, pos).crc == h.crc  # untouched: the CRC starts at attributes


def set_log_append_time(batch: bytes | bytearray, timestamp: int) -> bytes:
    """`batch` switched to LOG_APPEND_TIME at `timestamp`, CRC recomputed, records untouched."""
    buf = bytearray(batch)
    h = read_header(buf, 0)
    _I16.pack_into(buf, ATTRIBUTES_OFFSET, h.attributes | _TIMESTAMP_TYPE)
    _I64.pack_into(buf, MAX_TIMESTAMP_OFFSET, timestamp)
    _U32.pack_into(buf, CRC_OFFSET, crc32c(memoryview(buf)[ATTRIBUTES_OFFSET : h.size]))
    return bytes(buf)


def _encode_record(w: Writer, rec: Record) -> None:
    body = Writer()
    body.int8(rec.attributes)
    body.varlong(rec.timestamp_delta)
    body.varint(rec.offset_delta)
    _varbytes(body, rec.key)
    _varbytes(body, rec.value)
    body.varint(len(rec.headers))
    for k, v in rec.headers:
        kb = k.encode("utf-8", "surrogateescape")
        body.varint(len(kb))
        body.raw(kb)
        _varbytes(body, v)
    w.varint(len(body))
    w.raw(body.buf)


def _varbytes(w: Writer, v: bytes | None) -> None:
    if v is None:
        w.varint(-1)
    else:
        w.varint(len(v))
        w.raw(v)


def _read_varbytes(r: Reader, what: str) -> bytes | None:
    n = r.varint()
    if n < -1:
        raise r.fail(f"{what} length {n}")
    return None if n == -1 else r.raw(n, what)


def _decode_record(r: Reader) -> Record:
    n = r.varint()
    if n < MIN_RECORD_SIZE - 1:
        raise r.fail(f"record length {n}")
    s = r.sub(n, "record")
    attributes = s.int8()
    ts = s.varlong()
    od = s.varint()
    key = _read_varbytes(s, "record key")
    value = _read_varbytes(s, "record value")
    nh = s.varint()
    if nh < 0 or 2 * nh > s.remaining:  # a header is at least two 1-byte lengths
        raise s.fail(f"{nh} record headers in {s.remaining} bytes")
    s.spend(nh)
    headers: list[Header] = []
    for _ in range(nh):
        kl = s.varint()
        if kl < 0:
            raise s.fail(f"record header key length {kl}")
        hk = s.raw(kl, "header key").decode("utf-8", "surrogateescape")
        headers.append((hk, _read_varbytes(s, "header value")))
    s.expect_end("record")
    return Record(od, ts, key, value, headers, attributes)


@dataclass(slots=True)
class NewRecord:
    """A record as a producer states it: absolute timestamp, no offsets yet."""

    value: bytes | None
    key: bytes | None = None
    timestamp: int = NO_TIMESTAMP
    headers: Sequence[Header] = ()


def build_batch(
    entries: Iterable[NewRecord],
    *,
    base_offset: int = 0,
    compression: Codec = Codec.NONE,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = NO_PRODUCER_EPOCH,
    base_sequence: int = NO_SEQUENCE,
    is_transactional: bool = False,
    partition_leader_epoch: int = NO_PARTITION_LEADER_EPOCH,
) -> RecordBatch:
    """A batch of consecutive records with deltas and max timestamp computed, as producers do.

    The base timestamp is the first record's, as Kafka's MemoryRecordsBuilder sets it."""
    items = list(entries)
    if not items:
        raise LocalProtocolError("a record batch needs at least one record")
    base_ts = items[0].timestamp
    records = [Record(i, e.timestamp - base_ts, e.key, e.value, list(e.headers))
               for i, e in enumerate(items)]
    return RecordBatch(
        base_offset=base_offset, partition_leader_epoch=partition_leader_epoch,
        compression=compression, is_transactional=is_transactional,
        last_offset_delta=len(items) - 1, base_timestamp=base_ts,
        max_timestamp=max(e.timestamp for e in items), producer_id=producer_id,
        producer_epoch=producer_epoch, base_sequence=base_sequence, records=records,
    )


def decode_batches(data: bytes, max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED,
                   *, allow_truncated_tail: bool = False) -> list[RecordBatch]:
    """Every batch in a partition's records, decoded. The uncompressed bound is for all of
    them together, so many small batches cannot add up past it either."""
    out = []
    budget = max_uncompressed
    for _, raw in iter_batches(data, allow_truncated_tail=allow_truncated_tail):
        batch, size = _decode_batch(raw, budget)  # RecordTooLarge once the budget is spent
        budget -= size
        out.append(batch)
    return out
