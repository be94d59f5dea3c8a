"""Sans-I/O Kafka connections: bytes in, typed events out, bytes to send back.

`KafkaConnection` is the server's half of one client connection, in the manner of h11. The
server owns the socket; it hands whatever it read to `receive_data`, then calls
`next_request` until it returns `NEED_DATA`, answering each event:

    conn = KafkaConnection()
    conn.receive_data(sock.recv(65536))          # b"" once the peer has closed
    while (ev := conn.next_request()) is not NEED_DATA:
        if ev is CLOSED:
            ...                                  # peer closed cleanly between frames
        elif isinstance(ev, UnsupportedRequest):
            out = conn.send_unsupported(ev)      # None: Kafka closes here, so close
        elif ev.expects_response:                # Produce with acks=0 gets no answer
            sock.sendall(conn.send_response(ev, handle(ev.body)))

What each piece guarantees:

- Framing. A request is an int32 size and that many bytes. The size is checked against
  `max_request_size` (100 MiB by default, Kafka's socket.request.max.bytes) the moment its
  four bytes are in, inside `receive_data`, so an oversized frame raises `FrameTooLarge`
  before any more of it is buffered. A negative size, a frame too short for a header, or the
  peer closing half-way through a frame is a `RemoteProtocolError`.
- Decoding. The header's api key and version pick the schema; the body must parse exactly,
  with nothing left over. Any malformation raises `RemoteProtocolError`, after which the
  connection is broken (every later call raises too): close the socket.
- Unsupported requests are answers, not errors. An api key without a schema, or a version
  outside the advertised range, becomes `UnsupportedRequest`. For ApiVersions Kafka answers
  a v0 response with UNSUPPORTED_VERSION (35) and the supported ranges, so a client that
  asked with a newer version retries with one we support (KIP-511); `send_unsupported` builds
  exactly that. For another API whose response at that version has a top-level error code,
  it answers with 35; otherwise it returns None, since Kafka closes such connections
  (clients only send versions that ApiVersions advertised, so this is a broken client).
- Ordering. Kafka clients match responses to requests by order as well as by correlation id
  (the Java client refuses a response out of turn), so responses must be sent in the order
  the requests arrived: `send_response` refuses any other (`LocalProtocolError`). `pending`
  counts requests awaiting an answer; Kafka itself reads one request at a time per
  connection, and a server should stop reading past a small number.

`KafkaClientConnection` is the mirror image for a Python client and for tests: it numbers
requests, remembers each one's api key and version by correlation id, and decodes responses.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from .api_versions import ApiVersion, ApiVersionsResponse
from .apis import (
    API_VERSIONS_KEY,
    APIS,
    DEFAULT_SUPPORTED,
    Api,
    check_supported,
    decode_request_header,
    decode_response,
    encode_request,
    encode_response,
)
from .error_codes import ErrorCode
from .exceptions import FrameTooLarge, LocalProtocolError, RemoteProtocolError
from .primitives import DEFAULT_ELEMENT_BUDGET, Reader
from .produce import ProduceRequest
from .schema import Request, Response, fields_of

DEFAULT_MAX_REQUEST_SIZE = 100 * 1024 * 1024  # Kafka's socket.request.max.bytes
DEFAULT_MAX_RESPONSE_SIZE = DEFAULT_MAX_REQUEST_SIZE + (1 << 20)  # fetch.max.bytes + headers
_MIN_REQUEST = 8  # api key, api version, correlation id


class Signal(enum.Enum):
    """Events that carry no data."""

    NEED_DATA = "NEED_DATA"  # no whole frame buffered: feed receive_data
    CLOSED = "CLOSED"  # the peer closed between frames


NEED_DATA = Signal.NEED_DATA
CLOSED = Signal.CLOSED


@dataclass(frozen=True, slots=True, eq=False)
class RequestReceived:
    """A request the server supports, decoded."""

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body: Request
    size: int  # the frame's size, for quotas and metrics

    @property
    def expects_response(self) -> bool:
        """False only for Produce with acks=0, which Kafka never answers."""
        return not (isinstance(self.body, ProduceRequest) and self.body.acks == 0)


@dataclass(frozen=True, slots=True, eq=False)
class UnsupportedRequest:
    """A request for an api key or version the server does not advertise (its body unread)."""

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    reason: str
    size: int

    expects_response = True


ServerEvent = RequestReceived | UnsupportedRequest | Signal


class _Frames:
    """Splits a byte stream into int32-size-prefixed frames, refusing oversized ones early.

    Every size prefix is checked the moment its fourth byte arrives, wherever it falls in the
    buffer (`_scan` is the first prefix not yet checked), so no byte of an oversized frame is
    kept; frames already buffered ahead of it are dropped with it, the stream being broken."""

    __slots__ = ("_buf", "_max", "_scan", "eof", "broken")

    def __init__(self, max_size: int) -> None:
        assert max_size > 0
        self._buf = bytearray()
        self._max = max_size
        self._scan = 0
        self.eof = False
        self.broken: RemoteProtocolError | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self.broken is not None:
            raise self.broken
        if self.eof:
            raise LocalProtocolError("receive_data after the end of the stream")
        if not data:
            self.eof = True
            return
        self._buf += data
        self._check_prefixes()

    def _check_prefixes(self) -> None:
        buf = self._buf
        while len(buf) - self._scan >= 4:
            size = int.from_bytes(buf[self._scan : self._scan + 4], "big", signed=True)
            if size < 0 or size > self._max:
                buf.clear()  # never keep what follows an impossible prefix
                self._scan = 0
                err: RemoteProtocolError = (
                    FrameTooLarge(f"frame of {size} bytes over the limit of {self._max}")
                    if size > self._max else RemoteProtocolError(f"negative frame size {size}")
                )
                self.broken = err
                raise err
            if len(buf) - self._scan < 4 + size:
                return  # this frame is still arriving
            self._scan += 4 + size

    def next(self) -> bytes | None:
        """The next whole frame's payload, or None if it has not all arrived."""
        if self.broken is not None:
            raise self.broken
        if len(self._buf) < 4:
            return None
        size = int.from_bytes(self._buf[0:4], "big", signed=True)
        assert 0 <= size <= self._max and self._scan >= 0  # checked as the prefix arrived
        if len(self._buf) < 4 + size:
            return None
        payload = bytes(self._buf[4 : 4 + size])
        del self._buf[: 4 + size]
        self._scan -= 4 + size
        assert self._scan >= 0
        return payload

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def fail(self, err: RemoteProtocolError) -> RemoteProtocolError:
        self.broken = err
        return err


