"""The directory of consensus groups, kept in the meta group's key-value store.

Group 0, the meta group, holds one key per other group under a reserved prefix; the value
names the group's members and their address specs as they were when the group was created, so
every member bootstraps the group's first entry byte for byte alike. A process opens the
replicas of the groups that list it and closes those that stop listing it. Pure: this module
only encodes and decodes; the host decides what to open."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

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
    """`members` bootstrap the group (every one writes the same first entry); `joiners` were
    listed later, to be added through the group's own membership changes, so they open an
    empty replica that the leader catches up; `gone` left it for good (a replica moved away:
    the id is never listed for this group again, since a wiped member re-added under its old
    id could vote twice in a term)."""

    group: int
    members: Members  # node id -> spec, at creation
    joiners: Members = field(default_factory=dict)
    gone: frozenset[int] = frozenset()

    @property
    def hosts(self) -> set[int]:
        """The nodes that keep a replica of this group."""
        return (set(self.members) | set(self.joiners)) - self.gone

    def spec(self, node: int) -> str:
        return self.joiners.get(node) or self.members[node]

    def encode(self) -> bytes:
        body: dict[str, object] = {"members": dict(sorted(self.members.items()))}
        if self.joiners or self.gone:  # (an entry never moved keeps its original bytes)
            body["joiners"] = dict(sorted(self.joiners.items()))
            body["gone"] = sorted(self.gone)
        return msgpack.packb(body)

    def join(self, node: int, spec: str) -> GroupEntry:
        if node in self.gone:
            raise DirectoryError(f"node {node} held group {self.group} before; a replica is "
                                 "never moved back to a node it left (pick another node)")
        if node in self.hosts:
            raise DirectoryError(f"node {node} already hosts group {self.group}")
        if len(self.hosts) >= MAX_MEMBERS:
            raise DirectoryError(f"group {self.group} has {MAX_MEMBERS} replicas already")
        return replace(self, joiners={**self.joiners, node: spec})

    def leave(self, node: int) -> GroupEntry:
        if node not in self.hosts:
            raise DirectoryError(f"node {node} does not host group {self.group}")
        if len(self.hosts) <= 1:
            raise DirectoryError(f"group {self.group} would have no replica left")
        return replace(self, gone=self.gone | {node})


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
        joiners = {int(n): str(spec) for n, spec in raw.get("joiners", {}).items()}
        gone = frozenset(int(n) for n in raw.get("gone", ()))
    except (ValueError, TypeError, KeyError, AttributeError, msgpack.UnpackException) as exc:
        raise DirectoryError(f"group {group}: malformed directory entry: {exc}") from None
    specs = {**members, **joiners}
    if not 0 < len(members) <= MAX_MEMBERS or any(spec_id(s) != n for n, s in specs.items()):
        raise DirectoryError(f"group {group}: bad member list {sorted(members)}")
    return GroupEntry(group, members, joiners, gone)
