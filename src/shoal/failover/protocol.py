"""The member port's protocol: bounded msgpack frames, an optional HMAC handshake, and the
shapes of the requests and replication messages, each checked on arrival.

A frame is a 4-byte big-endian length and then that many bytes of msgpack. A length above the
reader's bound is refused from the header alone, before anything is buffered
(`FrameTooLarge`); a frame that does not decode, or whose fields have the wrong types, is a
`ProtocolError` naming the field (`append frame field 'entries[2].op': expected bytes, got
int`). Either ends the connection: a peer that sends garbage is not answered further.

Every connection starts with a handshake (the dialer is a client or a backup; the acceptor a
member). Without a shared secret it is two frames; with one (`--secret-file`) both ends prove
they know it by HMAC challenge-response, as shoal.net's peer handshake does:

    dialer   -> ["hello", 1, service, nonce_d]
    acceptor -> ["welcome", 1, service, nonce_a, proof_a]      or ["denied", reason]
    dialer   -> ["proof", proof_d]                              (only with a secret)
    acceptor -> ["ready"]                                       or ["denied", reason]
    proof_r = HMAC-SHA256(secret, ["shoal failover " + r, service, nonce_d, nonce_a])

Fresh nonces on both sides make a proof good for one connection; the role in the MAC keeps
the acceptor's proof from being reflected back as the dialer's. A member with a secret denies
a dialer that offers none; a dialer with a secret hangs up on a member that proves nothing.

After the handshake the dialer sends requests `[id, op, body]` and the member answers
`[id, code, body]` ("ok" or an error code), pipelined. The request `follow` turns the
connection into a replication stream from the primary to that backup (member.py):

    primary -> ["append", token, first_index, prev_token, [[token, op], ...], primary_last]
    primary -> ["snap", token, index, snap_token, offset, total, chunk]
    primary -> ["beat", token, primary_last]
    backup  -> ["ack", durable_index, that entry's token]
    either  -> ["refuse", token, reason]     (then the sender closes the connection)
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from pathlib import Path
from typing import Any, Literal

import msgpack

VERSION = 1
MAX_HANDSHAKE = 1024
DEFAULT_MAX_FRAME = 4 * 1024 * 1024
NONCE = 32
PROOF = 32
MAX_SERVICE = 128


class ProtocolError(Exception):
    """The other end sent something that is not this protocol; the message says what."""


class FrameTooLarge(ProtocolError):
    def __init__(self, size: int, limit: int, what: str):
        super().__init__(f"{what}: a frame of {size} bytes exceeds the bound of {limit} bytes")
        self.size, self.limit = size, limit


class Denied(ProtocolError):
    """The member refused the connection (wrong service, missing or wrong secret)."""


def pack(obj: Any, limit: int = DEFAULT_MAX_FRAME) -> bytes:
    payload = msgpack.packb(obj, use_bin_type=True)
    if len(payload) > limit:  # our own message too big: a bound set wrong here, say so
        raise ValueError(f"message of {len(payload)} bytes exceeds the frame bound {limit}")
    return len(payload).to_bytes(4, "big") + payload


async def read_frame(reader: asyncio.StreamReader, limit: int, what: str) -> Any:
    """The next frame's value; None at a clean end of stream."""
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError(f"{what}: connection closed inside a frame header") from None
        return None
    size = int.from_bytes(head, "big")
    if size > limit:
        raise FrameTooLarge(size, limit, what)
    try:
        payload = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise ProtocolError(f"{what}: connection closed inside a frame") from None
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"{what}: frame is not valid msgpack ({exc})") from None


# ---------------------------------------------------------------------- field checks
def _shown(v: object) -> str:
    return type(v).__name__ if not isinstance(v, int | str) else f"{type(v).__name__} {v!r:.40}"


