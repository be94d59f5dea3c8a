"""The Multi-Paxos wire format: each message is `[kind, src, dst, ballot, ...fields]` in
dataclass field order, entries and snapshots encoded as the Raft codec encodes them, and every
field checked on the way in (RemoteProtocolError names the field)."""

from __future__ import annotations

from typing import Any

import msgpack

from ..consensus.messages import LocalProtocolError, Snapshot
from ..consensus.paxos import (
    Accept,
    Accepted,
    InstallSnapshot,
    Nack,
    PaxosMessage,
    Prepare,
    Promise,
    TimeoutNow,
)
from .codec import (
    MAX_ENTRIES,
    Codec,
    _array,
    _bytes,
    _dec_entry,
    _dec_snapshot,
    _enc_entry,
    _enc_snapshot,
    _fail,
    _node,
    _uint,
    register_codec,
    unpack,
)

_KINDS: dict[type, int] = {Prepare: 0, Promise: 1, Nack: 2, Accept: 3, Accepted: 4,
                           InstallSnapshot: 5, TimeoutNow: 6}
_CLASSES = {v: k for k, v in _KINDS.items()}


def _enc_snap(s: Snapshot | None) -> list[Any] | None:
    return None if s is None else [_enc_snapshot(s.meta), s.data]


def encode(m: PaxosMessage) -> bytes:
    try:
        head = [_KINDS[type(m)], m.src, m.dst, m.ballot]
        match m:
            case Prepare():
                body: list[Any] = [m.start]
            case Promise():
                body = [m.commit, [_enc_entry(e) for e in m.entries], _enc_snap(m.snapshot)]
            case Nack():
                body = [m.promised]
            case Accept():
                body = [[_enc_entry(e) for e in m.entries], m.commit, m.read_round]
            case Accepted():
                body = [m.lo, m.hi, m.run_end, m.commit, m.read_round]
            case InstallSnapshot():
                body = [_enc_snap(m.snapshot)]
            case TimeoutNow():
                body = []
        return msgpack.packb(head + body, use_bin_type=True)
    except (KeyError, AttributeError, TypeError, ValueError, OverflowError) as e:
        raise LocalProtocolError(f"cannot encode {m!r:.80}: {e}") from None


def _entries(v: Any) -> tuple[Any, ...]:
    return tuple(_dec_entry(e, i) for i, e in enumerate(_array(v, "entries", limit=MAX_ENTRIES)))


def _snap(v: Any) -> Snapshot | None:
    if v is None:
        return None
    meta, data = _array(v, "snapshot", length=2)
    decoded = _dec_snapshot(meta)
    assert decoded is not None
    return Snapshot(decoded, _bytes(data, "snapshot.data"))


def decode(payload: bytes) -> PaxosMessage:
    raw = _array(unpack(payload, "paxos message"), "message", limit=9)
    if len(raw) < 4 or type(raw[0]) is not int or raw[0] not in _CLASSES:
        raise _fail("kind", "unknown paxos message kind", raw[:1])
    cls = _CLASSES[raw[0]]
    src, dst, ballot = _node(raw[1], "src"), _node(raw[2], "dst"), _uint(raw[3], "ballot")
    body = raw[4:]
    want = {Prepare: 1, Promise: 3, Nack: 1, Accept: 3, Accepted: 5, InstallSnapshot: 1,
            TimeoutNow: 0}[cls]
    if len(body) != want:
        raise _fail("message", f"{cls.__name__} has {want} fields after the ballot", len(body))
    if cls is Prepare:
        return Prepare(src, dst, ballot, _uint(body[0], "start"))
    if cls is Promise:
        return Promise(src, dst, ballot, _uint(body[0], "commit"), _entries(body[1]), _snap(body[2]))
    if cls is Nack:
        return Nack(src, dst, ballot, _uint(body[0], "promised"))
    if cls is Accept:
        return Accept(src, dst, ballot, _entries(body[0]), _uint(body[1], "commit"),
                      _uint(body[2], "read_round"))
    if cls is Accepted:
        names = ("lo", "hi", "run_end", "commit", "read_round")
        lo, hi, run_end, commit, read_round = (_uint(v, n) for v, n in zip(body, names, strict=True))
        return Accepted(src, dst, ballot, lo, hi, run_end, commit, read_round)
    if cls is InstallSnapshot:
        snap = _snap(body[0])
        if snap is None:
            raise _fail("snapshot", "InstallSnapshot without a snapshot", None)
        return InstallSnapshot(src, dst, ballot, snap)
    return TimeoutNow(src, dst, ballot)


PAXOS = Codec("paxos", encode, decode)
register_codec(PAXOS)
