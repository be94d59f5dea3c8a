"""Membership changes by joint consensus (Raft thesis §4.3).

A change that alters the voters first moves the cluster to the joint configuration
C(old,new) — decisions need majorities of both — and, once that entry is applied, the leader
proposes the empty change that leaves the joint state for C(new). Learner-only changes need no
joint phase. Changes travel through the log as CONFIG entries holding `ConfChange.encode()`."""

from __future__ import annotations

import json
from dataclasses import dataclass

from .messages import ConfState, NodeId

OPS = ("add", "add-learner", "remove")


class ConfChangeError(ValueError):
    """The change cannot be applied to this configuration."""


@dataclass(frozen=True, slots=True)
class ConfChange:
    changes: tuple[tuple[str, NodeId], ...] = ()  # empty: leave the joint configuration
    context: str = ""  # opaque to the core; the node runtime puts member addresses here

    def encode(self) -> bytes:
        return json.dumps({"changes": [[op, n] for op, n in self.changes],
                           "context": self.context}).encode()

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        try:
            raw = json.loads(data)
            changes = tuple((str(op), int(n)) for op, n in raw["changes"])
            context = str(raw.get("context", ""))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ConfChangeError(f"malformed membership change {data[:60]!r}: {exc}") from None
        for op, n in changes:
            if op not in OPS or n <= 0:
                raise ConfChangeError(f"bad membership change ({op!r}, {n}); ops are {OPS}")
        return cls(changes, context)


def apply_change(conf: ConfState, cc: ConfChange) -> ConfState:
    if not cc.changes:
        if not conf.joint:
            raise ConfChangeError("leave-joint change while not in a joint configuration")
        return ConfState(voters=conf.voters, learners=conf.learners)
    if conf.joint:
        raise ConfChangeError("a membership change is already in progress (joint configuration)")
    voters, learners = set(conf.voters), set(conf.learners)
    for op, n in cc.changes:
        if op == "add":
            voters.add(n)
            learners.discard(n)
        elif op == "add-learner":
            if n in voters:
                raise ConfChangeError(f"node {n} is a voter; remove it before adding it as a learner")
            learners.add(n)
        else:
            voters.discard(n)
            learners.discard(n)
    if not voters:
        raise ConfChangeError("a configuration needs at least one voter")
    if frozenset(voters) == conf.voters:
        return ConfState(voters=conf.voters, learners=frozenset(learners))
    return ConfState(voters=frozenset(voters), outgoing=conf.voters, learners=frozenset(learners))
