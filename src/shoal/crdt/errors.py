"""The errors of the CRDT package: one root, so a host can catch everything a peer's data can
cause with one clause, and one subclass per kind of cause."""

from __future__ import annotations


class CRDTError(ValueError):
    """Something about CRDT data or its use is wrong; the message says what."""


class WireError(CRDTError):
    """Wire data (or an operation's argument) is malformed; the message starts with where in
    the data, e.g. "orset.store[2][1][0]: ...", then says what is wrong."""


class MergeError(CRDTError):
    """Two states cannot be joined: different types or shapes, or one dot (one timestamp)
    carrying two values, which only a bug or a forged message produces."""


class ClockDriftError(CRDTError):
    """A hybrid logical clock refused a remote timestamp too far ahead of its physical clock."""
