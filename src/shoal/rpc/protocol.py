"""Shoal's RPC wire protocol, sans I/O: bytes in, frames out; frames in, bytes out.

One TCP connection between two processes carries every call between them, pipelined and
multiplexed: each call has an id chosen by the caller, unique on its connection while the call
is open, and its answer (a reply or an error) carries the same id, in whatever order the
callee finishes. A caller that gives up sends a cancel with the id; the callee stops the call
and answers nothing more for it (an answer already on the way is dropped by the caller).

A frame is a fixed 13-byte header and a msgpack body:

    u32 body length | u8 kind | u64 call id | body

    CALL    [method, deadline_ms, metadata, payload]   method is "Interface.method"
    REPLY   [metadata, payload]
    ERROR   [code, message]                             code: one of the CODES below
    CANCEL  (empty body)

`deadline_ms` is the caller's remaining time when it sent the call, 0 for none, and negative
for one already past (a forwarded call whose deadline ran out: the callee refuses it without
running it). Relative, not absolute, so the two processes' clocks need not agree. `metadata`
is string to string (the W3C traceparent, mostly). The payload is the method codec's bytes
(shoal.app.interface); this layer never looks inside.

Limits are checked before anything is allocated: the header's length is compared with
`max_frame` before a byte of the body is buffered. An oversized CALL is skipped (its bytes
are read and dropped, never stored) and reported as a `Refused` event so the server can answer
REQUEST_TOO_LARGE and the connection lives on; an oversized answer is a protocol error, since
no correct peer sends one to a caller that said its limit. Anything else malformed (a kind we
do not know, a body that does not decode to the kind's shape, too much metadata) raises
`RemoteProtocolError`: the peer is broken and the connection must close. Asking this module
to send what the peer would refuse raises `LocalProtocolError`: the mistake is ours.

The body codec is msgspec's msgpack, typed: decoding validates the shape in C."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

import msgspec

HEADER = struct.Struct(">IBQ")
HEADER_SIZE = HEADER.size
MAX_FRAME = 4 * 1024 * 1024  # body bytes; the default for both ends
MAX_METADATA = 64  # entries
MAX_CALL_ID = 2**64 - 1


class Kind(IntEnum):
    CALL = 1
    REPLY = 2
    ERROR = 3
    CANCEL = 4


# Error codes (gRPC's where one fits). Retry-safe: UNAVAILABLE (the call never ran).
DEADLINE_EXCEEDED = "deadline_exceeded"
CANCELLED = "cancelled"
UNKNOWN_METHOD = "unknown_method"
BAD_REQUEST = "bad_request"  # the payload did not decode as the method's arguments
REQUEST_TOO_LARGE = "request_too_large"
UNAVAILABLE = "unavailable"  # the callee is shutting down and did not start the call
APPLICATION = "application"  # the method raised; the message names the exception
INTERNAL = "internal"  # the callee failed outside the method (e.g. encoding its result)
UNAUTHENTICATED = "unauthenticated"  # the server wants a token the call did not carry
CODES = frozenset({DEADLINE_EXCEEDED, CANCELLED, UNKNOWN_METHOD, BAD_REQUEST, REQUEST_TOO_LARGE,
                   UNAVAILABLE, APPLICATION, INTERNAL, UNAUTHENTICATED})


class ProtocolError(Exception):
    pass


class LocalProtocolError(ProtocolError):
    """We asked for something the protocol forbids (our misuse, never the peer's)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something no correct peer sends; close the connection."""


class FrameTooLarge(LocalProtocolError):
    def __init__(self, size: int, limit: int):
        super().__init__(f"frame body of {size} bytes exceeds the limit of {limit} bytes")
        self.size, self.limit = size, limit


@dataclass(frozen=True, slots=True)
class Call:
    call_id: int
    method: str
    deadline_ms: int
    metadata: dict[str, str]
    payload: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    call_id: int
    metadata: dict[str, str]
    payload: bytes


@dataclass(frozen=True, slots=True)
class Error:
    call_id: int
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Cancel:
    call_id: int


@dataclass(frozen=True, slots=True)
class Refused:
    """A call whose frame was over the limit: skipped unread, to be answered with an error."""
    call_id: int
    size: int


Event = Call | Reply | Error | Cancel | Refused

_encode = msgspec.msgpack.Encoder().encode
_CallBody = tuple[str, int, dict[str, str], bytes]
_decode_call = msgspec.msgpack.Decoder(_CallBody).decode
_decode_reply = msgspec.msgpack.Decoder(tuple[dict[str, str], bytes]).decode
_decode_error = msgspec.msgpack.Decoder(tuple[str, str]).decode
_pack_header = HEADER.pack
_unpack_header = HEADER.unpack_from


class Codec:
    """One end of one connection. `receive_data(bytes)` returns the complete events in it
    (buffering a partial frame); `call`/`reply`/`error`/`cancel` return the bytes to write."""

    __slots__ = ("max_frame", "_buf", "_skip", "_closed")

    def __init__(self, max_frame: int = MAX_FRAME):
        assert 0 < max_frame < 2**32, "max_frame must fit the u32 length"
        self.max_frame = max_frame
        self._buf = bytearray()
        self._skip = 0  # bytes of a refused frame still to drop
        self._closed = False

    # ------------------------------------------------------------------ sending
    def call(self, call_id: int, method: str, deadline_ms: int, metadata: dict[str, str],
             payload: bytes) -> bytes:
        if not 0 <= call_id <= MAX_CALL_ID:
            raise LocalProtocolError(f"call id {call_id} out of range")
        if len(metadata) > MAX_METADATA:
            raise LocalProtocolError(f"{len(metadata)} metadata entries, limit {MAX_METADATA}")
        return self._frame(Kind.CALL, call_id, _encode((method, deadline_ms, metadata, payload)))

    def reply(self, call_id: int, payload: bytes, metadata: dict[str, str] | None = None) -> bytes:
        return self._frame(Kind.REPLY, call_id, _encode((metadata or {}, payload)))

    def error(self, call_id: int, code: str, message: str) -> bytes:
        if code not in CODES:
            raise LocalProtocolError(f"unknown error code {code!r}")
        return self._frame(Kind.ERROR, call_id, _encode((code, message[:4096])))

    def cancel(self, call_id: int) -> bytes:
        return _pack_header(0, Kind.CANCEL, call_id)

    def _frame(self, kind: int, call_id: int, body: bytes) -> bytes:
        if len(body) > self.max_frame:
            raise FrameTooLarge(len(body), self.max_frame)
        return _pack_header(len(body), kind, call_id) + body

    # ------------------------------------------------------------------ receiving
    def receive_data(self, data: bytes) -> list[Event]:
        """Every event completed by `data`. Raises RemoteProtocolError for a broken peer;
        the codec is unusable after that."""
        if self._closed:
            raise LocalProtocolError("receive_data after a protocol error")
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        buf = self._buf
        if buf:
            buf += data
            view: bytes | bytearray = buf
        else:
            view = data  # the common case: whole frames in one read, no copy into the buffer
        events: list[Event] = []
        pos, end = 0, len(view)
        try:
            while end - pos >= HEADER_SIZE:
                size, kind, call_id = _unpack_header(view, pos)
                body_at = pos + HEADER_SIZE
                if size > self.max_frame:
                    events.append(self._refuse(kind, call_id, size))
                    self._skip = max(0, size - (end - body_at))
                    pos = min(end, body_at + size)
                    continue
                if end - body_at < size:
                    break
                pos = body_at + size
                events.append(self._event(kind, call_id, view[body_at:pos]))
        except BaseException:
            self._closed = True
            raise
        if buf:
            del buf[:pos]
        elif pos < end:
            buf += view[pos:]
        return events

    def _refuse(self, kind: int, call_id: int, size: int) -> Refused:
        if kind != Kind.CALL:
            raise RemoteProtocolError(f"{_kind_name(kind)} frame of {size} bytes exceeds "
                                      f"the limit of {self.max_frame} bytes")
        return Refused(call_id, size)

    def _event(self, kind: int, call_id: int, body: bytes | bytearray) -> Event:
        try:
            if kind == Kind.CALL:
                method, deadline_ms, metadata, payload = _decode_call(body)
                if len(metadata) > MAX_METADATA:
                    raise RemoteProtocolError(f"call {call_id}: {len(metadata)} metadata "
                                              f"entries, limit {MAX_METADATA}")
                return Call(call_id, method, deadline_ms, metadata, payload)
            if kind == Kind.REPLY:
                metadata, payload = _decode_reply(body)
                return Reply(call_id, metadata, payload)
            if kind == Kind.ERROR:
                code, message = _decode_error(body)
                return Error(call_id, code, message)
            if kind == Kind.CANCEL:
                if body:
                    raise RemoteProtocolError(f"cancel {call_id} with a {len(body)}-byte body")
                return Cancel(call_id)
        except msgspec.DecodeError as exc:
            raise RemoteProtocolError(f"{_kind_name(kind)} {call_id}: malformed body: "
                                      f"{exc}") from None
        raise RemoteProtocolError(f"unknown frame kind {kind}")


def _kind_name(kind: int) -> str:
    try:
        return Kind(kind).name
    except ValueError:
        return f"kind-{kind}"