class KafkaConnection:
    """The server side of one Kafka connection (see the module docstring)."""

    def __init__(
        self,
        *,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
        supported: Mapping[int, tuple[int, int]] | None = None,
        element_budget: int = DEFAULT_ELEMENT_BUDGET,
    ) -> None:
        if max_request_size < _MIN_REQUEST:
            raise LocalProtocolError(f"max_request_size {max_request_size} below a header")
        self.supported = check_supported(DEFAULT_SUPPORTED if supported is None else supported)
        self._frames = _Frames(max_request_size)
        self._budget = element_budget
        self._pending: deque[RequestReceived | UnsupportedRequest] = deque()

    @property
    def pending(self) -> int:
        """Requests received and not yet answered (in arrival order)."""
        return len(self._pending)

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed as frames."""
        return self._frames.buffered

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes from the peer (b"" when it has closed). Raises FrameTooLarge or
        RemoteProtocolError at once for an impossible size prefix."""
        self._frames.feed(data)

    def next_request(self) -> ServerEvent:
        """The next event: a request, an unsupported request, NEED_DATA or CLOSED."""
        payload = self._frames.next()
        if payload is None:
            if self._frames.eof:
                if self._frames.buffered:
                    raise self._frames.fail(RemoteProtocolError(
                        f"peer closed with {self._frames.buffered} bytes of a frame unread"))
                return CLOSED
            return NEED_DATA
        try:
            event = self._parse(payload)
        except RemoteProtocolError as e:
            raise self._frames.fail(e) from None
        if event.expects_response:
            self._pending.append(event)
        return event

    def _parse(self, payload: bytes) -> RequestReceived | UnsupportedRequest:
        size = len(payload) + 4
        if len(payload) < _MIN_REQUEST:
            raise RemoteProtocolError(f"request frame of {len(payload)} bytes has no header")
        peek = Reader(payload)
        key, version, correlation_id = peek.int16(), peek.int16(), peek.int32()
        api = APIS.get(key)
        if api is None:
            return UnsupportedRequest(key, version, correlation_id, _lenient_client_id(peek),
                                      f"unknown API key {key}", size)
        r = Reader(payload, element_budget=self._budget)
        header = decode_request_header(r, api, version)
        lo, hi = self.supported.get(key, (1, 0))
        if not lo <= version <= hi:
            return UnsupportedRequest(key, version, correlation_id, header.client_id,
                                      f"{api.name} v{version} is not supported", size)
        body = api.request.decode(r, version)
        return RequestReceived(key, version, correlation_id, header.client_id, body, size)

    def _pop(self, event: RequestReceived | UnsupportedRequest) -> None:
        if not self._pending or self._pending[0] is not event:
            what = "is not pending" if event not in self._pending else "is not the oldest pending"
            raise LocalProtocolError(
                f"request {event.correlation_id} {what}: responses go in request order")
        self._pending.popleft()

    def send_response(self, request: RequestReceived, body: Response) -> bytes:
        """The frame answering `request` (the oldest pending one) with `body`."""
        api = APIS[request.api_key]
        if not isinstance(body, api.response):
            raise LocalProtocolError(f"{type(body).__name__} does not answer {api.name}")
        data = encode_response(body, request.api_version, request.correlation_id)
        self._pop(request)
        return data

    def api_versions_response(
        self, error_code: int = ErrorCode.NONE, throttle_time_ms: int = 0,
    ) -> ApiVersionsResponse:
        """The ApiVersions answer listing this connection's supported ranges."""
        return ApiVersionsResponse(
            error_code=error_code,
            api_keys=[ApiVersion(api_key=k, min_version=lo, max_version=hi)
                      for k, (lo, hi) in sorted(self.supported.items())],
            throttle_time_ms=throttle_time_ms,
        )

    def send_unsupported(self, event: UnsupportedRequest) -> bytes | None:
        """Kafka's answer to `event`, or None where Kafka would close the connection."""
        self._pop(event)
        api = APIS.get(event.api_key)
        if api is None:
            return None
        if api.key == API_VERSIONS_KEY:
            body: Response = self.api_versions_response(ErrorCode.UNSUPPORTED_VERSION)
            return encode_response(body, 0, event.correlation_id)
        return _error_only_response(api, event, ErrorCode.UNSUPPORTED_VERSION)


