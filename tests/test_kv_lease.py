"""shoal.kv leases: grant, attach, keep-alive, expiry decided by the leader and replicated
through the log, promotion on a new leader, revoke at one revision."""

from __future__ import annotations

import pytest

from shoal.kv import (
    ALL_KEYS,
    DeleteRangeRequest,
    ErrLeaseExists,
    ErrLeaseNotFound,
    ErrTooManyLeases,
    KVLimits,
    KVStore,
    LeaseExpireRequest,
    LeaseGrantRequest,
    LeaseKeepAliveRequest,
    LeaseLeasesRequest,
    LeasePromoteRequest,
    LeaseRevokeRequest,
    LeaseTimeToLiveRequest,
    PutRequest,
    RangeRequest,
    encode_command,
)


class Node:
    def __init__(self, limits: KVLimits | None = None) -> None:
        self.store = KVStore(limits)
        self.index = 0

    def __call__(self, request):
        self.index += 1
        return self.store.apply_entry(encode_command(request), self.index)

    def keys(self) -> list[bytes]:
        return [kv.key for kv in self(RangeRequest(b"\0", ALL_KEYS)).kvs]


def test_grant_picks_ids_deterministically_and_refuses_duplicates():
    n = Node(KVLimits(max_leases=3))
    assert n(LeaseGrantRequest(10)).id == 1
    assert n(LeaseGrantRequest(10, id=2)).id == 2
    assert n(LeaseGrantRequest(10)).id == 3  # skips the id taken explicitly
    with pytest.raises(ErrTooManyLeases):
        n(LeaseGrantRequest(10))
    n(LeaseRevokeRequest(3))
    with pytest.raises(ErrLeaseExists):
        n(LeaseGrantRequest(10, id=2))
    assert n(LeaseLeasesRequest()).leases == (1, 2)
    assert n.store.revision == 1  # leases alone write no keys


def test_lease_ids_are_never_reused():
    n = Node()
    first = n(LeaseGrantRequest(10)).id
    n(LeaseRevokeRequest(first))
    n(LeaseGrantRequest(10, id=7))
    n(LeaseExpireRequest(7, now_ms=10**9))
    again = [n(LeaseGrantRequest(10)).id for _ in range(3)]
    assert again == [8, 9, 10]  # neither the revoked 1 nor the expired 7, nor any below
    restored = Node()
    restored.store, restored.index = KVStore.restore(n.store.snapshot()), n.index
    assert restored(LeaseGrantRequest(10)).id == 11  # the counter survives a snapshot


def test_attaching_to_an_unknown_lease_fails():
    n = Node()
    with pytest.raises(ErrLeaseNotFound):
        n(PutRequest(b"k", b"v", lease=42))
    with pytest.raises(ErrLeaseNotFound):
        n(LeaseKeepAliveRequest(42, now_ms=0))
    with pytest.raises(ErrLeaseNotFound):
        n(LeaseRevokeRequest(42))


def test_revoke_deletes_every_attached_key_at_one_revision():
    n = Node()
    lease = n(LeaseGrantRequest(10, now_ms=0)).id
    for key in (b"b", b"a", b"c"):
        n(PutRequest(key, b"v", lease=lease))
    n(PutRequest(b"keep", b"v"))
    n(PutRequest(b"c", b"v"))  # re-put without the lease: detached
    ttl = n(LeaseTimeToLiveRequest(lease, now_ms=2500, keys=True))
    assert (ttl.ttl, ttl.granted_ttl, ttl.keys) == (7, 10, (b"a", b"b"))
    before = n.store.revision
    n(LeaseRevokeRequest(lease))
    assert n.store.revision == before + 1
    assert [e.kv.key for e in n.store.mvcc.events(before + 1)] == [b"a", b"b"]
    assert n.keys() == [b"c", b"keep"]
    assert n(LeaseTimeToLiveRequest(lease)).ttl == -1  # etcd's answer for a missing lease


def test_deleting_a_key_detaches_it():
    n = Node()
    lease = n(LeaseGrantRequest(10)).id
    n(PutRequest(b"k", lease=lease))
    n(DeleteRangeRequest(b"k"))
    assert n(LeaseTimeToLiveRequest(lease, keys=True)).keys == ()
    n(PutRequest(b"k", lease=lease))
    n(PutRequest(b"k", b"new value", ignore_lease=True))
    assert n(LeaseTimeToLiveRequest(lease, keys=True)).keys == (b"k",)


def test_expiry_is_decided_by_the_leader_and_applied_through_the_log():
    replicas = [Node(), Node()]

    def propose(request):
        return [r(request) for r in replicas]

    propose(LeaseGrantRequest(5, id=1, now_ms=1000))  # expires at 6000 in the leader's clock
    propose(LeaseGrantRequest(60, id=2, now_ms=1000))
    propose(PutRequest(b"a", lease=1))
    propose(PutRequest(b"b", lease=1))
    propose(PutRequest(b"c", lease=2))
    leader = replicas[0].store
    assert leader.lessor.expired(5999) == []
    assert leader.lessor.expired(6000) == [1]
    # a keep-alive commits between the leader's check and its expire proposal: it wins
    propose(LeaseKeepAliveRequest(1, now_ms=5500))
    assert not propose(LeaseExpireRequest(1, now_ms=6000))[0].revoked
    due = leader.lessor.expired(10_500)
    assert due == [1]
    revision = leader.revision
    assert all(r.revoked for r in propose(LeaseExpireRequest(1, now_ms=10_500)))
    for r in replicas:
        assert r.store.revision == revision + 1 and r.keys() == [b"c"]
    assert replicas[0].store.snapshot() == replicas[1].store.snapshot()


def test_a_new_leader_promotes_every_lease_to_a_full_ttl():
    n = Node()
    n(LeaseGrantRequest(5, id=1, now_ms=0))
    n(LeaseGrantRequest(30, id=2, now_ms=0))
    # the new leader's clock is unrelated to the old one's; without promotion lease 1 would
    # look long expired to it
    n(LeasePromoteRequest(now_ms=1_000_000))
    assert n.store.lessor.expired(1_004_999) == []
    assert n.store.lessor.expired(1_005_000) == [1]
    assert n.store.lessor.expired(1_030_000) == [1, 2]
    assert n.store.lessor.expired(1_030_000, limit=1) == [1]


def test_leases_survive_a_snapshot():
    n = Node()
    n(LeaseGrantRequest(5, id=9, now_ms=100))
    n(PutRequest(b"k", lease=9))
    copy = KVStore.restore(n.store.snapshot())
    assert copy.lessor.expired(5100) == [9]
    assert copy.lessor.get(9).keys == {b"k"}
    assert copy.snapshot() == n.store.snapshot()
