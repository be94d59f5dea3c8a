"""Anti-entropy for one replica of a set of named CRDT objects, pure: it returns messages to
send and never sends them. The network, the timer and the choice of peers belong to the host.

Delta-interval anti-entropy with acknowledgements (Almeida, Shoker, Baquero 2018, algorithm 2):

- Every local operation's delta goes into a log under the next sequence number of this
  replica (its own numbering, unrelated to dots). Each peer has an `acked` number: the peer
  has acknowledged holding every log entry below it.
- `tick()` sends each peer the join of the log entries from its `acked` up to the end, per
  object: {"t": "delta", "seq": end, "objects": {name: wire}}. Entries that came from that
  peer are left out (it has them). The peer merges and answers {"t": "ack", "seq": end}.
  Nothing is retransmitted on its own: the next tick sends the interval again, grown by
  whatever happened since, until an ack arrives; losing, duplicating or reordering any of
  these messages is harmless because merging is idempotent and an ack only ever raises
  `acked`.
- A delta received that changes this replica's state is logged too (attributed to its
  sender), so it travels on to peers the sender cannot reach: propagation is transitive.
- The log is bounded: it keeps entries only from the lowest point a peer still needs, and at
  most `max_buffered` of them. A peer left behind the log's start (partitioned while more than
  `max_buffered` deltas happened, new, or restarted) gets the full state of every object
  instead, in the same "delta" message with "full": true; its ack puts it back on deltas.
- Every `digest_every` ticks each peer also gets a digest (a hash per object). A peer whose
  hashes differ answers with its state of the objects that differ and asks for ours; we merge
  and send ours back. This heals whatever the log could not: a peer that lost its state, or
  an ack that lied. Received full states and digest answers are merged but not logged: the
  digest rounds carry them on.

Every message names the sender's incarnation, a number the host raises each time a replica
restarts with empty memory. A peer's message with a higher incarnation than before resets
what we believe it holds (it gets full state next); one with a lower incarnation is from a past
life, late, and is dropped. Acks name the incarnation they acknowledge, so an ack addressed to
our previous life does not count.

Messages are plain data (msgpack-able dicts). `on_message` reads and checks a whole message
before merging any of it, raising WireError for malformed data and MergeError for an object of
another type than ours under the same name; only a forged or buggy state (one dot with two
values) can still fail half-way, after merging the objects before it, each merge whole."""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack

from . import wire
from .base import CRDT, from_wire
from .errors import CRDTError

Message = dict[str, Any]
Send = tuple[str, Message]  # (peer, message)
C = TypeVar("C", bound=CRDT)

MAX_OBJECTS = 10_000


@dataclass(slots=True)
class _Peer:
    acked: int = -1  # everything this replica logged below this the peer holds; -1: unknown
    full_at: int | None = None  # the log end when we last sent it full state, awaiting ack
    incarnation: int | None = None  # the peer's, as last heard


@dataclass(frozen=True, slots=True)
class _Entry:
    seq: int
    name: str
    delta: CRDT
    origin: str | None  # the peer it came from; None: a local operation


