"""HTTP/1.1 message heads, parsed and rewritten in one pass (sans-I/O).

The proxy needs little from a head: where the body ends (Content-Length or chunked), whether
the connection persists, the affinity header, and a copy to forward with hop-by-hop headers
dropped and X-Forwarded-For appended. Doing exactly that with bytes operations costs a few
microseconds per request, which matters for throughput; h11 does far more per byte.

Ambiguous framing is refused rather than guessed (the root of request smuggling): both
Content-Length and Transfer-Encoding, several different Content-Lengths, a transfer coding
other than chunked, whitespace before a header's colon, obsolete line folding."""

from __future__ import annotations

import re
from dataclasses import dataclass

# RFC 9110 §7.6.1, plus the old Keep-Alive and Proxy-Connection. Transfer-Encoding is
# hop-by-hop too, but we relay chunked framing untouched, so it is kept.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                        b"upgrade"})
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})  # RFC 9110 §9.2.2


class HttpError(Exception):
    """A malformed or unsupported message; `status` is what to answer (for requests)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class RequestHead:
    method: bytes
    target: bytes
    http10: bool
    keep_alive: bool
    content_length: int  # -1: none given
    chunked: bool
    affinity: bytes | None  # the hash header's value, if asked for and present
    expect_continue: bool  # the client waits for "100 Continue" before sending its body
    forward: bytes  # the head to send upstream (without Expect: the gateway answers it)

    @property
    def has_body(self) -> bool:
        return self.chunked or self.content_length > 0

    @property
    def idempotent(self) -> bool:
        return self.method in IDEMPOTENT


@dataclass(slots=True)
class ResponseHead:
    status: int
    keep_alive: bool  # the backend will keep the connection open
    content_length: int  # -1: none given
    chunked: bool
    no_body: bool  # 1xx, 204, 304, or the answer to HEAD
    lines: bytes  # status line and end-to-end headers, without the final blank line

    @property
    def until_close(self) -> bool:
        """The body runs until the backend closes the connection."""
        return not (self.no_body or self.chunked or self.content_length >= 0)


# The fast path. Most heads are plain: token header names right before their colon, no
# folded lines, none of the headers the proxy must act on except one Content-Length. One
# regex match checks that in C and the head is forwarded as it came (plus X-Forwarded-For);
# anything else, malformed heads included, takes the full parser below, which decides.
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_FAST_REQUEST = re.compile(rb"([A-Z]+) ([^ \r\n]+) HTTP/1\.1\r\n(?:" + _TOKEN
                           + rb":[^\r\n]*\r\n)*\r\n")
_FAST_RESPONSE = re.compile(rb"HTTP/1\.1 ([1-9][0-9][0-9])(?: [^\r\n]*)?\r\n(?:" + _TOKEN
                            + rb":[^\r\n]*\r\n)*\r\n")
_SPECIAL = (rb"content-length|transfer-encoding|connection|keep-alive|proxy-connection|te|"
            rb"trailer|upgrade")
_REQUEST_SPECIAL = re.compile(rb"\r\n(" + _SPECIAL + rb"|x-forwarded-for|expect|host):([^\r\n]*)",
                              re.IGNORECASE)
_RESPONSE_SPECIAL = re.compile(rb"\r\n(" + _SPECIAL + rb"):([^\r\n]*)", re.IGNORECASE)


def _fast_length(found: list[tuple[bytes, bytes]], need_host: bool) -> int | None:
    """From the special headers found: -1 without framing headers, the length with exactly
    one valid Content-Length; None if the full parser must look (anything else, or no Host
    where one is needed)."""
    length, host = -1, not need_host
    for name, value in found:
        name = name.lower()
        if name == b"host":
            host = True
        elif name == b"content-length" and length < 0:
            value = value.strip()
            if not value.isdigit() or len(value) > 18:
                return None
            length = int(value)
        else:
            return None
    return length if host else None


def _fast_request(head: bytes, client_ip: bytes) -> RequestHead | None:
    m = _FAST_REQUEST.fullmatch(head)
    if m is None:
        return None
    length = _fast_length(_REQUEST_SPECIAL.findall(head), True)
    if length is None:
        return None
    return RequestHead(m.group(1), m.group(2), False, True, length, False, None, False,
                       b"%sX-Forwarded-For: %s\r\n\r\n" % (head[:-2], client_ip))


def _fast_response(head: bytes, method: bytes) -> ResponseHead | None:
    m = _FAST_RESPONSE.fullmatch(head)
    if m is None:
        return None
    length = _fast_length(_RESPONSE_SPECIAL.findall(head), False)
    if length is None:
        return None
    status = int(m.group(1))
    no_body = status < 200 or status in (204, 304) or method == b"HEAD"
    return ResponseHead(status, length >= 0 or no_body, length, False, no_body, head[:-4])


def _split(head: bytes) -> list[bytes]:
    return head[:-4].split(b"\r\n")  # the head ends in CRLF CRLF


def _framing(name: bytes, value: bytes, state: list[int]) -> None:
    """Fold Content-Length / Transfer-Encoding into state = [content_length, chunked]."""
    if name == b"content-length":
        if not value.isdigit() or len(value) > 18:
            raise HttpError(400, f"bad Content-Length {value[:40]!r}")
        n = int(value)
        if state[0] not in (-1, n):
            raise HttpError(400, "conflicting Content-Length headers")
        state[0] = n
    else:
        codings = [c.strip().lower() for c in value.split(b",")]
        if codings[-1] != b"chunked" or b"chunked" in codings[:-1]:
            raise HttpError(501, f"unsupported Transfer-Encoding {value[:40]!r}")
        state[1] = 1


def _connection_tokens(value: bytes, tokens: set[bytes]) -> None:
    for t in value.split(b","):
        tokens.add(t.strip().lower())


def parse_request(head: bytes, client_ip: bytes, hash_header: bytes | None) -> RequestHead:
    """Parse a request head (ending in CRLF CRLF) and build its upstream copy."""
    if hash_header is None:
        fast = _fast_request(head, client_ip)
        if fast is not None:
            return fast
    return parse_request_full(head, client_ip, hash_header)


def parse_request_full(head: bytes, client_ip: bytes, hash_header: bytes | None) -> RequestHead:
    """`parse_request` without the fast path (it must agree with it)."""
    lines = _split(head)
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise HttpError(400, f"bad request line {lines[0][:80]!r}")
    method, target, version = parts
    if version == b"HTTP/1.1":
        http10 = False
    elif version == b"HTTP/1.0":
        http10 = True
    else:
        raise HttpError(505, f"unsupported version {version[:20]!r}")
    out = [method, b" ", target, b" HTTP/1.1\r\n"]
    state = [-1, 0]
    tokens: set[bytes] = set()
    xff: bytes | None = None
    affinity = None
    has_host = False
    expect = False
    kept: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name[-1:] in (b" ", b"\t") or line[:1] in (b" ", b"\t"):
            raise HttpError(400, f"bad header line {line[:80]!r}")
        lname = name.lower()
        value = value.strip()
        if lname in (b"content-length", b"transfer-encoding"):
            _framing(lname, value, state)
        elif lname == b"connection":
            _connection_tokens(value, tokens)
            continue
        elif lname == b"x-forwarded-for":
            xff = value if xff is None else xff + b", " + value
            continue
        elif lname == b"expect":
            expect = value.lower() == b"100-continue"
            continue
        elif lname == b"host":
            has_host = True
        if lname == hash_header:
            affinity = value
        if lname not in HOP_BY_HOP:
            kept.append((lname, line))
    if state[0] >= 0 and state[1]:
        raise HttpError(400, "both Content-Length and Transfer-Encoding")
    if not has_host and not http10:
        raise HttpError(400, "HTTP/1.1 request without Host")
    for lname, line in kept:
        if lname not in tokens:  # headers named by Connection are hop-by-hop as well
            out.append(line)
            out.append(b"\r\n")
    out.append(b"X-Forwarded-For: ")
    out.append(client_ip if xff is None else xff + b", " + client_ip)
    out.append(b"\r\n\r\n")
    keep_alive = b"keep-alive" in tokens if http10 else b"close" not in tokens
    return RequestHead(method, target, http10, keep_alive, state[0], bool(state[1]), affinity,
                       expect, b"".join(out))


def parse_response(head: bytes, method: bytes) -> ResponseHead:
    """Parse a backend's response head; HttpError(502) if it is malformed."""
    fast = _fast_response(head, method)
    if fast is not None:
        return fast
    return parse_response_full(head, method)


