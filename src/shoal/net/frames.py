"""Framing and the connection handshake, sans I/O.

A frame is a 4-byte big-endian payload length followed by the payload. Lengths above the
receiver's maximum are a protocol error, so a peer can never make us buffer more than one
maximum frame. The first frame on every connection, in both directions, is a handshake.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import msgpack

from shoal.consensus.messages import LocalProtocolError, NodeId, RemoteProtocolError

from .codec import MAX_UINT, unpack

MAGIC = b"SHOAL"
PROTOCOL_VERSION = 1
MAX_FRAME = 8 * 1024 * 1024
MAX_HANDSHAKE = 1024  # small, so a stranger's first bytes are refused before we buffer much
MAX_NAME = 128  # cluster id and codec name

HEADER = struct.Struct(">I")


def frame(payload: bytes, max_frame: int = MAX_FRAME) -> bytes:
    """Length-prefix `payload`. Too large is our own bug (message limits exceed max_frame)."""
    if len(payload) > max_frame:
        raise LocalProtocolError(f"frame of {len(payload)} bytes exceeds max_frame {max_frame}")
    return HEADER.pack(len(payload)) + payload


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
    """Who is on the other end: which cluster, which node, which engine's codec."""

    cluster_id: str
    node_id: NodeId
    codec: str
    version: int = PROTOCOL_VERSION

    def encode(self) -> bytes:
        payload = [MAGIC, self.version, self.cluster_id, self.node_id, self.codec]
        return frame(msgpack.packb(payload, use_bin_type=True), MAX_HANDSHAKE)

    @staticmethod
    def decode(payload: bytes) -> Handshake:
        v = unpack(payload, "handshake")
        if type(v) is not list or len(v) != 5 or v[0] != MAGIC:
            raise RemoteProtocolError("handshake: bad magic, not a Shoal peer")
        _, version, cluster_id, node_id, codec = v
        if type(version) is not int or version != PROTOCOL_VERSION:
            raise RemoteProtocolError(
                f"handshake: protocol version {version!r}, this node speaks {PROTOCOL_VERSION}"
            )
        for name, s in (("cluster id", cluster_id), ("codec", codec)):
            if type(s) is not str or not 0 < len(s) <= MAX_NAME:
                raise RemoteProtocolError(f"handshake: bad {name} {s!r:.60}")
        if type(node_id) is not int or not 0 < node_id <= MAX_UINT:
            raise RemoteProtocolError(f"handshake: bad node id {node_id!r:.40}")
        return Handshake(cluster_id, node_id, codec, version)
