"""A group's membership as its replicas agree on it: node id -> the member's address spec.

The spec is opaque here (`ID=PEER/CLIENT[/ETCD]` in production, anything in the simulator):
the replica only keeps it, replicates it inside CONFIG entries and snapshots, and tells its
host when it changes; the host turns specs into connections. Keeping it opaque keeps this room
free of sockets and of the server's configuration."""

from __future__ import annotations

from collections.abc import Mapping

from ..consensus.confchange import ConfChange
from ..consensus.messages import Durable, Entry, EntryKind, HardState

Members = dict[int, str]  # node id -> "ID=..." spec


def spec_id(spec: str) -> int:
    ident, sep, _ = spec.partition("=")
    if not sep or not ident.isdigit() or int(ident) <= 0:
        raise ValueError(f"member spec {spec!r} does not start with ID=")
    return int(ident)


def encode_context(specs: Mapping[int, str]) -> str:
    """What a CONFIG entry carries beside its changes: the specs of the members it adds."""
    assert all(spec_id(s) == n for n, s in specs.items()), specs
    return ",".join(specs[n] for n in sorted(specs))


def parse_context(context: str) -> Members:
    out: Members = {}
    for spec in filter(None, context.split(",")):
        out[spec_id(spec)] = spec
    return out


def apply_change(members: Members, cc: ConfChange, leaving: set[int]) -> Members:
    """The member table after `cc`: additions take the spec the entry carries (a promotion
    carries none and keeps the one we have) and cancel a pending removal; removals are only
    noted in `leaving`, because a joint configuration still counts the removed member, and
    the replica drops it once its engine does."""
    added = parse_context(cc.context)
    out = dict(members)
    for op, n in cc.changes:
        if op == "remove":
            if n in out:
                leaving.add(n)
        else:
            leaving.discard(n)
            if n in added:
                out[n] = added[n]
    return out


def bootstrap(specs: Mapping[int, str]) -> Durable:
    """A new group's first entry, written identically by every initial member: the change that
    adds them all, so a member added later learns the initial membership from the log like any
    other change."""
    assert specs, "a group needs at least one member"
    cc = ConfChange(tuple(("add", n) for n in sorted(specs)), context=encode_context(specs))
    entry = Entry(term=1, index=1, kind=EntryKind.CONFIG, data=cc.encode())
    return Durable(HardState(term=1, vote=0, commit=1), None, (entry,))