def parse_response_full(head: bytes, method: bytes) -> ResponseHead:
    """`parse_response` without the fast path (it must agree with it)."""
    lines = _split(head)
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[1].isdigit():
        raise HttpError(502, f"backend sent a bad status line {lines[0][:80]!r}")
    status = int(parts[1])
    state = [-1, 0]
    tokens: set[bytes] = set()
    kept: list[tuple[bytes, bytes]] = []
    try:
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name[-1:] in (b" ", b"\t") or line[:1] in (b" ", b"\t"):
                raise HttpError(502, f"backend sent a bad header line {line[:80]!r}")
            lname = name.lower()
            if lname in (b"content-length", b"transfer-encoding"):
                _framing(lname, value.strip(), state)
            elif lname == b"connection":
                _connection_tokens(value, tokens)
                continue
            if lname not in HOP_BY_HOP:
                kept.append((lname, line))
    except HttpError as exc:
        raise HttpError(502, f"backend response: {exc}") from None
    if state[0] >= 0 and state[1]:
        raise HttpError(502, "backend response has both Content-Length and Transfer-Encoding")
    out = [lines[0]]
    for lname, line in kept:
        if lname not in tokens:
            out.append(line)
    no_body = status < 200 or status in (204, 304) or method == b"HEAD"
    keep_alive = (b"keep-alive" in tokens) if parts[0] == b"HTTP/1.0" else b"close" not in tokens
    resp = ResponseHead(status, keep_alive, state[0], bool(state[1]), no_body, b"\r\n".join(out))
    if resp.until_close:
        resp.keep_alive = False
    return resp


_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 413: b"Content Too Large",
            431: b"Request Header Fields Too Large", 501: b"Not Implemented",
            502: b"Bad Gateway", 503: b"Service Unavailable", 504: b"Gateway Timeout",
            505: b"HTTP Version Not Supported"}


def error_response(status: int, message: str, keep_alive: bool) -> bytes:
    """A complete plain-text answer that says what went wrong, for the client to read."""
    reason = _REASONS.get(status, b"Error")
    body = b"%d %s: %s\n" % (status, reason, message.encode("utf-8", "replace"))
    conn = b"keep-alive" if keep_alive else b"close"
    return (b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: %s\r\n\r\n%s"
            % (status, reason, len(body), conn, body))
