"""What the group coordinator persists, and how it is written: keys and values as bytes.

`shoal.events.coordinator` is pure; what must survive a coordinator move is handed to the host
as `Persist(key, value)` items (value None = delete the key), which the host writes to Shoal's
replicated store before it sends the replies that depend on them. This module owns the layout,
so the coordinator and `GroupCoordinator.load` agree on it, and a reader can find it in one
place. It plays the part of Kafka's `__consumer_offsets` records (GroupMetadataManager's
`groupMetadataKey/Value` and `offsetCommitKey/Value`), in a key-value store instead of a
compacted topic: the latest value of each key is the state, as after Kafka's compaction.

Keys (a group id and a topic may hold any character, so both are percent-encoded, which keeps
"/" a separator and lets a host read one group with a prefix range):

    <prefix><quote(group)>/g                               the group's metadata
    <prefix><quote(group)>/o/<quote(topic)>/<partition>    one committed offset

Values are JSON (UTF-8), bytes fields in base64, each with "v": 1 so the format can grow:

- group: protocol type, generation, selected protocol, leader, the current state's timestamp
  (offset retention counts from the time a group became Empty), and per member the id, client
  id and host, both timeouts, its subscription (the metadata of the selected protocol) and its
  assignment: what Kafka's GroupMetadataValue v3 holds.
- offset: the offset, leader epoch, metadata string, commit timestamp and the explicit
  expiry some old OffsetCommit versions (v2-4) ask for: Kafka's OffsetCommitValue.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import quote, unquote

DEFAULT_PREFIX = b"kafka/groups/"
_FORMAT = 1


class Persist(NamedTuple):
    """A record to write before the replies of the same Output are sent (None deletes it)."""

    key: bytes
    value: bytes | None


@dataclass(frozen=True, slots=True)
class OffsetValue:
    offset: int
    leader_epoch: int  # -1 when the client sent none
    metadata: str
    commit_timestamp_ms: int
    expire_timestamp_ms: int | None  # only OffsetCommit v2-4 with a retention time set it


@dataclass(frozen=True, slots=True)
class MemberValue:
    member_id: str
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    subscription: bytes  # the member's metadata for the group's selected protocol
    assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupValue:
    protocol_type: str | None
    generation: int
    protocol_name: str | None
    leader: str | None
    state_timestamp_ms: int
    members: tuple[MemberValue, ...]


class GroupKey(NamedTuple):
    group_id: str


class OffsetKey(NamedTuple):
    group_id: str
    topic: str
    partition: int


def _q(text: str) -> bytes:
    return quote(text, safe="").encode("ascii")


def _uq(raw: bytes) -> str:
    return unquote(raw.decode("ascii"), errors="strict")


def group_key(prefix: bytes, group_id: str) -> bytes:
    return prefix + _q(group_id) + b"/g"


def offset_key(prefix: bytes, group_id: str, topic: str, partition: int) -> bytes:
    return prefix + _q(group_id) + b"/o/" + _q(topic) + b"/" + str(partition).encode("ascii")


def parse_key(prefix: bytes, key: bytes) -> GroupKey | OffsetKey:
    """The group or offset a key names; ValueError for a key this layout did not write."""
    if not key.startswith(prefix):
        raise ValueError(f"key {key!r} is not under {prefix!r}")
    parts = key[len(prefix):].split(b"/")
    if len(parts) == 2 and parts[1] == b"g":
        return GroupKey(_uq(parts[0]))
    if len(parts) == 4 and parts[1] == b"o" and parts[3].isdigit():
        return OffsetKey(_uq(parts[0]), _uq(parts[2]), int(parts[3]))
    raise ValueError(f"key {key!r} is neither a group nor an offset key")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("expected base64 text")
    return base64.b64decode(text.encode("ascii"), validate=True)


def _int(obj: dict[str, Any], name: str) -> int:
    value = obj[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} is not an integer")
    return value


def _opt_str(obj: dict[str, Any], name: str) -> str | None:
    value = obj[name]
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} is not a string")
    return value


def _str(obj: dict[str, Any], name: str) -> str:
    value = _opt_str(obj, name)
    if value is None:
        raise ValueError(f"{name} is null")
    return value


def _load_json(data: bytes) -> dict[str, Any]:
    obj = json.loads(data.decode("utf-8"))
    if not isinstance(obj, dict) or obj.get("v") != _FORMAT:
        raise ValueError("not a version-1 coordinator record")
    return obj


def encode_offset(value: OffsetValue) -> bytes:
    return json.dumps({
        "v": _FORMAT, "offset": value.offset, "leader_epoch": value.leader_epoch,
        "metadata": value.metadata, "commit_ts": value.commit_timestamp_ms,
        "expire_ts": value.expire_timestamp_ms,
    }, separators=(",", ":")).encode("utf-8")


def decode_offset(data: bytes) -> OffsetValue:
    obj = _load_json(data)
    expire = obj["expire_ts"]
    if expire is not None and (not isinstance(expire, int) or isinstance(expire, bool)):
        raise ValueError("expire_ts is not an integer")
    return OffsetValue(_int(obj, "offset"), _int(obj, "leader_epoch"), _str(obj, "metadata"),
                       _int(obj, "commit_ts"), expire)


def encode_group(value: GroupValue) -> bytes:
    return json.dumps({
        "v": _FORMAT, "protocol_type": value.protocol_type, "generation": value.generation,
        "protocol": value.protocol_name, "leader": value.leader,
        "state_ts": value.state_timestamp_ms,
        "members": [{
            "id": m.member_id, "client_id": m.client_id, "client_host": m.client_host,
            "rebalance_timeout_ms": m.rebalance_timeout_ms,
            "session_timeout_ms": m.session_timeout_ms,
            "subscription": _b64(m.subscription), "assignment": _b64(m.assignment),
        } for m in value.members],
    }, separators=(",", ":")).encode("utf-8")


def decode_group(data: bytes) -> GroupValue:
    obj = _load_json(data)
    raw_members = obj["members"]
    if not isinstance(raw_members, list):
        raise ValueError("members is not a list")
    members = []
    for m in raw_members:
        if not isinstance(m, dict):
            raise ValueError("a member is not an object")
        members.append(MemberValue(
            _str(m, "id"), _str(m, "client_id"), _str(m, "client_host"),
            _int(m, "rebalance_timeout_ms"), _int(m, "session_timeout_ms"),
            _unb64(m["subscription"]), _unb64(m["assignment"]),
        ))
    return GroupValue(_opt_str(obj, "protocol_type"), _int(obj, "generation"),
                      _opt_str(obj, "protocol"), _opt_str(obj, "leader"),
                      _int(obj, "state_ts"), tuple(members))
