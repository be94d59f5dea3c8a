"""Framing, the group envelope and the connection handshake, sans I/O.

A frame is a 4-byte big-endian payload length followed by the payload. Lengths above the
receiver's maximum are a protocol error, so a peer can never make us buffer more than one
maximum frame. The first frame on every connection, in both directions, is a handshake.

With a peer secret the handshake also authenticates both ends (challenge-response): each
side's handshake carries a fresh random nonce, the acceptor's carries its proof, and the
dialer answers with its own proof in one more frame of PROOF_SIZE bytes. A proof is
HMAC-SHA256(secret, role, cluster id, dialer id, acceptor id, dialer nonce, acceptor nonce):
the nonces make every proof good for one connection only (a recorded one cannot be replayed),
and the role makes the acceptor's proof useless as the dialer's (it cannot be reflected). A
handshake without a secret is the five fields protocol 2 always had, byte for byte.

Every later frame carries one peer message of one consensus group. Its payload is two msgpack
values back to back: the group id, an unsigned integer below 2**32 (group 0 is the meta
group), then the engine codec's bytes for the message. The group is the transport's routing
envelope, not a field of any engine's message, so the codecs stay what they were and a group
below 128 costs one byte (a msgpack positive fixint). One connection per direction between two
processes carries all their groups; the envelope is what tells them apart.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgpack

from shoal.consensus.messages import LocalProtocolError, NodeId, RemoteProtocolError

from .codec import _UNPACK_ERRORS, MAX_UINT, unpack

MAGIC = b"SHOAL"
PROTOCOL_VERSION = 2  # 2: every message payload starts with its group id
MAX_FRAME = 8 * 1024 * 1024
MAX_HANDSHAKE = 1024  # small, so a stranger's first bytes are refused before we buffer much
MAX_NAME = 128  # cluster id and codec name
MAX_GROUP = 2**32 - 1  # group ids travel as at most a msgpack uint32
AUTH_HMAC = "hmac-sha256"  # the one authentication a handshake may declare
NONCE_SIZE = 32
PROOF_SIZE = 32  # an HMAC-SHA256 digest

HEADER = struct.Struct(">I")
# The frame header and the group id in one pack, in msgpack's shortest unsigned form:
# a positive fixint below 128, else a marker byte (uint8 0xcc, uint16 0xcd, uint32 0xce).
_HEADER_FIXINT = struct.Struct(">IB")
_HEADER_U8 = struct.Struct(">IBB")
_HEADER_U16 = struct.Struct(">IBH")
_HEADER_U32 = struct.Struct(">IBI")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


def frame(payload: bytes, max_frame: int = MAX_FRAME) -> bytes:
    """Length-prefix `payload`. Too large is our own bug (message limits exceed max_frame)."""
    if len(payload) > max_frame:
        raise LocalProtocolError(f"frame of {len(payload)} bytes exceeds max_frame {max_frame}")
    return HEADER.pack(len(payload)) + payload


def message_frame(group: int, message: bytes, max_frame: int = MAX_FRAME) -> bytes:
    """The frame of one peer message: length, `group` as a msgpack uint, then `message`
    (a codec's bytes). A bad group id or an oversized message is our own bug."""
    if type(group) is not int or not 0 <= group <= MAX_GROUP:  # `type is`: a bool is no group
        raise LocalProtocolError(
            f"group id must be an integer in [0, {MAX_GROUP}], got {group!r:.40}"
        )
    n = len(message)
    if group < 0x80:
        head = _HEADER_FIXINT.pack(n + 1, group)
    elif group <= 0xFF:
        head = _HEADER_U8.pack(n + 2, 0xCC, group)
    elif group <= 0xFFFF:
        head = _HEADER_U16.pack(n + 3, 0xCD, group)
    else:
        head = _HEADER_U32.pack(n + 5, 0xCE, group)
    size = len(head) - HEADER.size + n
    if size > max_frame:
        raise LocalProtocolError(f"frame of {size} bytes exceeds max_frame {max_frame}")
    return head + message


def split_group(payload: bytes) -> tuple[int, bytes]:
    """A message frame's payload -> (group, the codec's bytes). The group is checked like
    every decoded field: RemoteProtocolError names it. Our encoder writes the shortest
    unsigned form; the fast path reads exactly those, anything else goes the careful way."""
    n = len(payload)
    b = payload[0] if n else -1
    if 0 <= b < 0x80:
        return b, payload[1:]
    if b == 0xCC and n >= 2:
        return payload[1], payload[2:]
    if b == 0xCD and n >= 3:
        return _U16.unpack_from(payload, 1)[0], payload[3:]
    if b == 0xCE and n >= 5:
        return _U32.unpack_from(payload, 1)[0], payload[5:]
    return _split_group_slow(payload)


def _group_error(why: str, value: object) -> RemoteProtocolError:
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return RemoteProtocolError(f"peer message field 'group': {why}, got {shown}")


def _split_group_slow(payload: bytes) -> tuple[int, bytes]:
    """Any other leading msgpack value: a wider or signed integer encoding (legal msgpack, so
    judged by its value), or not an integer at all. Reached only by odd or hostile peers."""
    if not payload:
        raise _group_error("missing", payload)
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(payload))
    unpacker.feed(payload)
    try:
        group = unpacker.unpack()
    except msgpack.OutOfData:
        raise _group_error("truncated", payload[:9]) from None
    except _UNPACK_ERRORS as e:
        why = f"not valid msgpack ({e or type(e).__name__})"
        raise RemoteProtocolError(f"peer message field 'group': {why}") from None
    if type(group) is not int:
        raise _group_error("expected an integer", group)
    if group < 0:
        raise _group_error("negative", group)
    if group > MAX_GROUP:
        raise _group_error(f"larger than {MAX_GROUP}", group)
    return group, payload[unpacker.tell():]


