"""Legacy message sets (magic 0 and 1): read them into records, write them for old fetchers.

Before Kafka 0.11 a partition's data was a "message set": messages end to end, each

    offset int64, size int32, crc uint32 (CRC-32 of what follows), magic int8,
    attributes int8 (bits 0-2 codec, bit 3 timestamp type in magic 1),
    timestamp int64 (magic 1 only), key bytes (int32 length), value bytes (int32 length)

and compression wrapped a whole inner message set, compressed, as the value of one outer
message. In magic 1 the inner offsets are relative (0..n-1) and the wrapper carries the
absolute offset of the last inner message; in magic 0 inner offsets are absolute. Produce
v0-2 carry these, and Fetch v0-3 clients can only read these, which is why Shoal's
advertised ranges start at Produce v3 and Fetch v4 (where every client that negotiates
versions already is). A server that widens them uses this module to convert:
`decode_message_set` and `to_record_batch` up-convert a legacy produce into a v2 batch for
the log, `encode_message_set` down-converts records for an old fetcher.

The magic byte is at offset 16 in both formats (after offset, size and CRC, or after
baseOffset, batchLength and partitionLeaderEpoch), so `records_magic` tells them apart
before either decoder commits. Decoding is bounded like v2's: sizes are checked against the
bytes present, inflated wrappers against `max_uncompressed`, and a nested compressed wrapper
is refused, as Kafka refuses it. Magic 0 LZ4 (which used a broken frame header checksum) and
zstd (never legal before magic 2) are refused as `UnsupportedCompression`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from .compression import Codec, compress, decompress
from .exceptions import CorruptRecord, LocalProtocolError, UnsupportedCompression
from .primitives import Reader
from .records import (
    DEFAULT_MAX_UNCOMPRESSED,
    NO_TIMESTAMP,
    Record,
    RecordBatch,
    TimestampType,
)

_MIN_SIZE = {0: 14, 1: 22}  # crc..value with null key and value
_TIMESTAMP_TYPE = 0x08


@dataclass(slots=True)
class LegacyRecord:
    """One message of a legacy set, with its absolute offset."""

    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp: int = NO_TIMESTAMP
    timestamp_type: TimestampType = TimestampType.CREATE_TIME
    magic: int = 1


def records_magic(data: bytes) -> int | None:
    """The magic of the first batch or message in `data` (None if too short to say)."""
    return data[16] if len(data) > 16 else None


def decode_message_set(
    data: bytes, max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED,
    *, allow_truncated_tail: bool = False,
) -> list[LegacyRecord]:
    """Every message in a legacy set, wrappers unpacked, offsets made absolute."""
    out: list[LegacyRecord] = []
    _decode(data, max_uncompressed, allow_truncated_tail, out, nested=False)
    return out


def _decode(data: bytes, budget: int, allow_tail: bool, out: list[LegacyRecord],
            nested: bool) -> int:
    """Append data's messages to out; return the budget left."""
    r = Reader(data, error=CorruptRecord)
    while r.remaining:
        if r.remaining < 12 + _MIN_SIZE[0]:
            if allow_tail:
                return budget
            raise r.fail("trailing bytes shorter than a message")
        offset = r.int64()
        size = r.int32()
        if size < _MIN_SIZE[0] or size > r.remaining:
            if allow_tail and size > r.remaining:
                return budget
            raise r.fail(f"message size {size}")
        m = r.sub(size, "message")
        crc = m.uint32()
        if zlib.crc32(data[m.pos : m.pos + size - 4]) != crc:
            raise CorruptRecord(f"message at offset {offset}: CRC mismatch")
        magic = m.int8()
        if magic not in (0, 1):
            raise CorruptRecord(f"message magic {magic} inside a legacy message set")
        if size < _MIN_SIZE[magic]:
            raise m.fail(f"magic {magic} message of {size} bytes")
        attributes = m.int8()
        timestamp = m.int64() if magic == 1 else NO_TIMESTAMP
        key = m.blob(False, True)
        value = m.blob(False, True)
        m.expect_end("message")
        ts_type = TimestampType((attributes & _TIMESTAMP_TYPE) >> 3) if magic == 1 else (
            TimestampType.CREATE_TIME)
        codec = attributes & 0x07
        if codec == Codec.NONE:
            r.spend(1)
            out.append(LegacyRecord(offset, value, key, timestamp, ts_type, magic))
            continue
        if nested:
            raise CorruptRecord("compressed message inside a compressed message")
        if codec == Codec.ZSTD or codec > Codec.ZSTD or (codec == Codec.LZ4 and magic == 0):
            raise UnsupportedCompression(f"codec {codec} in a magic {magic} message")
        if value is None:
            raise CorruptRecord("compressed wrapper without a value")
        inner_data = decompress(codec, value, budget)
        budget -= len(inner_data)
        inner: list[LegacyRecord] = []
        budget = _decode(inner_data, budget, False, inner, nested=True)
        if not inner:
            raise CorruptRecord("compressed wrapper holds no messages")
        if magic == 1:  # relative inner offsets: the wrapper holds the last absolute one
            # A producer's wrapper says 0 (the broker assigns offsets); Kafka then keeps the
            # relative offsets rather than going negative, and so do we.
            shift = offset - inner[-1].offset
            for rec in inner:
                if shift >= 0:
                    rec.offset += shift
                if ts_type == TimestampType.LOG_APPEND_TIME:
                    rec.timestamp, rec.timestamp_type = timestamp, ts_type
        out.extend(inner)
    return budget