class Replica:
    """One replica's objects, delta log and per-peer anti-entropy state."""

    def __init__(self, replica_id: str, peers: Iterable[str], *, incarnation: int = 0,
                 max_buffered: int = 64, digest_every: int | None = 5,
                 max_objects: int = MAX_OBJECTS) -> None:
        wire.replica_id(replica_id)
        if max_buffered < 1 or max_objects < 1:
            raise ValueError("max_buffered and max_objects must be >= 1")
        if digest_every is not None and digest_every < 1:
            raise ValueError("digest_every must be >= 1 (or None: no digests)")
        self.id, self.incarnation = replica_id, incarnation
        self.max_buffered, self.digest_every, self.max_objects = (max_buffered, digest_every,
                                                                  max_objects)
        self._objects: dict[str, CRDT] = {}
        self._digests: dict[str, bytes] = {}  # a cache, dropped for an object when it changes
        self._log: deque[_Entry] = deque()
        self._log_start = 0  # seq of the oldest entry kept (the log covers [start, end))
        self._end = 0  # the next seq
        self._ticks = 0
        self._peers: dict[str, _Peer] = {}
        for p in peers:
            self.add_peer(p)

    # Peers.

    def add_peer(self, peer: str) -> None:
        wire.replica_id(peer, "peer")
        if peer == self.id:
            raise ValueError(f"{peer!r} is this replica")
        self._peers.setdefault(peer, _Peer())

    def remove_peer(self, peer: str) -> None:
        self._peers.pop(peer, None)
        self._trim()

    @property
    def peers(self) -> list[str]:
        return sorted(self._peers)

    def buffered(self, peer: str) -> int:
        """Log entries kept for the peer: those it has not acknowledged, while it is on
        deltas; 0 while it is due (or awaiting) a full state."""
        need = self._needs(self._peers[peer])
        return 0 if need is None else self._end - need

    def needs_full(self, peer: str) -> bool:
        """Whether the peer's next catch-up is a full state (it fell behind the log)."""
        return self._peers[peer].acked < self._log_start

    @property
    def log_size(self) -> int:
        return len(self._log)

    # Objects.

    def apply(self, name: str, op: Callable[[C], C], new: Callable[[], C] | None = None) -> C:
        """Run a local operation on the object `name`: `op` gets the object, runs one of its
        operations and returns the delta, e.g. `r.apply("s", lambda s: s.add("a", 1), ORSet)`.
        `new` makes the object if this replica has none by that name yet."""
        obj = self._objects.get(name)
        if obj is None:
            if new is None:
                raise KeyError(f"no object {name!r} here; pass new= to create it")
            wire.text(name, "name")
            if len(self._objects) >= self.max_objects:
                raise CRDTError(f"this replica already holds {self.max_objects} objects")
            obj = new()
            self._objects[name] = obj
        delta = op(obj)  # type: ignore[arg-type]
        obj.check_mergeable(delta)
        self._digests.pop(name, None)
        self._append(name, delta.copy(), None)  # the caller keeps `delta`, and may change it
        return delta

    def get(self, name: str) -> CRDT | None:
        """The object `name`, to read. Change it only through `apply`, or peers never hear."""
        return self._objects.get(name)

    def value(self, name: str) -> Any:
        return self._objects[name].value()

    @property
    def names(self) -> list[str]:
        return sorted(self._objects)

    # The protocol.

    def tick(self) -> list[Send]:
        """Periodic work: delta intervals (or full states) to peers behind, and every
        digest_every ticks a digest to every peer."""
        self._ticks += 1
        out: list[Send] = []
        for peer in sorted(self._peers):
            msg = self._catch_up(peer)
            if msg is not None:
                out.append((peer, msg))
        if self.digest_every is not None and self._ticks % self.digest_every == 0:
            digest = {n: self._digest(n) for n in sorted(self._objects)}
            out.extend((peer, self._msg("digest", objects=digest)) for peer in sorted(self._peers))
        return out

    def on_message(self, peer: str, msg: Any) -> list[Send]:
        """Take a message from `peer`; return the messages to send in answer."""
        state = self._peers.get(peer)
        if state is None:
            raise CRDTError(f"message from {peer!r}, which is not a peer of {self.id!r}")
        if not isinstance(msg, dict):
            wire.fail("message", f"expected a map, got {wire.kind(msg)}")
        kind = msg.get("t")
        if not isinstance(kind, str) or kind not in _FIELDS:
            wire.fail("message.t", f"unknown message type {kind!r:.40}")
        f = wire.fields(msg, "message", _FIELDS[kind])
        inc = wire.integer(f["inc"], "message.inc", 0)
        # Read and check all of it first: a bad message must change nothing.
        seq = to = 0
        objects: dict[str, CRDT] = {}
        digests: dict[str, bytes] = {}
        names: list[str] = []
        if kind == "ack":
            to = wire.integer(f["to"], "message.to", 0)
            seq = wire.integer(f["seq"], "message.seq", 0,
                               self._end if to == self.incarnation else wire.MAX_INT)
        elif kind == "digest":
            digests = self._read_digests(f["objects"])
        else:
            objects = self._read_objects(f["objects"])
        if kind == "delta":
            seq = wire.integer(f["seq"], "message.seq", 0)
            if type(f["full"]) is not bool:
                wire.fail("message.full", f"expected a bool, got {wire.kind(f['full'])}")
        if kind == "state":
            names = wire.entries(f["want"], "message.want", wire.text)
            if len(names) > self.max_objects:
                wire.fail("message.want", f"more than {self.max_objects} names")
        # From here on the message takes effect.
        if state.incarnation is not None and inc < state.incarnation:
            return []  # from the peer's past life
        if state.incarnation is not None and inc > state.incarnation:
            self._peers[peer] = state = _Peer()  # restarted: it may hold nothing we sent
        state.incarnation = inc
        if kind == "ack":
            if to == self.incarnation:  # else it acknowledges what our past life sent
                self._on_ack(state, seq)
            return []
        if kind == "digest":
            return self._on_digest(peer, digests)
        changed = self._merge(objects)
        if kind == "delta":
            for name in objects:
                if changed[name] and not f["full"]:
                    self._append(name, objects[name], peer)
            return [(peer, self._msg("ack", seq=seq, to=inc))]
        # A "state" message: a peer's versions of the objects it found differing, and the
        # names of those it wants ours of.
        mine = {n: self._objects[n].to_wire() for n in sorted(set(names)) if n in self._objects}
        return [(peer, self._msg("state", objects=mine, want=[]))] if mine else []

    # Inside.

    def _msg(self, kind: str, **body: Any) -> Message:
        return {"t": kind, "inc": self.incarnation, **body}

    def _append(self, name: str, delta: CRDT, origin: str | None) -> None:
        self._log.append(_Entry(self._end, name, delta, origin))
        self._end += 1
        self._trim()

    def _needs(self, p: _Peer) -> int | None:
        """The lowest seq this peer may still need from the log, if it can be served from it."""
        if p.acked >= self._log_start:
            return p.acked
        if p.full_at is not None and p.full_at >= self._log_start:
            return p.full_at  # its full state is on the way: keep what follows it
        return None

    def _trim(self) -> None:
        needs = [n for n in map(self._needs, self._peers.values()) if n is not None]
        start = max(min(needs, default=self._end), self._end - self.max_buffered)
        while self._log and self._log[0].seq < start:
            self._log.popleft()
        self._log_start = max(self._log_start, start)
        assert len(self._log) <= self.max_buffered and self._log_start <= self._end
        assert not self._log or self._log[0].seq >= self._log_start

    def _catch_up(self, peer: str) -> Message | None:
        p = self._peers[peer]
        if p.acked >= self._end:
            return None
        if p.acked < self._log_start:
            p.full_at = self._end
            objects = {n: o.to_wire() for n, o in sorted(self._objects.items())}
            return self._msg("delta", seq=self._end, full=True, objects=objects)
        joined: dict[str, CRDT] = {}
        for e in self._log:
            if e.seq < p.acked or e.origin == peer:
                continue
            have = joined.get(e.name)
            if have is None:
                joined[e.name] = e.delta.copy()
            else:
                have.merge(e.delta)
        if not joined:
            p.acked = self._end  # all it lacks came from it
            self._trim()
            return None
        objects = {n: d.to_wire() for n, d in sorted(joined.items())}
        return self._msg("delta", seq=self._end, full=False, objects=objects)

    def _on_ack(self, p: _Peer, seq: int) -> None:
        assert 0 <= seq <= self._end
        p.acked = max(p.acked, seq)
        if p.full_at is not None and seq >= p.full_at:
            p.full_at = None
        self._trim()

    def _on_digest(self, peer: str, theirs: dict[str, bytes]) -> list[Send]:
        names = set(theirs) | set(self._objects)
        differ = sorted(n for n in names if theirs.get(n) != (
            self._digest(n) if n in self._objects else None))
        if not differ:
            return []
        mine = {n: self._objects[n].to_wire() for n in differ if n in self._objects}
        return [(peer, self._msg("state", objects=mine, want=differ))]

    def _read_digests(self, raw: Any) -> dict[str, bytes]:
        if not isinstance(raw, dict) or len(raw) > self.max_objects:
            wire.fail("message.objects", f"expected a map of at most {self.max_objects} digests")
        for n, h in raw.items():
            wire.text(n, "message.objects")
            if not isinstance(h, bytes):
                wire.fail(f"message.objects[{n!r}]", f"expected bytes, got {wire.kind(h)}")
        return raw

    def _read_objects(self, raw: Any) -> dict[str, CRDT]:
        """The objects of a message, all read and checked against ours before any is merged,
        so a bad message changes nothing."""
        if not isinstance(raw, dict):
            wire.fail("message.objects", f"expected a map, got {wire.kind(raw)}")
        if len(raw) > self.max_objects:
            wire.fail("message.objects", f"more than {self.max_objects} objects")
        out: dict[str, CRDT] = {}
        for name, data in raw.items():
            wire.text(name, "message.objects")
            obj = from_wire(data)
            mine = self._objects.get(name)
            if mine is not None:
                mine.check_mergeable(obj)
            out[name] = obj
        fresh = sum(1 for n in out if n not in self._objects)
        if len(self._objects) + fresh > self.max_objects:
            raise CRDTError(f"message would take {self.id!r} past {self.max_objects} objects")
        return out

    def _merge(self, objects: dict[str, CRDT]) -> dict[str, bool]:
        changed: dict[str, bool] = {}
        for name, obj in objects.items():
            mine = self._objects.get(name)
            if mine is None:
                self._objects[name] = obj.copy()  # the copy: `obj` may be logged as a delta
                changed[name] = True
            else:
                changed[name] = mine.merge(obj)
            if changed[name]:
                self._digests.pop(name, None)
        return changed

    def _digest(self, name: str) -> bytes:
        h = self._digests.get(name)
        if h is None:
            data = msgpack.packb(self._objects[name].to_wire())
            h = self._digests[name] = hashlib.blake2b(data, digest_size=16).digest()
        return h


_FIELDS: dict[str, tuple[str, ...]] = {
    "delta": ("t", "inc", "seq", "full", "objects"),
    "ack": ("t", "inc", "seq", "to"),
    "digest": ("t", "inc", "objects"),
    "state": ("t", "inc", "objects", "want"),
}