class FrameDecoder:
    """Feed it bytes as they arrive; it returns the complete payloads, in order."""

    def __init__(self, max_frame: int = MAX_FRAME):
        self._max = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos, end = 0, len(buf)
        while end - pos >= 4:
            (n,) = HEADER.unpack_from(buf, pos)
            if n > self._max:
                raise RemoteProtocolError(f"frame of {n} bytes exceeds max_frame {self._max}")
            if end - pos - 4 < n:
                break
            out.append(bytes(buf[pos + 4 : pos + 4 + n]))
            pos += 4 + n
        del buf[:pos]
        return out


@dataclass(frozen=True, slots=True)
class Handshake:
    """Who is on the other end: which cluster, which node, which engine's codec; with a peer
    secret, also `auth` (AUTH_HMAC), this connection's `nonce` and, from the acceptor, its
    `proof`."""

    cluster_id: str
    node_id: NodeId
    codec: str
    version: int = PROTOCOL_VERSION
    auth: str = ""
    nonce: bytes = b""
    proof: bytes = b""

    def encode(self) -> bytes:
        payload: list[object] = [MAGIC, self.version, self.cluster_id, self.node_id, self.codec]
        if self.auth:
            payload += [self.auth, self.nonce, self.proof]
        return frame(msgpack.packb(payload, use_bin_type=True), MAX_HANDSHAKE)

    @staticmethod
    def decode(payload: bytes) -> Handshake:
        v = unpack(payload, "handshake")
        if type(v) is not list or len(v) not in (5, 8) or v[0] != MAGIC:
            raise RemoteProtocolError("handshake: bad magic, not a Shoal peer")
        _, version, cluster_id, node_id, codec = v[:5]
        if type(version) is not int or version != PROTOCOL_VERSION:
            raise RemoteProtocolError(
                f"handshake: protocol version {version!r}, this node speaks {PROTOCOL_VERSION}"
            )
        for name, s in (("cluster id", cluster_id), ("codec", codec)):
            if type(s) is not str or not 0 < len(s) <= MAX_NAME:
                raise RemoteProtocolError(f"handshake: bad {name} {s!r:.60}")
        if type(node_id) is not int or not 0 < node_id <= MAX_UINT:
            raise RemoteProtocolError(f"handshake: bad node id {node_id!r:.40}")
        if len(v) == 5:
            return Handshake(cluster_id, node_id, codec, version)
        auth, nonce, proof = v[5:]
        if auth != AUTH_HMAC:
            raise RemoteProtocolError(f"handshake: unknown authentication {auth!r:.40}")
        if type(nonce) is not bytes or len(nonce) != NONCE_SIZE:
            raise RemoteProtocolError(f"handshake: a nonce must be {NONCE_SIZE} bytes")
        if type(proof) is not bytes or len(proof) not in (0, PROOF_SIZE):
            raise RemoteProtocolError(f"handshake: a proof must be {PROOF_SIZE} bytes")
        return Handshake(cluster_id, node_id, codec, version, auth, nonce, proof)


Role = Literal["dialer", "acceptor"]


class PeerSecret:
    """The secret every member of a cluster shares, and the handshake proofs made with it.
    Its repr hides it, so it never reaches a log."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes):
        if not key:
            raise ValueError("the peer secret is empty")
        self._key = key

    @staticmethod
    def from_file(path: str | Path) -> PeerSecret:
        """The file's bytes without surrounding whitespace (a trailing newline is no part of
        the secret). An empty file is refused: it would authenticate anyone who guessed it."""
        key = Path(path).read_bytes().strip()
        if not key:
            raise ValueError(f"peer secret file {path} is empty")
        return PeerSecret(key)

    def __repr__(self) -> str:
        return "PeerSecret(<hidden>)"

    def hello(self, hello: Handshake) -> Handshake:
        """`hello` for one new connection: declaring AUTH_HMAC, with a fresh nonce."""
        return Handshake(hello.cluster_id, hello.node_id, hello.codec, hello.version, AUTH_HMAC,
                         secrets.token_bytes(NONCE_SIZE))

    def proof(self, role: Role, dialer: Handshake, acceptor: Handshake) -> bytes:
        """`role`'s proof on the connection where `dialer` and `acceptor` shook hands. Both
        ids and both nonces are in it, the cluster id is the acceptor's (they are equal, or
        the dialer was refused before any proof)."""
        assert len(dialer.nonce) == NONCE_SIZE and len(acceptor.nonce) == NONCE_SIZE
        data = msgpack.packb(
            [f"shoal peer {role}", acceptor.cluster_id, dialer.node_id, acceptor.node_id,
             dialer.nonce, acceptor.nonce], use_bin_type=True)
        return hmac.new(self._key, data, hashlib.sha256).digest()

    def check(self, proof: bytes, role: Role, dialer: Handshake, acceptor: Handshake) -> bool:
        return hmac.compare_digest(proof, self.proof(role, dialer, acceptor))