def to_record_batch(records: Sequence[LegacyRecord], *, compression: Codec = Codec.NONE,
                    producer_id: int = -1, producer_epoch: int = -1,
                    base_sequence: int = -1) -> RecordBatch:
    """Up-convert legacy messages into one v2 batch (offsets and timestamps kept)."""
    if not records:
        raise LocalProtocolError("no records to convert")
    base = records[0].offset
    stamped = [r.timestamp for r in records if r.timestamp != NO_TIMESTAMP]
    base_ts = stamped[0] if stamped else NO_TIMESTAMP
    recs = [
        Record(r.offset - base, 0 if r.timestamp == NO_TIMESTAMP else r.timestamp - base_ts,
               r.key, r.value, [])
        for r in records
    ]
    log_append = records[0].timestamp_type == TimestampType.LOG_APPEND_TIME
    return RecordBatch(
        base_offset=base, compression=compression,
        timestamp_type=TimestampType.LOG_APPEND_TIME if log_append else (
            TimestampType.CREATE_TIME),
        last_offset_delta=records[-1].offset - base, base_timestamp=base_ts,
        max_timestamp=max(stamped) if stamped else NO_TIMESTAMP, producer_id=producer_id,
        producer_epoch=producer_epoch, base_sequence=base_sequence, records=recs,
    )


def _message(offset: int, magic: int, attributes: int, timestamp: int,
             key: bytes | None, value: bytes | None) -> bytes:
    body = bytearray(struct.pack(">bb", magic, attributes))
    if magic == 1:
        body += struct.pack(">q", timestamp)
    for v in (key, value):
        if v is None:
            body += struct.pack(">i", -1)
        else:
            body += struct.pack(">i", len(v)) + v
    crc = zlib.crc32(body)
    return struct.pack(">qiI", offset, len(body) + 4, crc) + bytes(body)


def encode_message_set(records: Sequence[LegacyRecord], *, magic: int = 1,
                       compression: Codec = Codec.NONE) -> bytes:
    """A legacy message set of `records` (down-conversion for Fetch v0-3)."""
    if magic not in (0, 1):
        raise LocalProtocolError(f"legacy magic is 0 or 1, not {magic}")
    if compression == Codec.ZSTD or (compression == Codec.LZ4 and magic == 0):
        raise LocalProtocolError(f"codec {compression.name} is not legal at magic {magic}")
    if compression == Codec.NONE:
        return b"".join(_message(r.offset, magic, 0, r.timestamp, r.key, r.value)
                        for r in records)
    if not records:
        return b""
    first = records[0].offset
    inner = b"".join(
        _message(r.offset - first if magic == 1 else r.offset, magic, 0, r.timestamp,
                 r.key, r.value)
        for r in records
    )
    wrapper_ts = max(r.timestamp for r in records)
    return _message(records[-1].offset, magic, int(compression), wrapper_ts, None,
                    compress(compression, inner))
