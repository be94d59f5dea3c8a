"""shoal.net without sockets: the Raft codec, framing, the group envelope, the handshake, the
codec registry and the fault plan's decisions."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from shoal.consensus.paxos import Accept, Accepted, Prepare
from shoal.net import (
    MAGIC,
    MAX_GROUP,
    PROTOCOL_VERSION,
    RAFT,
    Codec,
    FaultPlan,
    FrameDecoder,
    Handshake,
    decode_message,
    encode_message,
    frame,
    get_codec,
    message_frame,
    register_codec,
    split_group,
)
from shoal.net.codec import MAX_CONTEXT, MAX_ENTRIES, MAX_MEMBERS, MAX_UINT
from shoal.net.paxos_codec import PAXOS

FULL = dict(
    term=7, log_term=6, index=41, commit=40, reject=True, reject_hint=39, context=b"ctx",
    read_round=3, offset=1024, chunk=b"\x00\xff" * 8, done=True,
    entries=(Entry(6, 42, EntryKind.NORMAL, b"set x 1"), Entry(7, 43, EntryKind.CONFIG, b"")),
    snapshot=SnapshotMeta(40, 6, ConfState(frozenset({1, 2}), frozenset({3}), frozenset({4}))),
)


@pytest.mark.parametrize("mtype", list(MsgType))
def test_every_message_type_round_trips(mtype: MsgType) -> None:
    for m in (Message(mtype, 1, 2), Message(mtype, 3, 1, **FULL)):
        assert decode_message(encode_message(m)) == m


uints = st.integers(0, MAX_UINT)
nodes = st.integers(1, MAX_UINT)
entries = st.builds(Entry, uints, uints, st.sampled_from(EntryKind), st.binary(max_size=64))
members = st.frozensets(nodes, max_size=5)
snapshots = st.none() | st.builds(
    SnapshotMeta, uints, uints, st.builds(ConfState, members, members, members)
)
messages = st.builds(
    Message, st.sampled_from(MsgType), nodes, nodes, uints, uints, uints,
    st.lists(entries, max_size=5).map(tuple), uints, st.booleans(), uints,
    st.binary(max_size=32), uints, snapshots, uints, st.binary(max_size=64), st.booleans(),
)


@settings(max_examples=300)
@given(messages)
def test_random_messages_round_trip(m: Message) -> None:
    assert decode_message(encode_message(m)) == m


def _wire(**changes: object) -> bytes:
    """A valid APP message's wire array with some positions replaced."""
    arr = msgpack.unpackb(encode_message(Message(MsgType.APP, 1, 2, **FULL)))
    fields = list(Message.__dataclass_fields__)
    for name, value in changes.items():
        if "." in name:  # e.g. "entries.0" or "snapshot.2"
            top, i = name.split(".")
            arr[fields.index(top)][int(i)] = value
        else:
            arr[fields.index(name)] = value
    return msgpack.packb(arr, use_bin_type=True)


MALFORMED = [
    (b"\xc1", "not valid msgpack"),
    (msgpack.packb({"type": 2}), "'message': expected an array"),
    (msgpack.packb([2, 1, 2]), "expected 16 elements"),
    (encode_message(Message(MsgType.APP, 1, 2)) + b"\x00", "not valid msgpack"),
    (_wire(type=99), "'type': unknown message type"),
    (_wire(type="APP"), "'type': unknown message type"),
    (_wire(src=0), "'src': node ids start at 1"),
    (_wire(dst=-2), "'dst': negative"),
    (_wire(term=-1), "'term': negative"),
    (_wire(term="7"), "'term': expected an integer"),
    (_wire(term=True), "'term': expected an integer"),
    (_wire(commit=1.5), "'commit': expected an integer"),
    (_wire(index=2**64 - 1), "'index': larger than"),
    (_wire(reject=1), "'reject': expected a boolean"),
    (_wire(context="ctx"), "'context': expected bytes"),
    (_wire(context=b"x" * (MAX_CONTEXT + 1)), "'context': 65537 bytes exceeds the limit"),
    (_wire(chunk=None), "'chunk': expected bytes"),
    (_wire(entries={}), "'entries': expected an array"),
    (_wire(entries=[[1, 2, 0, b""]] * (MAX_ENTRIES + 1)), "65537 exceeds max_array_len"),
    (_wire(**{"entries.1": [1, 2, 0]}), "'entries[1]': expected 4 elements"),
    (_wire(**{"entries.0": [1, 2, 9, b""]}), "'entries[0].kind': unknown entry kind"),
    (_wire(**{"entries.0": [1, 2, True, b""]}), "'entries[0].kind': unknown entry kind"),
    (_wire(**{"entries.0": [1, -2, 0, b""]}), "'entries[0].index': negative"),
    (_wire(**{"entries.0": [1, 2, 0, "data"]}), "'entries[0].data': expected bytes"),
    (_wire(snapshot=[1, 2, [], []]), "'snapshot': expected 5 elements"),
    (_wire(**{"snapshot.2": [1, 0]}), "'snapshot.conf.voters': node ids start at 1"),
    (_wire(**{"snapshot.4": list(range(1, MAX_MEMBERS + 2))}), "'snapshot.conf.learners'"),
    (_wire(snapshot=msgpack.ExtType(1, b"x")), "'snapshot': expected an array"),
]


