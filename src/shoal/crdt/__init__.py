"""Conflict-free replicated data types for active-active replication, pure: no I/O, no clock.

Delta-state CRDTs (Almeida, Shoker, Baquero, "Delta State Replicated Data Types", 2018) over
one dot and causal-context machinery (causal.py): counters, registers, an add-wins set, a map
of nested CRDTs and an RGA sequence, each with local operations that return deltas, `merge`,
`value`, `==` and a validated wire form; a hybrid logical clock for last-writer-wins; and
`Replica`, the delta-interval anti-entropy driver for a set of named objects. See
docs/crdt.md."""

from .base import CRDT, from_wire, joined, type_named
from .causal import Causal, CausalContext, Dot, DotFun, DotMap, DotSet, DotStore
from .counters import CausalCounter, GCounter, PNCounter
from .errors import ClockDriftError, CRDTError, MergeError, WireError
from .hlc import HLC, Timestamp
from .maps import ORMap
from .registers import LWWRegister, MVRegister
from .replica import Message, Replica, Send
from .sequence import RGA
from .sets import ORSet

__all__ = ["CRDT", "HLC", "RGA", "CRDTError", "Causal", "CausalContext", "CausalCounter",
           "ClockDriftError", "Dot", "DotFun", "DotMap", "DotSet", "DotStore", "GCounter",
           "LWWRegister", "MVRegister", "MergeError", "Message", "ORMap", "ORSet", "PNCounter",
           "Replica", "Send", "Timestamp", "WireError", "from_wire", "joined", "type_named"]
