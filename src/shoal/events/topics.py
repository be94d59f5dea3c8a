"""Topics of the event log, as the meta group keeps them: one reserved key per topic naming its
partitions' consensus groups and its configuration, and the producer-id counter. Pure:
encoding, decoding, validation. (Brokers are the members whose spec has a Kafka address.)"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

import msgpack

from ..kv.keyvalue import RESERVED, prefix_end

TOPIC_PREFIX = RESERVED + b"kafka/topics/"
TOPIC_END = prefix_end(TOPIC_PREFIX)
PRODUCER_ID_KEY = RESERVED + b"kafka/producer-id"
OFFSETS_PREFIX = RESERVED + b"kafka/groups/"  # the group coordinator's persisted records

MAX_PARTITIONS = 256  # per topic: each is a consensus group
_LEGAL = re.compile(r"[a-zA-Z0-9._-]{1,249}")
DAY_MS = 24 * 3600 * 1000
# The topic configurations this log honours, with Kafka's defaults.
DEFAULTS = {"retention.ms": str(7 * DAY_MS), "retention.bytes": "-1",
            "cleanup.policy": "delete", "max.message.bytes": str(1024 * 1024),
            "segment.bytes": str(1 << 30), "segment.ms": str(7 * DAY_MS),
            "delete.retention.ms": str(DAY_MS)}
POLICIES = ("delete", "compact", "compact,delete", "delete,compact")
# The smallest value of each integer config (Kafka's; -1 means "no limit" where allowed).
MINIMUM = {"retention.ms": -1, "retention.bytes": -1, "max.message.bytes": 1,
           "segment.bytes": 14, "segment.ms": 1, "delete.retention.ms": 0}


class TopicError(ValueError):
    """A topic name, configuration or entry that cannot be used; the message says why."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code  # the Kafka error code to answer with


def check_name(name: str) -> None:
    if name in (".", "..") or not _LEGAL.fullmatch(name):
        raise TopicError(f"topic name {name!r:.80} is illegal: 1 to 249 of [a-zA-Z0-9._-], "
                         "not '.' or '..'", 17)  # INVALID_TOPIC_EXCEPTION


def check_config(config: dict[str, str]) -> dict[str, str]:
    """`config` over the defaults, each value checked."""
    out = dict(DEFAULTS)
    for name, value in config.items():
        if name not in DEFAULTS:
            raise TopicError(f"topic config {name!r} is not supported (supported: "
                             f"{', '.join(sorted(DEFAULTS))})", 40)  # INVALID_CONFIG
        if name == "cleanup.policy":
            value = value.replace(" ", "")
            if value not in POLICIES:
                raise TopicError(f"cleanup.policy {value!r}: one of {', '.join(POLICIES)}", 40)
        else:
            try:
                number = int(value)
            except ValueError:
                raise TopicError(f"{name} must be an integer, not {value!r}", 40) from None
            if not MINIMUM[name] <= number < 1 << 63:
                raise TopicError(f"{name} {number} is out of range (at least {MINIMUM[name]})",
                                 40)
        out[name] = value
    return out


def setting(config: dict[str, str], name: str) -> int:
    """An integer config (a topic made before `name` existed has its default)."""
    return int(config.get(name, DEFAULTS[name]))


def compacted(config: dict[str, str]) -> bool:
    return "compact" in config.get("cleanup.policy", "delete").split(",")


def deletes(config: dict[str, str]) -> bool:
    """Whether retention by time and size applies (Kafka: only with 'delete' in the policy)."""
    return "delete" in config.get("cleanup.policy", "delete").split(",")


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    groups: tuple[int, ...]  # partition i is consensus group groups[i]
    config: dict[str, str] = field(default_factory=lambda: dict(DEFAULTS))
    id: bytes = field(default_factory=lambda: uuid.uuid4().bytes)

    @property
    def key(self) -> bytes:
        return topic_key(self.name)

    def encode(self) -> bytes:
        return msgpack.packb({"groups": list(self.groups), "config": self.config, "id": self.id})

    @classmethod
    def decode(cls, key: bytes, value: bytes) -> Topic:
        name = key[len(TOPIC_PREFIX):].decode()
        try:
            raw = msgpack.unpackb(value)
            return cls(name, tuple(int(g) for g in raw["groups"]),
                       {str(k): str(v) for k, v in raw["config"].items()}, bytes(raw["id"]))
        except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
            raise TopicError(f"topic {name!r}: malformed entry: {exc}", -1) from None


def topic_key(name: str) -> bytes:
    return TOPIC_PREFIX + name.encode()

