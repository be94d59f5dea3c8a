"""shoal.kv requests: strict decoding of log entries, and exactly-once client sessions."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.kv import (
    CloseSessionRequest,
    Compare,
    CompareResult,
    CompareTarget,
    ErrRequestTooLarge,
    ErrSessionExpired,
    ErrStaleSequence,
    ErrTooManyOps,
    KVError,
    KVLimits,
    KVStore,
    LeaseGrantRequest,
    MalformedRequest,
    OpenSessionRequest,
    PutRequest,
    RangeRequest,
    Session,
    TxnRequest,
    UnknownRequest,
    decode_command,
    encode_command,
)

LIMITS = KVLimits()


def raw(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def test_round_trip_of_a_nested_txn():
    txn = TxnRequest(
        compare=(Compare(b"k", CompareTarget.VALUE, CompareResult.EQUAL, b"v"),),
        success=(PutRequest(b"k", b"w", prev_kv=True), TxnRequest(success=(RangeRequest(b"k"),))),
    )
    command = decode_command(encode_command(txn, Session(7, 1)), LIMITS)
    assert command.request == txn and command.session == Session(7, 1)


@pytest.mark.parametrize(
    ("data", "error", "words"),
    [
        (b"\xc1", MalformedRequest, "not valid msgpack"),
        (raw([["PutRequest", b"k", b"v", 0, False, False, False], None]) + b"x", MalformedRequest,
         "not valid msgpack"),
        (raw([["Nope"], None]), UnknownRequest, "unknown type 'Nope'"),
        (raw([["PutRequest", "k", b"v", 0, False, False, False], None]), MalformedRequest,
         "Command.request<PutRequest>.key: expected bytes, got str"),
        (raw([["PutRequest", b"k", b"v", 0], None]), MalformedRequest, "PutRequest has 6 fields, got 3"),
        (raw([["PutRequest", b"k", b"v", -1, False, False, False], None]), MalformedRequest,
         "PutRequest.lease: -1 is negative"),
        (raw([["PutRequest", b"", b"v", 0, False, False, False], None]), MalformedRequest,
         "key is not provided"),
        (raw([["RangeRequest", b"k", b"", 0, 0, 9, 0, False, False, 0, 0, 0, 0], None]),
         MalformedRequest, "9 is not a SortOrder"),
        (raw([["PutRequest", b"k", b"v", (1 << 64) - 1, False, False, False], None]),
         MalformedRequest, "lease: expected int"),
        (raw([["LeaseGrantRequest", 0, 0, 0], None]), MalformedRequest, "ttl: 0 not in"),
        (raw([["PutRequest", b"k", b"v", 0, False, False, False], [0, 1]]), MalformedRequest,
         "Session.client_id"),
        (raw({"type": "put"}), MalformedRequest, "expected an array"),
    ],
)  # fmt: skip
def test_malformed_entries_name_what_is_wrong(data, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace("[", r"\[")):
        decode_command(data, LIMITS)


def test_bounds():
    with pytest.raises(ErrRequestTooLarge):
        decode_command(encode_command(PutRequest(b"k" * 9000)), LIMITS)
    too_many = TxnRequest(success=tuple(RangeRequest(b"k") for _ in range(129)))
    with pytest.raises(ErrTooManyOps):
        decode_command(encode_command(too_many), LIMITS)
    deep: TxnRequest = TxnRequest()
    for _ in range(100):
        deep = TxnRequest(success=(deep,))
    with pytest.raises(MalformedRequest, match="nested deeper"):
        decode_command(encode_command(deep), LIMITS)
    with pytest.raises(MalformedRequest, match="operand"):
        decode_command(
            encode_command(TxnRequest(compare=(Compare(b"k", CompareTarget.VERSION,
                                                       CompareResult.EQUAL, b"1"),))),
            LIMITS,
        )  # fmt: skip


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=4)
    | st.text(max_size=12) | st.sampled_from(["PutRequest", "TxnRequest", "RangeRequest"]),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=30,
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.binary(max_size=64), msgpack_values.map(raw)))
def test_any_bytes_give_a_kv_error_or_a_valid_command_never_a_crash(data):
    store = KVStore()
    try:
        store.apply_entry(data, 1)
    except KVError:
        pass
    assert store.applied_index == 1  # a malformed entry still counts as applied


# --- sessions -----------------------------------------------------------------------------


def test_a_retried_request_returns_the_cached_response_and_applies_once():
    store = KVStore()
    client = store.apply(OpenSessionRequest(), 1).client_id
    assert client == 1  # the index of the open: every replica agrees on it
    first = store.apply(PutRequest(b"k", b"v"), 2, Session(client, 1))
    again = store.apply(PutRequest(b"k", b"v"), 3, Session(client, 1))
    assert again == first and store.revision == 2
    assert store.apply(PutRequest(b"k", b"w"), 4, Session(client, 2)).header.revision == 3
    with pytest.raises(ErrStaleSequence):
        store.apply(PutRequest(b"k", b"v"), 5, Session(client, 1))
    # the table is in the snapshot: a restored replica answers the retry the same way
    copy = KVStore.restore(store.snapshot())
    assert copy.apply(PutRequest(b"k", b"w"), 6, Session(client, 2)).header.revision == 3
    store.apply(CloseSessionRequest(client), 6)
    with pytest.raises(ErrSessionExpired):
        store.apply(PutRequest(b"k", b"x"), 7, Session(client, 3))


def test_errors_are_not_cached():
    store = KVStore()
    client = store.apply(OpenSessionRequest(), 1).client_id
    with pytest.raises(KVError):
        store.apply(PutRequest(b"k", lease=5), 2, Session(client, 1))
    store.apply(LeaseGrantRequest(60, id=5), 3)
    assert store.apply(PutRequest(b"k", lease=5), 4, Session(client, 1)).header.revision == 2


def test_the_least_recently_used_session_is_evicted_at_the_bound():
    store = KVStore(KVLimits(max_sessions=2))
    a = store.apply(OpenSessionRequest(), 1).client_id
    b = store.apply(OpenSessionRequest(), 2).client_id
    store.apply(PutRequest(b"k"), 3, Session(a, 1))  # a is now more recent than b
    c = store.apply(OpenSessionRequest(), 4).client_id
    assert a in store.sessions and c in store.sessions and b not in store.sessions
    with pytest.raises(ErrSessionExpired):
        store.apply(PutRequest(b"k"), 5, Session(b, 1))
    assert KVStore.restore(store.snapshot(), KVLimits(max_sessions=2)).snapshot() == (
        store.snapshot()
    )
