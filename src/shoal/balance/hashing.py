"""Stable hashes (the same on every process and machine, unlike the salted built-in hash())
and the base class of pickers that map a key to a backend.

`mix64` and `unit` use only shifts, multiplies and masks, so they work unchanged on Python
ints and on numpy uint64 arrays: the report vectorises with the very same functions."""

from __future__ import annotations

from abc import abstractmethod
from hashlib import blake2b
from typing import Any

from .base import Backend, Picker, Request

M64 = (1 << 64) - 1


def key_hash(key: str | bytes) -> int:
    """64-bit hash of a key: BLAKE2b, which is in the standard library and runs in C."""
    data = key.encode() if isinstance(key, str) else key
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "little")


def mix64(x: Any) -> Any:
    """MurmurHash3's fmix64 finalizer: a bijection on 64 bits that spreads every input bit."""
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & M64
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & M64
    return x ^ (x >> 33)


def unit(h: Any) -> Any:
    """A 64-bit hash as a float strictly inside (0, 1): its top 53 bits, centred."""
    return ((h >> 11) + 0.5) * 2.0**-53


class HashPicker(Picker):
    """Maps a request's key to a backend through a 64-bit hash: same key, same backend."""

    def pick(self, request: Request) -> Backend:
        return self.pick_hash(self.request_hash(request))

    def request_hash(self, request: Request) -> int:
        key = request.hash_key
        if key is None:
            raise ValueError(f"{self.name} needs Request.key or Request.client to hash")
        return key_hash(key)

    @abstractmethod
    def pick_hash(self, h: int) -> Backend:
        """The backend for a 64-bit key hash."""
