"""Majorities, single and joint. In joint consensus (Raft §6) every decision — an election,
a commit, a read — needs a majority of the incoming voters AND of the outgoing voters."""

from __future__ import annotations

from collections.abc import Mapping

from .messages import ConfState, NodeId


def majority_index(voters: frozenset[NodeId], match: Mapping[NodeId, int]) -> int:
    """The largest index that a majority of `voters` has reached (inf for an empty set, so
    an empty half of a joint config never holds the other back)."""
    if not voters:
        return 1 << 62
    acked = sorted((match.get(v, 0) for v in voters), reverse=True)
    return acked[len(voters) // 2]


def committed_index(conf: ConfState, match: Mapping[NodeId, int]) -> int:
    return min(majority_index(conf.voters, match), majority_index(conf.outgoing, match))


def _vote(voters: frozenset[NodeId], votes: Mapping[NodeId, bool]) -> bool | None:
    """True = won, False = lost, None = still pending."""
    if not voters:
        return True
    yes = sum(1 for v in voters if votes.get(v) is True)
    no = sum(1 for v in voters if votes.get(v) is False)
    need = len(voters) // 2 + 1
    if yes >= need:
        return True
    if no > len(voters) - need:
        return False
    return None


def vote_result(conf: ConfState, votes: Mapping[NodeId, bool]) -> bool | None:
    a, b = _vote(conf.voters, votes), _vote(conf.outgoing, votes)
    if a is False or b is False:
        return False
    if a is True and b is True:
        return True
    return None


def has_quorum(conf: ConfState, acked: set[NodeId] | frozenset[NodeId]) -> bool:
    return vote_result(conf, {v: True for v in acked}) is True
