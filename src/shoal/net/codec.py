"""Message codecs: engine messages <-> msgpack payloads, with strict validation.

A codec turns one engine's message values into bytes and back. Decoding trusts nothing: every
field is checked for type, sign and size, and anything a correct peer would never send raises
`RemoteProtocolError` naming the field. Encoding trusts the local core, so it checks only what
msgpack itself refuses.

Messages travel as positional msgpack arrays, not maps: no field names on the wire, and
decoding is indexing instead of hashing. The field order is the wire format; changing it
means a new protocol version (`frames.PROTOCOL_VERSION`).

Codecs are registered by engine name, so a second engine (Multi-Paxos) brings its own.
Whatever a codec decodes must carry `src` and `dst` node ids: the transport routes by `dst`
and checks both against the handshake.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from shoal.consensus.messages import (
    ConfState,
    Entry,
    EntryKind,
    LocalProtocolError,
    Message,
    MsgType,
    RemoteProtocolError,
    SnapshotMeta,
)
from shoal.wire import bounded
from shoal.wire.bounded import TooComplex

MAX_UINT = 2**63 - 1  # indexes, terms and ids stay within a signed 64-bit integer
MAX_ENTRIES = 65_536  # per message; a decoded entry costs ~100 bytes beyond its data
MAX_MEMBERS = 1_024  # per set in a ConfState
MAX_CONTEXT = 64 * 1024  # a ReadIndex context or the leadership-transfer marker
# What a legal message of either codec holds: the message, its entries (4 fields each), a
# snapshot's meta and member sets. Decoding stops past these (wire/bounded.py), so a frame
# of 8 Mi empty arrays costs what a full append does, not 9 s and 570 MB.
MAX_CONTAINERS = MAX_ENTRIES + 8
MAX_VALUES = 6 * MAX_ENTRIES + 3 * MAX_MEMBERS + 64

_UNPACK_ERRORS = (ValueError, TypeError, msgpack.UnpackException)
_TYPES = {int(t): t for t in MsgType}
_KINDS = {int(k): k for k in EntryKind}
_INT = {int}


@dataclass(frozen=True, slots=True)
class Codec:
    """One engine's wire format. `decode` raises RemoteProtocolError on anything malformed."""

    name: str
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]


_registry: dict[str, Codec] = {}


def register_codec(codec: Codec) -> None:
    """Make `codec` available by name. Re-registering the same object is harmless."""
    known = _registry.get(codec.name)
    if known is not None and known is not codec:
        raise LocalProtocolError(f"a different codec is already registered as {codec.name!r}")
    _registry[codec.name] = codec


def get_codec(name: str) -> Codec:
    try:
        return _registry[name]
    except KeyError:
        raise LocalProtocolError(
            f"no codec registered as {name!r}; known: {sorted(_registry)}"
        ) from None


def unpack(payload: bytes, what: str) -> Any:
    """msgpack-decode one payload, turning every decoding failure (and a payload holding more
    than a legal message can) into RemoteProtocolError."""
    try:
        return bounded.unpackb(payload, MAX_VALUES, MAX_CONTAINERS, max_len=MAX_ENTRIES,
                               use_list=True, raw=False)
    except TooComplex as e:
        raise RemoteProtocolError(f"{what}: more than a legal message holds ({e})") from None
    except _UNPACK_ERRORS as e:
        raise RemoteProtocolError(f"{what}: not valid msgpack ({e})") from None


# ---- field checks: each names the field it rejects -------------------------------------------


def _fail(field: str, why: str, value: Any) -> RemoteProtocolError:
    shown = reprlib.repr(value)  # bounded: a value may be huge or nested 1000 deep
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return RemoteProtocolError(f"raft message field {field!r}: {why}, got {shown}")


def _uint(v: Any, field: str) -> int:
    if type(v) is not int:  # `type is`, so a bool is not taken for an int
        raise _fail(field, "expected an integer", v)
    if v < 0:
        raise _fail(field, "negative", v)
    if v > MAX_UINT:
        raise _fail(field, f"larger than {MAX_UINT}", v)
    return v


def _node(v: Any, field: str) -> int:
    if _uint(v, field) == 0:
        raise _fail(field, "node ids start at 1", v)
    return v


def _bool(v: Any, field: str) -> bool:
    if type(v) is not bool:
        raise _fail(field, "expected a boolean", v)
    return v


def _bytes(v: Any, field: str, limit: int | None = None) -> bytes:
    if type(v) is not bytes:
        raise _fail(field, "expected bytes", v)
    if limit is not None and len(v) > limit:
        raise _fail(field, f"{len(v)} bytes exceeds the limit of {limit}", v)
    return v