def field(msg: list[Any], i: int, kind: type | tuple[type, ...], name: str, what: str) -> Any:
    """msg[i], checked to be a `kind` (a bool is not an int); ProtocolError names the field."""
    if i >= len(msg):
        raise ProtocolError(f"{what} field {name!r}: missing")
    v = msg[i]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (type(v) is bool and bool not in kinds) or not isinstance(v, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ProtocolError(f"{what} field {name!r}: expected {names}, got {_shown(v)}")
    if type(v) is int and v < 0:
        raise ProtocolError(f"{what} field {name!r}: negative, got {v}")
    return v


def message(v: Any, what: str) -> tuple[str, list[Any]]:
    """(kind, fields) of a replication message: a list whose first element names it."""
    if type(v) is not list or not v or type(v[0]) is not str:
        raise ProtocolError(f"{what}: expected a list starting with a message kind, "
                            f"got {_shown(v)}")
    return v[0], v


APPEND_MAX_ENTRIES = 1024


def check_append(m: list[Any]) -> tuple[int, int, int, list[tuple[int, bytes]], int]:
    """(token, first_index, prev_token, [(token, op)], primary_last) of an append frame."""
    w = "append frame"
    if len(m) != 6:
        raise ProtocolError(f"{w}: expected 6 fields, got {len(m)}")
    token = field(m, 1, int, "token", w)
    first = field(m, 2, int, "first_index", w)
    prev = field(m, 3, int, "prev_token", w)
    raw = field(m, 4, list, "entries", w)
    last = field(m, 5, int, "primary_last", w)
    if len(raw) > APPEND_MAX_ENTRIES:
        raise ProtocolError(f"{w} field 'entries': {len(raw)} entries, the bound is "
                            f"{APPEND_MAX_ENTRIES}")
    entries = []
    for j, e in enumerate(raw):
        if type(e) is not list or len(e) != 2:
            raise ProtocolError(f"{w} field 'entries[{j}]': expected [token, op], got {_shown(e)}")
        entries.append((field(e, 0, int, f"entries[{j}].token", w),
                        field(e, 1, bytes, f"entries[{j}].op", w)))
    if first < 1:
        raise ProtocolError(f"{w} field 'first_index': must be at least 1, got {first}")
    return token, first, prev, entries, last


def check_snap(m: list[Any]) -> tuple[int, int, int, int, int, bytes]:
    """(token, index, snap_token, offset, total, chunk) of a snapshot chunk."""
    w = "snap frame"
    if len(m) != 7:
        raise ProtocolError(f"{w}: expected 7 fields, got {len(m)}")
    return (field(m, 1, int, "token", w), field(m, 2, int, "index", w),
            field(m, 3, int, "snap_token", w), field(m, 4, int, "offset", w),
            field(m, 5, int, "total", w), field(m, 6, bytes, "chunk", w))


def check_int_msg(m: list[Any], names: tuple[str, ...], what: str) -> list[int]:
    if len(m) != len(names) + 1:
        raise ProtocolError(f"{what}: expected {len(names) + 1} fields, got {len(m)}")
    return [field(m, i + 1, int, n, what) for i, n in enumerate(names)]


def check_refuse(m: list[Any]) -> tuple[int, str]:
    w = "refuse frame"
    if len(m) != 3:
        raise ProtocolError(f"{w}: expected 3 fields, got {len(m)}")
    return field(m, 1, int, "token", w), field(m, 2, str, "reason", w)[:500]


def check_request(v: Any) -> tuple[int, str, Any]:
    w = "request"
    if type(v) is not list or len(v) != 3:
        raise ProtocolError(f"{w}: expected [id, op, body], got {_shown(v)}")
    return field(v, 0, int, "id", w), field(v, 1, str, "op", w)[:40], v[2]


def check_response(v: Any) -> tuple[int, str, Any]:
    w = "response"
    if type(v) is not list or len(v) != 3:
        raise ProtocolError(f"{w}: expected [id, code, body], got {_shown(v)}")
    return field(v, 0, int, "id", w), field(v, 1, str, "code", w)[:40], v[2]


# ---------------------------------------------------------------------- the handshake
Role = Literal["dialer", "acceptor"]


class Secret:
    """The secret a service's members and clients share; its repr hides it."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes):
        if not key:
            raise ValueError("the shared secret is empty")
        self._key = key

    @staticmethod
    def from_file(path: str | Path) -> Secret:
        """The file's bytes without surrounding whitespace; an empty file is refused."""
        key = Path(path).read_bytes().strip()
        if not key:
            raise ValueError(f"secret file {path} is empty")
        return Secret(key)

    def __repr__(self) -> str:
        return "Secret(<hidden>)"

    def proof(self, role: Role, service: str, nonce_d: bytes, nonce_a: bytes) -> bytes:
        data = msgpack.packb([f"shoal failover {role}", service, nonce_d, nonce_a],
                             use_bin_type=True)
        return hmac.new(self._key, data, hashlib.sha256).digest()

    def check(self, proof: bytes, role: Role, service: str, nonce_d: bytes,
              nonce_a: bytes) -> bool:
        return hmac.compare_digest(proof, self.proof(role, service, nonce_d, nonce_a))


def _hs(v: Any, kind: str, n: int) -> list[Any]:
    if type(v) is list and v and v[0] == "denied":
        reason = v[1] if len(v) > 1 and type(v[1]) is str else "no reason given"
        raise Denied(f"the member refused the connection: {reason[:300]}")
    if type(v) is not list or len(v) != n or v[0] != kind:
        raise ProtocolError(f"handshake: expected a {kind!r} frame of {n} fields, got "
                            f"{_shown(v)}: not a Shoal failover member port?")
    return v


async def dial_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         service: str, secret: Secret | None) -> None:
    """The dialer's side; raises Denied or ProtocolError."""
    nonce_d = secrets.token_bytes(NONCE) if secret is not None else b""
    writer.write(pack(["hello", VERSION, service, nonce_d], MAX_HANDSHAKE))
    w = _hs(await read_frame(reader, MAX_HANDSHAKE, "handshake"), "welcome", 5)
    version = field(w, 1, int, "version", "welcome")
    if version != VERSION:
        raise ProtocolError(f"handshake: the member speaks version {version}, we speak {VERSION}")
    nonce_a = field(w, 3, bytes, "nonce", "welcome")
    proof_a = field(w, 4, bytes, "proof", "welcome")
    if secret is None:
        return
    if len(nonce_a) != NONCE or not secret.check(proof_a, "acceptor", service, nonce_d, nonce_a):
        raise Denied("the member did not prove it knows the shared secret (it has none, "
                     "or another)")
    writer.write(pack(["proof", secret.proof("dialer", service, nonce_d, nonce_a)],
                      MAX_HANDSHAKE))
    _hs(await read_frame(reader, MAX_HANDSHAKE, "handshake"), "ready", 1)


