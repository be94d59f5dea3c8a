"""shoal.net: the asyncio TCP transport for peer traffic, its framing and codecs (docs/net.md)."""

from .codec import RAFT, Codec, decode_message, encode_message, get_codec, register_codec
from .config import NetConfig
from .faults import FaultPlan
from .frames import (
    MAGIC,
    MAX_FRAME,
    MAX_GROUP,
    PROTOCOL_VERSION,
    FrameDecoder,
    Handshake,
    PeerSecret,
    frame,
    message_frame,
    split_group,
)
from .loop import install_event_loop
from .stats import NetStats, PeerStats
from .tls import NODE_URI_PREFIX, TLSConfig, node_uri
from .transport import Transport

__all__ = [
    "MAGIC", "MAX_FRAME", "MAX_GROUP", "NODE_URI_PREFIX", "PROTOCOL_VERSION", "RAFT", "Codec",
    "FaultPlan", "FrameDecoder", "Handshake", "NetConfig", "NetStats", "PeerSecret", "PeerStats",
    "TLSConfig", "Transport", "decode_message", "encode_message", "frame", "get_codec",
    "install_event_loop", "message_frame", "node_uri", "register_codec", "split_group",
]
