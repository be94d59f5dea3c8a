"""HTTP/1.1 head parsing and rewriting: framing, hop-by-hop headers, X-Forwarded-For, and the
ambiguous messages that must be refused."""

from __future__ import annotations

import pytest

from shoal.gateway import HttpError, error_response, parse_request, parse_response


def req(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_forwarded_head_drops_hop_by_hop_and_appends_x_forwarded_for():
    r = parse_request(req("GET /a?b=1 HTTP/1.1", "Host: x", "Connection: close, X-Private",
                          "X-Private: secret", "Keep-Alive: 5", "X-Forwarded-For: 1.2.3.4",
                          "Accept: */*"), b"10.0.0.9", None)
    assert (r.method, r.target, r.keep_alive, r.content_length, r.chunked) == (
        b"GET", b"/a?b=1", False, -1, False)
    assert r.forward == (b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n"
                         b"X-Forwarded-For: 1.2.3.4, 10.0.0.9\r\n\r\n")
    assert r.idempotent and not r.has_body


def test_http10_keep_alive_body_framing_and_affinity_header():
    r = parse_request(req("POST /p HTTP/1.0", "Connection: keep-alive", "Content-Length: 12",
                          "X-User: alice", "Expect: 100-continue"), b"1.1.1.1", b"x-user")
    assert r.http10 and r.keep_alive and r.content_length == 12 and r.affinity == b"alice"
    assert r.expect_continue and b"Expect" not in r.forward and not r.idempotent
    r = parse_request(req("PUT /p HTTP/1.1", "Host: x", "Transfer-Encoding: chunked"), b"i", None)
    assert r.chunked and r.has_body and r.keep_alive


@pytest.mark.parametrize("lines,status", [
    (("GET / HTTP/1.1",), 400),  # no Host
    (("GET / HTTP/2.0", "Host: x"), 505),
    (("GET /", "Host: x"), 400),
    (("GET / HTTP/1.1", "Host : x"), 400),  # whitespace before the colon
    (("GET / HTTP/1.1", "Host: x", " folded"), 400),
    (("POST / HTTP/1.1", "Host: x", "Content-Length: 3", "Transfer-Encoding: chunked"), 400),
    (("POST / HTTP/1.1", "Host: x", "Content-Length: 3", "Content-Length: 4"), 400),
    (("POST / HTTP/1.1", "Host: x", "Content-Length: -1"), 400),
    (("POST / HTTP/1.1", "Host: x", "Transfer-Encoding: gzip"), 501),
])
def test_ambiguous_or_bad_requests_are_refused(lines, status):
    with pytest.raises(HttpError) as info:
        parse_request(req(*lines), b"ip", None)
    assert info.value.status == status


def test_response_framing():
    r = parse_response(req("HTTP/1.1 200 OK", "Content-Length: 5", "Connection: keep-alive",
                           "X-A: b"), b"GET")
    assert (r.status, r.content_length, r.keep_alive, r.no_body) == (200, 5, True, False)
    assert r.lines == b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b"
    r = parse_response(req("HTTP/1.1 200 OK", "Content-Length: 5"), b"HEAD")
    assert r.no_body
    r = parse_response(req("HTTP/1.0 200 OK"), b"GET")
    assert r.until_close and not r.keep_alive
    r = parse_response(req("HTTP/1.1 304 Not Modified"), b"GET")
    assert r.no_body and r.keep_alive
    with pytest.raises(HttpError) as info:
        parse_response(req("HTTP/1.1 OK"), b"GET")
    assert info.value.status == 502


def test_error_response_is_complete_and_says_why():
    raw = error_response(503, "no available backend", keep_alive=True)
    head, body = raw.split(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable")
    assert b"Content-Length: %d" % len(body) in head and b"Connection: keep-alive" in head
    assert body == b"503 Service Unavailable: no available backend\n"
