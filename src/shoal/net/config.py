"""Every bound and timer of the transport in one place."""

from __future__ import annotations

from dataclasses import dataclass

from .frames import MAX_FRAME


@dataclass(frozen=True, slots=True)
class NetConfig:
    max_frame: int = MAX_FRAME  # larger frames are a protocol error, both ways
    max_queue_msgs: int = 4096  # per peer; beyond it new messages are dropped
    max_queue_bytes: int = 32 * 1024 * 1024  # per peer, counting framed bytes
    max_batch_bytes: int = 1024 * 1024  # one write; keeps each copy and syscall bounded
    read_chunk: int = 256 * 1024  # bytes asked of the socket per read
    max_inbound: int = 256  # concurrent accepted connections, handshaking or not
    backoff_base: float = 0.05  # seconds before the first redial
    backoff_max: float = 2.0  # the cap on redial delays
    connect_timeout: float = 2.0  # TCP connect (and TLS handshake) per attempt
    handshake_timeout: float = 2.0  # for the peer's handshake (and proof) frames
    # At most this many lines about refused or lost inbound connections per window, so a
    # flood of strangers cannot fill the log; the rest are counted in the next line allowed.
    log_burst: int = 10
    log_window: float = 10.0  # seconds

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if not getattr(self, name) > 0:
                raise ValueError(f"NetConfig.{name} must be positive, got {getattr(self, name)!r}")
        if self.backoff_base > self.backoff_max:
            raise ValueError("NetConfig.backoff_base must not exceed backoff_max")
