"""The client protocol: length-prefixed msgpack frames, pipelined by request id.

Request  `[id, op, body]`; response `[id, code, body]` where code is "ok" or an error code.
Watch streams push `[id, "event", body]` frames after their "ok". Shared by server and client."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack

from .bounded import TooComplex, check_shape

HEADER = 4
FRAME_OVERHEAD = 64 * 1024  # room for the envelope around a maximal request
# A request is [id, op, body] with a small map for a body; what it carries in bulk is bytes
# (a kv command, itself decoded with bounds of its own). So a request frame holding more
# values or nesting deeper than these is refused unread.
MAX_REQUEST_VALUES = 1024
MAX_REQUEST_DEPTH = 16

# Error codes. The retryable ones mean "nothing happened here, try again (maybe elsewhere)".
NOT_LEADER = "not_leader"  # body: {"leader": id, "endpoint": "host:port"}
NO_LEADER = "no_leader"
TOO_MANY_REQUESTS = "too_many_requests"
TIMEOUT = "timeout"  # the outcome is unknown: a write may still be applied
REQUEST_TOO_LARGE = "request_too_large"
BAD_REQUEST = "bad_request"
UNAVAILABLE = "unavailable"
RETRYABLE = frozenset({NOT_LEADER, NO_LEADER, TOO_MANY_REQUESTS, UNAVAILABLE})


class ProtocolError(Exception):
    """The other side sent something that is not a valid frame."""


class FrameTooLarge(ProtocolError):
    def __init__(self, size: int, limit: int, request_id: Any = None):
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit} bytes")
        self.size, self.limit, self.request_id = size, limit, request_id


class FrameTooComplex(ProtocolError):
    """A frame read whole (so the stream is in step) but holding more values, or nesting
    deeper, than its reader accepts: refused before it is decoded."""

    def __init__(self, why: str, request_id: Any = None):
        super().__init__(f"frame refused: {why}")
        self.request_id = request_id


def frame(obj: Any) -> bytes:
    payload = msgpack.packb(obj, use_bin_type=True)
    return len(payload).to_bytes(HEADER, "big") + payload


async def read_frame(reader: asyncio.StreamReader, limit: int, max_values: int | None = None,
                     max_depth: int = 0) -> Any:
    """The next frame, or None at a clean end of stream. An oversized frame is read and
    discarded (so the stream stays in sync) and reported as FrameTooLarge. With `max_values`,
    a frame holding more values or nesting deeper than `max_depth` is FrameTooComplex."""
    try:
        head = await reader.readexactly(HEADER)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError("connection closed in the middle of a frame header") from None
        return None
    size = int.from_bytes(head, "big")
    if size > limit:
        left, request_id = size, None
        while left:
            chunk = await reader.read(min(left, 1 << 16))
            if not chunk:
                raise ProtocolError("connection closed inside an oversized frame")
            if left == size:
                request_id = _leading_id(chunk)
            left -= len(chunk)
        raise FrameTooLarge(size, limit, request_id)
    try:
        payload = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise ProtocolError("connection closed in the middle of a frame") from None
    if max_values is not None:
        try:
            check_shape(payload, max_values, max_depth)
        except TooComplex as exc:
            raise FrameTooComplex(str(exc), _leading_id(payload[:64])) from None
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:  # TypeError: a list as a key
        raise ProtocolError(f"frame is not valid msgpack: {exc}") from None


def _leading_id(head: bytes) -> Any:
    """The request id at the start of a frame we will not read whole, so the refusal can be
    matched to its request."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(head)
    try:
        unpacker.read_array_header()
        rid = unpacker.unpack()
    except (ValueError, msgpack.UnpackException, msgpack.OutOfData):
        return None
    return rid if isinstance(rid, int) else None


def endpoint(addr: tuple[str, int]) -> str:
    return f"{addr[0]}:{addr[1]}"
