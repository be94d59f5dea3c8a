"""The record-batch compression codecs, in the exact wire formats Kafka's clients use.

A batch's attributes name its codec in the low three bits (0 none, 1 gzip, 2 snappy, 3 lz4,
4 zstd) and the records after the batch header are that codec's output. Each codec has a
wire-format subtlety that decides whether Java, librdkafka and the Python clients can read
what we write and we can read what they write:

- gzip: one RFC 1952 member, as java.util.zip.GZIPOutputStream writes (stdlib zlib). Several
  concatenated members are read too.
- snappy: the Java client writes snappy-java's *xerial* framing (an 8-byte magic
  `\\x82SNAPPY\\0`, two int32 versions, then blocks of an int32 length and a raw snappy
  block), not the official snappy framing format; librdkafka writes raw snappy and reads
  both. We write xerial (32 KiB blocks, snappy-java's default) and read both.
- lz4: the LZ4 *frame* format (magic 0x184D2204), with independent blocks: Kafka's
  Lz4BlockInputStream refuses dependent (linked) blocks, which is the lz4 library's default
  and cramjam's, so the compressor is asked for independent blocks explicitly. (Magic 0
  message sets used a broken header checksum; only legacy.py would meet those.)
- zstd: a standard zstd frame.

snappy, lz4 and zstd come from `cramjam` (one Rust extension with wheels for every
platform, also what aiokafka uses); gzip from the standard library.

Decompression is bounded: every codec stops once the output would pass `max_size` and raises
`RecordTooLarge`, so a small batch cannot inflate into gigabytes (a zip bomb). gzip streams
with zlib's max_length; snappy reads the uncompressed length a raw block declares before
inflating it; lz4 and zstd decompress into a buffer that starts near the compressed size and
doubles up to the bound. Malformed compressed data raises `CorruptRecord`.
"""

from __future__ import annotations

import enum
import struct
import zlib

import cramjam

from .exceptions import CorruptRecord, RecordTooLarge, UnsupportedCompression


class Codec(enum.IntEnum):
    """The compression codec in a batch's attributes (bits 0-2)."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = XERIAL_MAGIC + struct.pack(">ii", 1, 1)  # version 1, min compatible 1
_XERIAL_BLOCK = 32 * 1024  # snappy-java's default block size
_I32 = struct.Struct(">i")


def compress(codec: Codec, data: bytes, level: int | None = None) -> bytes:
    """`data` in `codec`'s Kafka wire format."""
    if codec == Codec.NONE:
        return data
    if codec == Codec.GZIP:
        c = zlib.compressobj(6 if level is None else level, zlib.DEFLATED, 31)
        return c.compress(data) + c.flush()
    if codec == Codec.SNAPPY:
        out = bytearray(_XERIAL_HEADER)
        for i in range(0, len(data), _XERIAL_BLOCK):
            block = bytes(cramjam.snappy.compress_raw(data[i : i + _XERIAL_BLOCK]))
            out += _I32.pack(len(block))
            out += block
        return bytes(out)
    if codec == Codec.LZ4:
        comp = cramjam.lz4.Compressor(level=level, content_checksum=False, block_linked=False)
        comp.compress(data)
        return bytes(comp.finish())
    if codec == Codec.ZSTD:
        return bytes(cramjam.zstd.compress(data, level=level))
    raise UnsupportedCompression(f"compression codec {int(codec)}")


def decompress(codec: int, data: bytes, max_size: int) -> bytes:
    """Inflate `data`; RecordTooLarge past `max_size` bytes, CorruptRecord if malformed."""
    assert max_size >= 0
    if codec == Codec.NONE:
        if len(data) > max_size:
            raise RecordTooLarge(f"{len(data)} bytes of records over {max_size}")
        return data
    if codec == Codec.GZIP:
        return _gunzip(data, max_size)
    if codec == Codec.SNAPPY:
        return _unsnappy(data, max_size)
    if codec == Codec.LZ4:
        return _grow(cramjam.lz4.decompress_into, "lz4", data, max_size)
    if codec == Codec.ZSTD:
        return _grow(cramjam.zstd.decompress_into, "zstd", data, max_size)
    raise UnsupportedCompression(f"unknown compression codec {codec}")


def _gunzip(data: bytes, max_size: int) -> bytes:
    out = bytearray()
    rest = data
    try:
        while True:
            d = zlib.decompressobj(31)
            out += d.decompress(rest, max_size - len(out) + 1)
            if len(out) > max_size or d.unconsumed_tail:
                raise RecordTooLarge(f"gzip records inflate past {max_size} bytes")
            if not d.eof:
                raise CorruptRecord("gzip records end in the middle of a stream")
            rest = d.unused_data
            if not rest:
                return bytes(out)
    except zlib.error as e:
        raise CorruptRecord(f"gzip: {e}") from None


def _unsnappy(data: bytes, max_size: int) -> bytes:
    if not data.startswith(XERIAL_MAGIC):
        return _raw_snappy(data, max_size)
    if len(data) < len(_XERIAL_HEADER):
        raise CorruptRecord("xerial snappy header truncated")
    out = bytearray()
    pos = len(_XERIAL_HEADER)
    while pos < len(data):
        if pos + 4 > len(data):
            raise CorruptRecord("xerial snappy block length truncated")
        (n,) = _I32.unpack_from(data, pos)
        pos += 4
        if n < 0 or pos + n > len(data):
            raise CorruptRecord(f"xerial snappy block of {n} bytes runs past the data")
        out += _raw_snappy(data[pos : pos + n], max_size - len(out))
        pos += n
    return bytes(out)


def _raw_snappy(block: bytes, max_size: int) -> bytes:
    try:
        n = int(cramjam.snappy.decompress_raw_len(block))
        if n > max_size:
            raise RecordTooLarge(f"snappy records inflate past {max_size} bytes")
        out = bytes(cramjam.snappy.decompress_raw(block))
    except cramjam.DecompressionError as e:
        raise CorruptRecord(f"snappy: {e}") from None
    if len(out) != n:
        raise CorruptRecord("snappy block shorter than its declared length")
    return out


def _grow(into: object, name: str, data: bytes, max_size: int) -> bytes:
    """Decompress into a buffer doubling from about 4x the input up to max_size."""
    size = min(max_size, max(4 * len(data), 64 * 1024))
    while True:
        buf = bytearray(size)
        try:
            n = into(data, buf)  # type: ignore[operator]
        except cramjam.DecompressionError as e:
            if "whole buffer" not in str(e):  # cramjam's "output too small": grow instead
                raise CorruptRecord(f"{name}: {e}") from None
            if size >= max_size:
                raise RecordTooLarge(f"{name} records inflate past {max_size} bytes") from None
            size = min(max_size, size * 2)
            continue
        return bytes(buf[:n])  # no error: the whole output fitted
