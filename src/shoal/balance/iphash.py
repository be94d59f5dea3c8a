"""nginx's ip_hash: the client address picks the backend, so a client keeps its server (and its
session) as long as membership is unchanged. Not consistent: a change remaps most clients."""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from itertools import accumulate

from .base import Backend, Request
from .hashing import HashPicker, key_hash


def client_key(address: str) -> bytes:
    """nginx keys an IPv4 client by its /24 (first three octets), an IPv6 client by all of it."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"ip-hash: not an IP address: {address!r}") from None
    return ip.packed[:3] if ip.version == 4 else ip.packed


class IpHashPicker(HashPicker):
    name = "ip-hash"

    def _rebuild(self) -> None:
        self._cumulative = list(accumulate(b.weight for b in self._backends))

    def request_hash(self, request: Request) -> int:
        if request.client is None:
            raise ValueError("ip-hash needs Request.client, the client's IP address")
        return key_hash(client_key(request.client))

    def pick_hash(self, h: int) -> Backend:
        # nginx: hash % total weight, then walk the weights.
        return self._backends[bisect_right(self._cumulative, h % self._cumulative[-1])]