def _lenient_client_id(r: Reader) -> str | None:
    """The client id of an unknown API's header, if it reads as one (v1 layout)."""
    try:
        return r.string(False, True)
    except RemoteProtocolError:
        return None


def _error_only_response(api: Api, event: UnsupportedRequest, code: int) -> bytes | None:
    v = event.api_version
    if v not in api.response.VERSIONS:
        return None
    for spec in fields_of(api.response):
        if spec.attr == "error_code" and v in spec.versions and v not in spec.tagged:
            body = api.response()
            setattr(body, spec.attr, code)
            return encode_response(body, v, event.correlation_id)
    return None


@dataclass(frozen=True, slots=True, eq=False)
class ResponseReceived:
    """A response, matched to the request it answers."""

    api_key: int
    api_version: int
    correlation_id: int
    body: Response


class KafkaClientConnection:
    """The client side of one connection: numbered requests out, matched responses in."""

    def __init__(
        self, *, client_id: str | None = "shoal",
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
    ) -> None:
        self.client_id = client_id
        self._frames = _Frames(max_response_size)
        self._next_id = 0
        self._inflight: deque[tuple[int, int, int]] = deque()  # correlation id, key, version

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def send_request(self, body: Request, version: int) -> tuple[int, bytes]:
        """(correlation id, frame) for `body` at `version`."""
        cid = self._next_id
        data = encode_request(body, version, cid, self.client_id)
        self._next_id = (cid + 1) & 0x7FFFFFFF
        if not (isinstance(body, ProduceRequest) and body.acks == 0):
            self._inflight.append((cid, type(body).API_KEY, version))
        return cid, data

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._frames.feed(data)

    def next_response(self) -> ResponseReceived | Signal:
        payload = self._frames.next()
        if payload is None:
            if self._frames.eof:
                if self._frames.buffered:
                    raise self._frames.fail(RemoteProtocolError("peer closed mid-frame"))
                return CLOSED
            return NEED_DATA
        try:
            if len(payload) < 4:
                raise RemoteProtocolError("response frame shorter than its header")
            cid = int.from_bytes(payload[0:4], "big", signed=True)
            if not self._inflight or self._inflight[0][0] != cid:
                raise RemoteProtocolError(f"response {cid} does not answer the oldest request")
            _, key, version = self._inflight.popleft()
            _, body = decode_response(payload, key, version)
        except RemoteProtocolError as e:
            raise self._frames.fail(e) from None
        return ResponseReceived(key, version, cid, body)