def _array(v: Any, field: str, length: int | None = None, limit: int | None = None) -> list[Any]:
    if type(v) is not list:
        raise _fail(field, "expected an array", v)
    if length is not None and len(v) != length:
        raise _fail(field, f"expected {length} elements, got {len(v)} in", v)
    if limit is not None and len(v) > limit:
        raise _fail(field, f"{len(v)} elements exceeds the limit of {limit}", v)
    return v


# ---- the Raft codec --------------------------------------------------------------------------


def _enc_entry(e: Entry) -> list[Any]:
    return [e.term, e.index, int(e.kind), e.data]


def _enc_snapshot(s: SnapshotMeta | None) -> list[Any] | None:
    if s is None:
        return None
    c = s.conf
    return [s.index, s.term, sorted(c.voters), sorted(c.outgoing), sorted(c.learners)]


def encode_message(m: Message) -> bytes:
    """A Raft Message as a msgpack array in dataclass field order: 16 elements, or 18 when
    it carries a repaired log's epoch or recovery state (so other messages stay as before)."""
    try:
        fields = [
            int(m.type), m.src, m.dst, m.term, m.log_term, m.index,
            [_enc_entry(e) for e in m.entries], m.commit, m.reject, m.reject_hint,
            m.context, m.read_round, _enc_snapshot(m.snapshot), m.offset, m.chunk, m.done,
        ]
        if m.epoch or m.recovering:
            fields += [m.epoch, m.recovering]
        return msgpack.packb(fields, use_bin_type=True)
    except (AttributeError, TypeError, ValueError, OverflowError) as e:
        raise LocalProtocolError(f"cannot encode {m!r:.80}: {e}") from None


def _dec_entry(v: Any, i: int) -> Entry:
    # Fast path: one combined test for a well-formed entry; the slow path names the field.
    if type(v) is list and len(v) == 4:
        term, index, kind, data = v
        if (
            type(term) is int and type(index) is int and type(kind) is int
            and type(data) is bytes and kind in _KINDS
            and 0 <= term <= MAX_UINT and 0 <= index <= MAX_UINT
        ):
            return Entry(term, index, _KINDS[kind], data)
    f = f"entries[{i}]"
    term, index, kind, data = _array(v, f, length=4)
    if type(kind) is not int or kind not in _KINDS:
        raise _fail(f + ".kind", "unknown entry kind", kind)
    return Entry(_uint(term, f + ".term"), _uint(index, f + ".index"), _KINDS[kind],
                 _bytes(data, f + ".data"))


def _dec_members(v: Any, field: str) -> frozenset[int]:
    return frozenset(_node(n, field) for n in _array(v, field, limit=MAX_MEMBERS))


def _dec_snapshot(v: Any) -> SnapshotMeta | None:
    if v is None:
        return None
    index, term, voters, outgoing, learners = _array(v, "snapshot", length=5)
    conf = ConfState(
        _dec_members(voters, "snapshot.conf.voters"),
        _dec_members(outgoing, "snapshot.conf.outgoing"),
        _dec_members(learners, "snapshot.conf.learners"),
    )
    return SnapshotMeta(_uint(index, "snapshot.index"), _uint(term, "snapshot.term"), conf)


_UINT_FIELDS = ("term", "log_term", "index", "commit", "reject_hint", "read_round", "offset")


def decode_message(payload: bytes) -> Message:
    v = unpack(payload, "raft message")
    (
        typ, src, dst, term, log_term, index, entries, commit, reject, reject_hint,
        context, read_round, snapshot, offset, chunk, done, *recovery,
    ) = _array(v, "message", length=18 if type(v) is list and len(v) == 18 else 16)
    if type(typ) is not int or typ not in _TYPES:
        raise _fail("type", "unknown message type", typ)
    uints = (term, log_term, index, commit, reject_hint, read_round, offset)
    # Fast path: the seven counters checked in C in one go; on failure, find the culprit.
    if not (set(map(type, uints)) == _INT and min(uints) >= 0 and max(uints) <= MAX_UINT):
        for name, v in zip(_UINT_FIELDS, uints, strict=True):
            _uint(v, name)
    return Message(
        _TYPES[typ], _node(src, "src"), _node(dst, "dst"), term, log_term, index,
        tuple(
            _dec_entry(e, i) for i, e in enumerate(_array(entries, "entries", limit=MAX_ENTRIES))
        ),
        commit, _bool(reject, "reject"), reject_hint, _bytes(context, "context", MAX_CONTEXT),
        read_round, _dec_snapshot(snapshot), offset,
        _bytes(chunk, "chunk"),  # bounded by the frame size
        _bool(done, "done"),
        *((_uint(recovery[0], "epoch"), _bool(recovery[1], "recovering")) if recovery else ()),
    )


RAFT = Codec("raft", encode_message, decode_message)
register_codec(RAFT)
