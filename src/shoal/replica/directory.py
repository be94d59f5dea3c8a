"""The directory of consensus groups, kept in the meta group's key-value store.

Group 0, the meta group, holds one key per other group under a reserved prefix; the value
names the group's members and their address specs as they were when the group was created, so
every member bootstraps the group's first entry byte for byte alike. A process opens the
replicas of the groups that list it and closes those that stop listing it. Pure: this module
only encodes and decodes; the host decides what to open."""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from ..kv.keyvalue import prefix_end
from .membership import Members, spec_id

PREFIX = b"\xff\xfe/shoal/groups/"
END = prefix_end(PREFIX)
MAX_GROUP = 2**32 - 2  # the transport carries group ids below 2**32 and keeps the last
MAX_MEMBERS = 9


class DirectoryError(ValueError):
    """A group entry that cannot be used; the message says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class GroupEntry:
    group: int
    members: Members  # node id -> spec, at creation

    def encode(self) -> bytes:
        return msgpack.packb({"members": dict(sorted(self.members.items()))})


def key(group: int) -> bytes:
    if not 0 < group <= MAX_GROUP:
        raise DirectoryError(f"group ids run from 1 to {MAX_GROUP} (0 is the meta group), not {group}")
    return PREFIX + b"%010d" % group


def decode(k: bytes, value: bytes) -> GroupEntry:
    if not k.startswith(PREFIX) or not k[len(PREFIX):].isdigit():
        raise DirectoryError(f"not a group directory key: {k!r:.80}")
    group = int(k[len(PREFIX):])
    try:
        raw = msgpack.unpackb(value, strict_map_key=False)
        members = {int(n): str(spec) for n, spec in raw["members"].items()}
    except (ValueError, TypeError, KeyError, AttributeError, msgpack.UnpackException) as exc:
        raise DirectoryError(f"group {group}: malformed directory entry: {exc}") from None
    if not 0 < len(members) <= MAX_MEMBERS or any(spec_id(s) != n for n, s in members.items()):
        raise DirectoryError(f"group {group}: bad member list {sorted(members)}")
    return GroupEntry(group, members)
