"""Kafka's primitive types: a bounded `Reader` over received bytes and a `Writer` that builds.

Kafka's protocol guide defines every message out of a dozen primitives, and each comes in the
classic form and, since KIP-482's "flexible versions", a compact form:

| type | classic | compact (flexible versions) |
| --- | --- | --- |
| int8/16/32/64, uint16/32, float64 | big-endian, fixed width | the same |
| bool | one byte, 0 is false | the same |
| uuid | 16 bytes | the same |
| string | int16 length, UTF-8 | unsigned varint length + 1 |
| nullable string | length -1 is null | 0 is null |
| bytes / records | int32 length | unsigned varint length + 1 (0 is null) |
| array | int32 count (-1 null) | unsigned varint count + 1 (0 null) |
| varint / varlong | zigzag, 7 bits a byte, at most 5 / 10 bytes (record batches) | |

Decoding is where the bounds live, because the bytes come from a peer that may be broken or
hostile. Every length and count is checked against the bytes that remain *before* anything is
sliced or allocated: a string length is refused if it runs past the end, an array count is
refused if its elements could not fit even at their smallest encoding (`array_length` takes
that smallest size), so a five-byte frame cannot announce two billion elements. On top of
that each Reader carries an element budget shared with its sub-readers, because a byte of
input can become a Python object worth a hundred bytes (see shoal.wire.bounded for that
lesson measured); a message that would build more objects than the budget is refused. A
varint longer than its type allows, or whose last byte carries bits past the type's width, is
malformed, not silently truncated as Java's ByteUtils does.

Errors are raised as the class the Reader was made with (`RemoteProtocolError` for request
framing, `CorruptRecord` inside record batches), so the same code serves both layers and the
caller's reaction stays right. The Writer raises `LocalProtocolError` for values out of range:
those are our bugs, caught before a byte leaves.
"""

from __future__ import annotations

import struct
import uuid

from .exceptions import LocalProtocolError, RemoteProtocolError

_I8 = struct.Struct(">b")
_U8 = struct.Struct(">B")
_I16 = struct.Struct(">h")
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")

ZERO_UUID = uuid.UUID(int=0)
MAX_STRING = 0x7FFF  # Kafka refuses longer strings even in compact form (generated readers)
DEFAULT_ELEMENT_BUDGET = 1 << 20  # array elements one message may build (see module doc)

