"""One Kafka request over a fresh connection, for tests that speak the protocol by hand."""

from __future__ import annotations

import socket
import time

from shoal.events.protocol import KafkaClientConnection, ResponseReceived


def call(addr: str, body: object, version: int, timeout: float = 20) -> tuple[object, float]:
    """The answer to one request to `addr` (host:port), and how long it took."""
    host, _, port = addr.rpartition(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        client = KafkaClientConnection()
        _, frame = client.send_request(body, version)  # type: ignore[arg-type]
        s.sendall(frame)
        while True:
            data = s.recv(1 << 16)
            assert data, "the server closed the connection instead of answering"
            client.receive_data(data)
            got = client.next_response()
            if isinstance(got, ResponseReceived):
                return got.body, time.monotonic() - started
