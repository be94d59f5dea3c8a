"""What a registered instance is, and where it lives in the store.

Key layout: `/shoal/services/<service>/<instance-id>` → JSON metadata, attached to the
instance's lease. One key per instance, so a prefix range lists a service and a prefix watch
follows it; the lease makes a dead process's key vanish on its own."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..balance import Backend

ROOT = "/shoal/services/"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # no "/" so keys stay one level deep
MAX_VALUE_BYTES = 16 * 1024


def check_name(what: str, name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"{what} {name!r}: use 1-128 letters, digits, '.', '_' or '-'")
    return name


def service_prefix(service: str) -> bytes:
    return f"{ROOT}{check_name('service name', service)}/".encode()


def instance_key(service: str, instance_id: str) -> bytes:
    return service_prefix(service) + check_name("instance id", instance_id).encode()


def parse_address(address: str, listen: bool = False) -> tuple[str, int]:
    """HOST:PORT (IPv6 as [::1]:80) → (host, port), or ValueError naming what is wrong.
    A `listen` address may use port 0 (any free port)."""
    host, sep, port = address.rpartition(":")
    low = 0 if listen else 1
    if not sep or not host or not port.isdigit() or not low <= int(port) < 65536:
        raise ValueError(f"address {address!r}: expected HOST:PORT with a port in {low}..65535")
    return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True)
class Instance:
    service: str
    id: str
    address: str  # HOST:PORT
    weight: int = 100
    zone: str = ""
    version: str = ""
    tags: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        check_name("service name", self.service)
        check_name("instance id", self.id)
        parse_address(self.address)
        if isinstance(self.weight, bool) or not isinstance(self.weight, int) or self.weight < 0:
            raise ValueError(f"instance {self.id!r}: weight must be an int >= 0, got {self.weight!r}")

    @property
    def key(self) -> bytes:
        return instance_key(self.service, self.id)

    def to_json(self) -> bytes:
        data = {"address": self.address, "weight": self.weight, "zone": self.zone,
                "version": self.version, "tags": list(self.tags)}
        raw = json.dumps(data, separators=(",", ":")).encode()
        if len(raw) > MAX_VALUE_BYTES:
            raise ValueError(f"instance {self.id!r}: metadata is {len(raw)} bytes, limit {MAX_VALUE_BYTES}")
        return raw

    @classmethod
    def from_kv(cls, key: bytes, value: bytes) -> Instance:
        """Decode a stored entry; ValueError if the key or JSON is not an instance's."""
        text = key.decode("utf-8", errors="replace")
        if not text.startswith(ROOT) or text.count("/") != 4:
            raise ValueError(f"{text!r} is not a key under {ROOT}<service>/<id>")
        service, instance_id = text[len(ROOT):].split("/")
        try:
            data: dict[str, Any] = json.loads(value)
            return cls(service, instance_id, str(data["address"]), int(data.get("weight", 100)),
                       str(data.get("zone", "")), str(data.get("version", "")),
                       tuple(str(t) for t in data.get("tags", ())))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{text}: bad instance metadata: {exc}") from None

    def backend(self) -> Backend:
        return Backend(self.id, self.address, self.weight)