_RANGES = {
    "int8": (-(1 << 7), (1 << 7) - 1),
    "int16": (-(1 << 15), (1 << 15) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
    "uint16": (0, (1 << 16) - 1),
    "uint32": (0, (1 << 32) - 1),
}


class _Budget:
    """Array elements still allowed, shared by a Reader and its sub-readers."""

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


class Reader:
    """Reads Kafka primitives from `data[start:end]`, never past `end`.

    Every method either returns a value and advances, or raises `error` (a subclass of
    RemoteProtocolError) leaving the position unspecified: a failed read ends the decode.
    """

    __slots__ = ("_buf", "_pos", "_end", "error", "_budget")

    def __init__(
        self,
        data: bytes | bytearray | memoryview,
        start: int = 0,
        end: int | None = None,
        *,
        error: type[RemoteProtocolError] = RemoteProtocolError,
        element_budget: int = DEFAULT_ELEMENT_BUDGET,
        _budget: _Budget | None = None,
    ) -> None:
        self._buf = data if isinstance(data, bytes) else bytes(data)
        self._end = len(self._buf) if end is None else end
        assert 0 <= start <= self._end <= len(self._buf), (start, self._end, len(self._buf))
        self._pos = start
        self.error = error
        self._budget = _budget if _budget is not None else _Budget(element_budget)

    @property
    def pos(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    @property
    def buffer(self) -> bytes:
        return self._buf

    def fail(self, what: str) -> RemoteProtocolError:
        """The exception for a malformed `what` at the current position (for raising)."""
        return self.error(f"{what} at byte {self._pos}")

    def _take(self, n: int, what: str) -> int:
        """Advance past n bytes, returning where they start; refuse if they are not there."""
        if n < 0 or n > self._end - self._pos:
            raise self.fail(f"truncated {what}: needs {n} bytes, {self._end - self._pos} left")
        p = self._pos
        self._pos = p + n
        return p

    def sub(self, n: int, what: str) -> Reader:
        """A Reader over the next n bytes (a tagged field, a record), sharing the budget."""
        p = self._take(n, what)
        return Reader(self._buf, p, p + n, error=self.error, _budget=self._budget)

    def skip(self, n: int, what: str) -> None:
        self._take(n, what)

    def expect_end(self, what: str) -> None:
        if self._pos != self._end:
            raise self.fail(f"{self._end - self._pos} trailing bytes after {what}")

    # -- fixed width --------------------------------------------------------------------------

    def int8(self) -> int:
        return int(_I8.unpack_from(self._buf, self._take(1, "int8"))[0])

    def uint8(self) -> int:
        return int(_U8.unpack_from(self._buf, self._take(1, "uint8"))[0])

    def int16(self) -> int:
        return int(_I16.unpack_from(self._buf, self._take(2, "int16"))[0])

    def uint16(self) -> int:
        return int(_U16.unpack_from(self._buf, self._take(2, "uint16"))[0])

    def int32(self) -> int:
        return int(_I32.unpack_from(self._buf, self._take(4, "int32"))[0])

    def uint32(self) -> int:
        return int(_U32.unpack_from(self._buf, self._take(4, "uint32"))[0])

    def int64(self) -> int:
        return int(_I64.unpack_from(self._buf, self._take(8, "int64"))[0])

    def float64(self) -> float:
        return float(_F64.unpack_from(self._buf, self._take(8, "float64"))[0])

    def boolean(self) -> bool:
        return self._buf[self._take(1, "bool")] != 0  # Java reads any non-zero byte as true

    def uuid_(self) -> uuid.UUID:
        p = self._take(16, "uuid")
        return uuid.UUID(bytes=self._buf[p : p + 16])

    def raw(self, n: int, what: str = "bytes") -> bytes:
        p = self._take(n, what)
        return self._buf[p : p + n]

    # -- varints ------------------------------------------------------------------------------

    def _uvar(self, max_bytes: int, last_mask: int, what: str) -> int:
        result = 0
        buf, end = self._buf, self._end
        for i in range(max_bytes):
            if self._pos >= end:
                raise self.fail(f"truncated {what}")
            b = buf[self._pos]
            self._pos += 1
            if i == max_bytes - 1:
                if b & ~last_mask:  # continuation or bits past the type's width
                    raise self.fail(f"{what} longer than {max_bytes} bytes or out of range")
                return result | (b << (7 * i))
            result |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                return result
        raise AssertionError("unreachable")

    def uvarint(self) -> int:
        """Unsigned varint of at most 32 bits (5 bytes, the last holding 4 bits)."""
        return self._uvar(5, 0x0F, "unsigned varint")

    def varint(self) -> int:
        """Zigzag-encoded signed 32-bit varint."""
        n = self._uvar(5, 0x0F, "varint")
        return (n >> 1) ^ -(n & 1)

    def varlong(self) -> int:
        """Zigzag-encoded signed 64-bit varint (10 bytes, the last holding 1 bit)."""
        n = self._uvar(10, 0x01, "varlong")
        return (n >> 1) ^ -(n & 1)

    # -- lengths and sized values -------------------------------------------------------------

    def _length(self, compact: bool, wide: bool, what: str) -> int:
        """A length prefix: -1 means null. Compact lengths are stored as n + 1."""
        if compact:
            return self.uvarint() - 1
        return self.int32() if wide else self.int16()

    def string(self, compact: bool = False, nullable: bool = False) -> str | None:
        n = self._length(compact, False, "string")
        if n < 0:
            if n == -1 and nullable:
                return None
            raise self.fail("null or negative length for a non-nullable string")
        if n > MAX_STRING:
            raise self.fail(f"string length {n} over {MAX_STRING}")
        p = self._take(n, "string")
        try:
            return self._buf[p : p + n].decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"string is not UTF-8 ({e.reason})") from None

    def blob(self, compact: bool = False, nullable: bool = False) -> bytes | None:
        n = self._length(compact, True, "bytes")
        if n < 0:
            if n == -1 and nullable:
                return None
            raise self.fail("null or negative length for non-nullable bytes")
        p = self._take(n, "bytes")
        return self._buf[p : p + n]

    def array_length(self, compact: bool, nullable: bool, min_item_size: int) -> int | None:
        """An array's element count, None for a null array, refused if the elements could not
        fit in what remains at `min_item_size` bytes each, or would exhaust the budget."""
        n = self._length(compact, True, "array")
        if n < 0:
            if n == -1 and nullable:
                return None
            raise self.fail("null or negative count for a non-nullable array")
        if n * max(min_item_size, 1) > self._end - self._pos:
            raise self.fail(f"array of {n} elements cannot fit in {self.remaining} bytes")
        if n > self._budget.left:
            raise self.fail(f"array of {n} elements over the element budget")
        self._budget.left -= n
        return n

    def spend(self, n: int) -> None:
        """Charge n elements to the budget (record counts, which are not Kafka arrays)."""
        if n > self._budget.left:
            raise self.fail(f"{n} elements over the element budget")
        self._budget.left -= n


class Writer:
    """Builds Kafka primitives into a bytearray. Out-of-range values are our bug."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def getvalue(self) -> bytes:
        return bytes(self.buf)

    def __len__(self) -> int:
        return len(self.buf)

    @staticmethod
    def check(kind: str, value: int) -> None:
        lo, hi = _RANGES[kind]
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise LocalProtocolError(f"{value!r} is not a valid {kind}")

    def int8(self, v: int) -> None:
        self.check("int8", v)
        self.buf += _I8.pack(v)

    def int16(self, v: int) -> None:
        self.check("int16", v)
        self.buf += _I16.pack(v)

    def uint16(self, v: int) -> None:
        self.check("uint16", v)
        self.buf += _U16.pack(v)

    def int32(self, v: int) -> None:
        self.check("int32", v)
        self.buf += _I32.pack(v)

    def uint32(self, v: int) -> None:
        self.check("uint32", v)
        self.buf += _U32.pack(v)

    def int64(self, v: int) -> None:
        self.check("int64", v)
        self.buf += _I64.pack(v)

    def float64(self, v: float) -> None:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise LocalProtocolError(f"{v!r} is not a float64")
        self.buf += _F64.pack(v)

    def boolean(self, v: bool) -> None:
        if not isinstance(v, bool):
            raise LocalProtocolError(f"{v!r} is not a bool")
        self.buf.append(1 if v else 0)

    def uuid_(self, v: uuid.UUID) -> None:
        if not isinstance(v, uuid.UUID):
            raise LocalProtocolError(f"{v!r} is not a UUID")
        self.buf += v.bytes

    def raw(self, data: bytes | bytearray | memoryview) -> None:
        self.buf += data

    def uvarint(self, v: int) -> None:
        self.check("uint32", v)
        self._uvar(v)

    def _uvar(self, v: int) -> None:
        while v > 0x7F:
            self.buf.append((v & 0x7F) | 0x80)
            v >>= 7
        self.buf.append(v)

    def varint(self, v: int) -> None:
        self.check("int32", v)
        self._uvar(((v << 1) ^ (v >> 31)) & 0xFFFFFFFF)

    def varlong(self, v: int) -> None:
        self.check("int64", v)
        self._uvar(((v << 1) ^ (v >> 63)) & 0xFFFFFFFFFFFFFFFF)

    def _length(self, n: int, compact: bool, wide: bool) -> None:
        if compact:
            self.uvarint(n + 1)
        elif wide:
            self.int32(n)
        else:
            self.int16(n)

    def string(self, v: str | None, compact: bool = False, nullable: bool = False) -> None:
        if v is None:
            if not nullable:
                raise LocalProtocolError("None for a non-nullable string")
            self._length(-1, compact, False)
            return
        if not isinstance(v, str):
            raise LocalProtocolError(f"{v!r} is not a str")
        data = v.encode("utf-8")
        if len(data) > MAX_STRING:
            raise LocalProtocolError(f"string of {len(data)} bytes over {MAX_STRING}")
        self._length(len(data), compact, False)
        self.buf += data

    def blob(
        self, v: bytes | bytearray | memoryview | None, compact: bool = False,
        nullable: bool = False,
    ) -> None:
        if v is None:
            if not nullable:
                raise LocalProtocolError("None for non-nullable bytes")
            self._length(-1, compact, True)
            return
        if not isinstance(v, (bytes, bytearray, memoryview)):
            raise LocalProtocolError(f"{type(v).__name__} is not bytes")
        self._length(len(v), compact, True)
        self.buf += v

    def array_length(self, n: int | None, compact: bool, nullable: bool) -> None:
        if n is None:
            if not nullable:
                raise LocalProtocolError("None for a non-nullable array")
            n = -1
        self._length(n, compact, True)


def varint_size(v: int) -> int:
    """Bytes in the zigzag varint encoding of a signed 32/64-bit `v` (record lengths)."""
    u = (v << 1) ^ (v >> 63)
    u &= 0xFFFFFFFFFFFFFFFF
    n = 1
    while u > 0x7F:
        u >>= 7
        n += 1
    return n