async def accept_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           service: str, secret: Secret | None) -> None:
    """The member's side: refuses (with a "denied" frame naming why) a dialer for another
    service, of another version, or without the secret; raises ProtocolError then."""
    def deny(reason: str) -> ProtocolError:
        writer.write(pack(["denied", reason], MAX_HANDSHAKE))
        return ProtocolError(reason)

    v = await read_frame(reader, MAX_HANDSHAKE, "handshake")
    if type(v) is not list or len(v) != 4 or v[0] != "hello":
        raise deny("expected a hello frame: not a Shoal failover client")
    version = field(v, 1, int, "version", "hello")
    theirs = field(v, 2, str, "service", "hello")
    nonce_d = field(v, 3, bytes, "nonce", "hello")
    if version != VERSION:
        raise deny(f"protocol version {version}, this member speaks {VERSION}")
    if theirs != service:
        raise deny(f"this member serves {service!r}, not {theirs[:MAX_SERVICE]!r}")
    if secret is None:
        writer.write(pack(["welcome", VERSION, service, b"", b""], MAX_HANDSHAKE))
        return
    if len(nonce_d) != NONCE:
        raise deny("this member requires the shared secret (--secret-file), and the dialer "
                   "offers none")
    nonce_a = secrets.token_bytes(NONCE)
    writer.write(pack(["welcome", VERSION, service, nonce_a,
                       secret.proof("acceptor", service, nonce_d, nonce_a)], MAX_HANDSHAKE))
    p = await read_frame(reader, MAX_HANDSHAKE, "handshake")
    if type(p) is not list or len(p) != 2 or p[0] != "proof" or type(p[1]) is not bytes:
        raise deny("expected the dialer's proof frame")
    if not secret.check(p[1], "dialer", service, nonce_d, nonce_a):
        raise deny("wrong proof: the dialer does not know the shared secret")
    writer.write(pack(["ready"], MAX_HANDSHAKE))