@pytest.mark.parametrize("payload,why", MALFORMED, ids=[w for _, w in MALFORMED])
def test_malformed_input_names_what_is_wrong(payload: bytes, why: str) -> None:
    with pytest.raises(RemoteProtocolError, match=why.replace("[", r"\[").replace("]", r"\]")):
        decode_message(payload)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_remote_protocol_error(data: bytes) -> None:
    try:
        decode_message(data)
    except RemoteProtocolError:
        pass


wire_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=8)
    | st.text(max_size=4) | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=8,
)


@settings(max_examples=300)
@given(st.integers(0, 15), wire_values)
def test_any_field_replaced_decodes_or_raises(position: int, value: object) -> None:
    arr = msgpack.unpackb(encode_message(Message(MsgType.SNAP, 1, 2, **FULL)))
    arr[position] = value
    try:
        decode_message(msgpack.packb(arr, use_bin_type=True))
    except RemoteProtocolError:
        pass


def test_encoding_a_bad_message_is_our_own_error() -> None:
    with pytest.raises(LocalProtocolError, match="cannot encode"):
        encode_message(Message(MsgType.APP, 1, 2, term=2**70))


# ---- frames and handshake --------------------------------------------------------------------


@settings(max_examples=100)
@given(st.lists(st.binary(max_size=300), max_size=10), st.data())
def test_frames_survive_any_split(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    decoder, out, last = FrameDecoder(), [], 0
    for cut in [*cuts, len(stream)]:
        out += decoder.feed(stream[last:cut])
        last = cut
    assert out == payloads


def test_oversized_frames_are_refused_both_ways() -> None:
    with pytest.raises(LocalProtocolError, match="exceeds max_frame 16"):
        frame(b"x" * 17, max_frame=16)
    decoder = FrameDecoder(max_frame=16)
    assert decoder.feed(frame(b"x" * 16)) == [b"x" * 16]
    with pytest.raises(RemoteProtocolError, match="frame of 17 bytes exceeds max_frame 16"):
        decoder.feed((17).to_bytes(4, "big"))  # refused from the header alone


def test_handshake_round_trips_and_rejects_strangers() -> None:
    hello = Handshake("prod", 3, "raft")
    assert Handshake.decode(hello.encode()[4:]) == hello
    v = PROTOCOL_VERSION
    assert v == 2  # 2: the group envelope; a protocol 1 peer is refused at the handshake
    for payload, why in [
        (msgpack.packb([b"HELLO", v, "prod", 3, "raft"]), "bad magic"),
        (msgpack.packb([MAGIC, 1, "prod", 3, "raft"]), "protocol version 1, this node speaks 2"),
        (msgpack.packb([MAGIC, v, "", 3, "raft"]), "bad cluster id"),
        (msgpack.packb([MAGIC, v, "prod", 0, "raft"]), "bad node id"),
        (b"GET / HTTP/1.1", "not valid msgpack"),
    ]:
        with pytest.raises(RemoteProtocolError, match=why):
            Handshake.decode(payload)


# ---- the group envelope ----------------------------------------------------------------------


@settings(max_examples=300)
@given(st.integers(0, MAX_GROUP), st.binary(max_size=64))
def test_group_envelope_round_trips_in_msgpack_shortest_form(group: int, body: bytes) -> None:
    f = message_frame(group, body)
    assert int.from_bytes(f[:4], "big") == len(f) - 4
    assert f[4:] == msgpack.packb(group) + body  # one byte for a group below 128
    assert FrameDecoder().feed(f) == [f[4:]]
    assert split_group(f[4:]) == (group, body)


def test_groups_below_128_cost_one_byte() -> None:
    body = encode_message(Message(MsgType.APP, 1, 2))
    assert [len(message_frame(g, body)) - len(frame(body)) for g in (0, 127, 128, 256, 2**16)] \
        == [1, 1, 2, 3, 5]


@pytest.mark.parametrize("codec,m", [
    (RAFT, Message(MsgType.APP, 3, 1, **FULL)),
    (PAXOS, Accept(1, 2, 65537, FULL["entries"], 40, 3)),  # type: ignore[arg-type]
    (PAXOS, Accepted(2, 1, 65537, 5, 5, 5, 4, 3)),
    (PAXOS, Prepare(1, 3, 7, 0)),
])
def test_both_codecs_travel_in_the_envelope(codec: Codec, m: object) -> None:
    stream = message_frame(0, codec.encode(m)) + message_frame(MAX_GROUP, codec.encode(m))
    got = []
    for payload in FrameDecoder().feed(stream):
        group, body = split_group(payload)
        got.append((group, codec.decode(body)))
    assert got == [(0, m), (MAX_GROUP, m)]


BAD_GROUPS = [
    (b"", "'group': missing"),
    (b"\xff\x90", "'group': negative, got -1"),
    (b"\xd0\xfe\x90", "'group': negative, got -2"),
    (msgpack.packb(2**32) + b"\x90", "'group': larger than 4294967295, got 4294967296"),
    (msgpack.packb(2**64 - 1) + b"\x90", "'group': larger than 4294967295"),
    (b"\xcd\x01", "'group': truncated"),
    (b"\xce\x00\x00", "'group': truncated"),
    (msgpack.packb("1") + b"\x90", "'group': expected an integer, got '1'"),
    (msgpack.packb(True) + b"\x90", "'group': expected an integer, got True"),
    (msgpack.packb(None) + b"\x90", "'group': expected an integer, got None"),
    (msgpack.packb(1.0) + b"\x90", "'group': expected an integer, got 1.0"),
    (msgpack.packb([0]) + b"\x90", "'group': expected an integer, got \\[0\\]"),
    (encode_message(Message(MsgType.APP, 1, 2)), "'group': expected an integer"),  # protocol 1
    (b"\xc1", "'group': not valid msgpack"),
]


@pytest.mark.parametrize("payload,why", BAD_GROUPS, ids=[w for _, w in BAD_GROUPS])
def test_a_malformed_group_names_the_field(payload: bytes, why: str) -> None:
    with pytest.raises(RemoteProtocolError, match=why):
        split_group(payload)


def test_group_in_a_wider_encoding_is_judged_by_its_value() -> None:
    """Legal msgpack that our encoder would not write, from another implementation."""
    assert split_group(b"\xcf" + (7).to_bytes(8, "big") + b"\x90") == (7, b"\x90")
    assert split_group(b"\xd2" + (300).to_bytes(4, "big") + b"\x90") == (300, b"\x90")


@settings(max_examples=300)
@given(st.binary(max_size=40))
def test_arbitrary_payloads_split_or_raise_remote_protocol_error(data: bytes) -> None:
    try:
        group, body = split_group(data)
    except RemoteProtocolError:
        return
    assert 0 <= group <= MAX_GROUP and data.endswith(body)


def test_a_bad_group_or_oversized_message_is_our_own_error() -> None:
    for group in (-1, MAX_GROUP + 1, True, 1.0, None):
        with pytest.raises(LocalProtocolError, match="group id must be an integer"):
            message_frame(group, b"\x90")  # type: ignore[arg-type]
    assert len(message_frame(0, b"x" * 15, max_frame=16)) == 20
    with pytest.raises(LocalProtocolError, match="frame of 17 bytes exceeds max_frame 16"):
        message_frame(0, b"x" * 16, max_frame=16)
    with pytest.raises(LocalProtocolError, match="frame of 21 bytes exceeds max_frame 20"):
        message_frame(2**20, b"x" * 16, max_frame=20)


def test_codec_registry() -> None:
    assert get_codec("raft") is RAFT
    register_codec(RAFT)  # idempotent
    with pytest.raises(LocalProtocolError, match="already registered"):
        register_codec(Codec("raft", repr, bytes))
    with pytest.raises(LocalProtocolError, match="no codec registered as 'zab'"):
        get_codec("zab")


# ---- fault plan ------------------------------------------------------------------------------


def test_fault_plan_is_seeded_and_validated() -> None:
    a, b = FaultPlan(drop=0.5, jitter=0.01, seed=9), FaultPlan(drop=0.5, jitter=0.01, seed=9)
    decisions = [a.outgoing(2) for _ in range(200)]
    assert decisions == [b.outgoing(2) for _ in range(200)]
    assert 50 < decisions.count(None) < 150
    plan = FaultPlan()
    plan.partition([2, 3])
    assert plan.outgoing(2) is None and not plan.incoming(3) and plan.outgoing(4) == 0.0
    plan.heal()
    assert plan.incoming(3) and plan.as_dict()["block_to"] == []
    for bad in ({"drop": 1.5}, {"delay": -1}, {"block_to": [0]}, {"loss": 0.1}):
        with pytest.raises(ValueError):
            plan.update(**bad)
    plan.update(delay=0.1, jitter=0.0)
    assert plan.outgoing(2) == 0.1
