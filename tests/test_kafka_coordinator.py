"""shoal.events.coordinator: Kafka's classic group coordinator, driven with a fake clock.

Scenarios follow what a Kafka consumer does (join, MEMBER_ID_REQUIRED, rejoin, sync,
heartbeat, commit, leave) with the real message dataclasses, and every reply is encoded at its
version to prove it is a valid Kafka response. A hypothesis test drives random sequences of
requests and time and checks the invariants after every step, then that nothing stays parked.
"""

from __future__ import annotations

import random
import re
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from itertools import count

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.events.coordinator import (
    CoordinatorConfig,
    GroupCoordinator,
    GroupState,
    Output,
    Persist,
    Reply,
    error_reply,
)
from shoal.events.coordinator_store import (
    decode_group,
    decode_offset,
    group_key,
    offset_key,
    parse_key,
)
from shoal.events.protocol.error_codes import ErrorCode as E
from shoal.events.protocol.heartbeat import HeartbeatRequest, HeartbeatResponse
from shoal.events.protocol.join_group import (
    JoinGroupRequest,
    JoinGroupRequestProtocol,
    JoinGroupResponse,
)
from shoal.events.protocol.leave_group import (
    LeaveGroupRequest,
    LeaveGroupResponse,
    MemberIdentity,
)
from shoal.events.protocol.offset_commit import (
    OffsetCommitRequest,
    OffsetCommitRequestPartition,
    OffsetCommitRequestTopic,
    OffsetCommitResponse,
)
from shoal.events.protocol.offset_fetch import (
    OffsetFetchRequest,
    OffsetFetchRequestGroup,
    OffsetFetchRequestTopic,
    OffsetFetchRequestTopics,
    OffsetFetchResponse,
)
from shoal.events.protocol.schema import Response
from shoal.events.protocol.sync_group import (
    SyncGroupRequest,
    SyncGroupRequestAssignment,
    SyncGroupResponse,
)

G = "orders"
RANGE = [("range", b"sub-range")]


def cfg(**kw: int) -> CoordinatorConfig:
    base = dict(min_session_timeout_ms=100, initial_rebalance_delay_ms=100)
    base.update(kw)
    return CoordinatorConfig(**base)  # type: ignore[arg-type]


class Harness:
    """A coordinator, a fake clock, unique tokens, and the store the host would keep."""

    def __init__(self, config: CoordinatorConfig | None = None, seed: int = 1) -> None:
        self.config = config if config is not None else cfg()
        self.coord = GroupCoordinator(self.config, rng=random.Random(seed))
        self.now = 0
        self.tokens = count()
        self.store: dict[bytes, bytes] = {}
        self.log: list[Persist] = []

    def _apply(self, out: Output) -> Output:
        for p in out.persist:  # the host writes first ...
            self.log.append(p)
            if p.value is None:
                self.store.pop(p.key, None)
            else:
                self.store[p.key] = p.value
        for r in out.replies:  # ... then every reply must be a valid response at its version
            r.response.encode(r.version)
        self.coord.check_invariants()
        return out

    def call(self, request: object, version: int, client_id: str = "client",
             **kw: object) -> tuple[int, Output]:
        token = next(self.tokens)
        out = self.coord.handle(token, request, version=version,  # type: ignore[arg-type]
                                now_ms=self.now, client_id=client_id, **kw)  # type: ignore[arg-type]
        return token, self._apply(out)

    def tick(self, to: int) -> Output:
        self.now = to
        return self._apply(self.coord.tick(to))


def join_req(member_id: str = "", *, protocols: list[tuple[str, bytes]] = RANGE,
             session: int = 10_000, rebalance: int = 30_000, ptype: str = "consumer",
             group: str = G, instance: str | None = None) -> JoinGroupRequest:
    return JoinGroupRequest(group_id=group, session_timeout_ms=session,
                            rebalance_timeout_ms=rebalance, member_id=member_id,
                            group_instance_id=instance, protocol_type=ptype,
                            protocols=[JoinGroupRequestProtocol(name=n, metadata=m)
                                       for n, m in protocols])


def sync_req(member_id: str, generation: int,
             assignments: dict[str, bytes] | None = None) -> SyncGroupRequest:
    return SyncGroupRequest(group_id=G, generation_id=generation, member_id=member_id,
                            protocol_type="consumer", protocol_name="range",
                            assignments=[SyncGroupRequestAssignment(member_id=k, assignment=v)
                                         for k, v in (assignments or {}).items()])


def hb_req(member_id: str, generation: int) -> HeartbeatRequest:
    return HeartbeatRequest(group_id=G, generation_id=generation, member_id=member_id)


def commit_req(member_id: str, generation: int, offsets: dict[tuple[str, int], int], *,
               group: str = G, metadata: str | None = "") -> OffsetCommitRequest:
    topics: dict[str, list[OffsetCommitRequestPartition]] = {}
    for (topic, partition), offset in offsets.items():
        topics.setdefault(topic, []).append(OffsetCommitRequestPartition(
            partition_index=partition, committed_offset=offset, committed_metadata=metadata))
    return OffsetCommitRequest(group_id=group, generation_id_or_member_epoch=generation,
                               member_id=member_id,
                               topics=[OffsetCommitRequestTopic(name=t, partitions=ps)
                                       for t, ps in topics.items()])


def commit_codes(resp: Response | None) -> dict[tuple[str, int], int]:
    assert isinstance(resp, OffsetCommitResponse)
    return {(t.name, p.partition_index): p.error_code for t in resp.topics for p in t.partitions}


def fetch(h: Harness, wanted: dict[str, list[int]] | None, version: int = 7,
          group: str = G) -> dict[tuple[str, int], int]:
    if version >= 8:
        req = OffsetFetchRequest(groups=[OffsetFetchRequestGroup(group_id=group, topics=None
            if wanted is None else [OffsetFetchRequestTopics(name=t, partition_indexes=ps)
                                    for t, ps in wanted.items()])])
    else:
        req = OffsetFetchRequest(group_id=group, topics=None if wanted is None else [
            OffsetFetchRequestTopic(name=t, partition_indexes=ps) for t, ps in wanted.items()])
    token, out = h.call(req, version)
    resp = out.reply_for(token)
    assert isinstance(resp, OffsetFetchResponse)
    if version >= 8:
        (g,) = resp.groups
        assert g.group_id == group and g.error_code == E.NONE
        return {(t.name, p.partition_index): p.committed_offset
                for t in g.topics for p in t.partitions}
    assert resp.error_code == E.NONE
    return {(t.name, p.partition_index): p.committed_offset
            for t in resp.topics for p in t.partitions}


def join_resp(out: Output, token: int) -> JoinGroupResponse:
    resp = out.reply_for(token)
    assert isinstance(resp, JoinGroupResponse), f"token {token} not answered: {out}"
    return resp


def code_of(out: Output, token: int) -> int:
    resp = out.reply_for(token)
    assert resp is not None, f"token {token} not answered"
    return resp.error_code  # type: ignore[attr-defined, no-any-return]


def form_group(h: Harness, n: int, *, version: int = 9, session: int = 10_000,
               rebalance: int = 30_000) -> tuple[list[str], int]:
    """n consumers join (with the MEMBER_ID_REQUIRED round trip from v4) and sync."""
    ids = []
    for i in range(n):
        token, out = h.call(join_req(session=session, rebalance=rebalance), version, f"c{i}")
        if version >= 4:
            ids.append(join_resp(out, token).member_id)
    tokens = []
    done = Output()
    for i in range(n):
        token, out = h.call(join_req(ids[i] if version >= 4 else "", session=session,
                                     rebalance=rebalance), version, f"c{i}")
        tokens.append(token)
        done.replies += out.replies
    done.replies += h.tick(h.now + h.config.initial_rebalance_delay_ms * 3).replies
    resps = [join_resp(done, t) for t in tokens]
    ids = [r.member_id for r in resps]
    generation = resps[0].generation_id
    leader = resps[0].leader
    assigned = {mid: f"part-{mid}".encode() for mid in ids}
    for mid in ids:
        token, out = h.call(sync_req(mid, generation, assigned if mid == leader else None), 5)
    return ids, generation


# ---------------------------------------------------------------------- the main scenario


def test_three_members_join_sync_heartbeat_leave_and_rebalance() -> None:
    h = Harness(cfg(initial_rebalance_delay_ms=3000))
    # 1. JoinGroup v9 without an id: MEMBER_ID_REQUIRED with "<client id>-<uuid>".
    ids = []
    for i in range(3):
        token, out = h.call(join_req(), 9, client_id=f"consumer-{i}")
        r = join_resp(out, token)
        assert r.error_code == E.MEMBER_ID_REQUIRED and r.generation_id == -1
        assert re.fullmatch(rf"consumer-{i}-[0-9a-f]{{8}}(-[0-9a-f]{{4}}){{3}}-[0-9a-f]{{12}}",
                            r.member_id)
        ids.append(r.member_id)
    assert len(set(ids)) == 3
    again = Harness(cfg(initial_rebalance_delay_ms=3000))  # the same seed, the same ids
    assert [join_resp(o, t).member_id for t, o in
            (again.call(join_req(), 9, client_id=f"consumer-{i}") for i in range(3))] == ids

    # 2. Rejoin with the ids: parked through the initial delay (extended once, as Kafka does,
    #    because members kept arriving).
    h.now = 10
    tokens = []
    for i in range(3):
        token, out = h.call(join_req(ids[i]), 9, client_id=f"consumer-{i}")
        assert out.replies == []
        tokens.append(token)
    view = h.coord.describe(G)
    assert view is not None and view.state is GroupState.PREPARING_REBALANCE
    assert h.coord.next_deadline() == 3010
    assert h.tick(3010).replies == []
    assert h.coord.next_deadline() == 6010
    out = h.tick(6010)
    resps = [join_resp(out, t) for t in tokens]
    assert {r.error_code for r in resps} == {E.NONE}
    assert {r.generation_id for r in resps} == {1}
    assert {r.protocol_name for r in resps} == {"range"}
    assert {r.protocol_type for r in resps} == {"consumer"}
    assert {r.leader for r in resps} == {ids[0]}  # the first to join leads
    assert [r.member_id for r in resps] == ids
    # Only the leader learns the members and their metadata.
    assert [(m.member_id, m.metadata) for m in resps[0].members] == \
        [(mid, b"sub-range") for mid in ids]
    assert resps[1].members == [] and resps[2].members == []

    # 3. SyncGroup: followers wait for the leader; the leader's assignment is persisted and
    #    every member gets its own part.
    t1, o1 = h.call(sync_req(ids[1], 1), 5)
    t2, o2 = h.call(sync_req(ids[2], 1), 5)
    assert o1.replies == [] and o2.replies == []
    assignment = {ids[0]: b"p0", ids[1]: b"p1", ids[2]: b"p2"}
    t0, o0 = h.call(sync_req(ids[0], 1, assignment), 5)
    got = {}
    for token, mid in ((t0, ids[0]), (t1, ids[1]), (t2, ids[2])):
        resp = o0.reply_for(token)
        assert isinstance(resp, SyncGroupResponse) and resp.error_code == E.NONE
        assert resp.protocol_name == "range" and resp.protocol_type == "consumer"
        got[mid] = resp.assignment
    assert got == assignment
    (record,) = o0.persist
    assert record.key == group_key(h.config.key_prefix, G)
    stored = decode_group(record.value or b"")
    assert stored.generation == 1 and stored.leader == ids[0]
    assert [(m.member_id, m.assignment) for m in stored.members] == list(assignment.items())
    view = h.coord.describe(G)
    assert view is not None and view.state is GroupState.STABLE

    # A SyncGroup again while Stable answers the stored assignment at once.
    token, out = h.call(sync_req(ids[2], 1), 3)
    resp = out.reply_for(token)
    assert isinstance(resp, SyncGroupResponse) and resp.assignment == b"p2"

    # 4. Heartbeats keep the members well past their 10 s sessions.
    for step in range(1, 11):
        h.now = 6010 + step * 3000
        for mid in ids:
            token, out = h.call(hb_req(mid, 1), 4)
            assert code_of(out, token) == E.NONE
    view = h.coord.describe(G)
    assert view is not None and view.state is GroupState.STABLE and len(view.members) == 3

    # 5. One leaves (LeaveGroup v3, a batch): the group rebalances, the others hear of it in
    #    their heartbeat, rejoin, and get generation 2 as soon as both have.
    token, out = h.call(LeaveGroupRequest(group_id=G, members=[MemberIdentity(
        member_id=ids[1])]), 3)
    leave = out.reply_for(token)
    assert isinstance(leave, LeaveGroupResponse) and leave.error_code == E.NONE
    assert [(m.member_id, m.error_code) for m in leave.members] == [(ids[1], E.NONE)]
    for mid in (ids[0], ids[2]):
        token, out = h.call(hb_req(mid, 1), 4)
        assert code_of(out, token) == E.REBALANCE_IN_PROGRESS
    token, out = h.call(hb_req(ids[1], 1), 4)
    assert code_of(out, token) == E.UNKNOWN_MEMBER_ID
    ta, oa = h.call(join_req(ids[2]), 9)
    assert oa.replies == []
    tb, ob = h.call(join_req(ids[0]), 9)
    resps = [join_resp(ob, ta), join_resp(ob, tb)]
    assert {r.generation_id for r in resps} == {2}
    assert {r.leader for r in resps} == {ids[0]}  # kept: still a member
    assert len(join_resp(ob, tb).members) == 2
    for mid in (ids[2], ids[0]):
        token, out = h.call(sync_req(mid, 2, {ids[0]: b"a", ids[2]: b"b"}
                                     if mid == ids[0] else None), 5)
    view = h.coord.describe(G)
    assert view is not None and view.state is GroupState.STABLE and view.generation == 2
    assert {m.member_id: m.assignment for m in view.members} == {ids[0]: b"a", ids[2]: b"b"}

    # Old generation now refused.
    token, out = h.call(hb_req(ids[0], 1), 4)
    assert code_of(out, token) == E.ILLEGAL_GENERATION


def test_session_timeout_evicts_a_silent_member() -> None:
    h = Harness()
    ids, gen = form_group(h, 3, session=6000)
    start = h.now
    # ids[2] falls silent; the others heartbeat every 1.5 s.
    for step in range(1, 4):
        h.now = start + step * 1500
        for mid in ids[:2]:
            token, out = h.call(hb_req(mid, gen), 4)
            assert code_of(out, token) == E.NONE
    h.tick(start + 6000)  # its session deadline: removed, and a rebalance begins
    view = h.coord.describe(G)
    assert view is not None and view.state is GroupState.PREPARING_REBALANCE
    assert [m.member_id for m in view.members] == ids[:2]
    token, out = h.call(hb_req(ids[2], gen), 4)
    assert code_of(out, token) == E.UNKNOWN_MEMBER_ID
    token, out = h.call(hb_req(ids[0], gen), 4)
    assert code_of(out, token) == E.REBALANCE_IN_PROGRESS
    ta, _ = h.call(join_req(ids[0]), 9)
    tb, out = h.call(join_req(ids[1]), 9)
    assert join_resp(out, ta).generation_id == gen + 1 == join_resp(out, tb).generation_id


def test_a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() -> None:
    h = Harness()
    ids, gen = form_group(h, 3, session=5000, rebalance=8000)
    # The leader rejoins: in Stable, a leader's JoinGroup always starts a rebalance.
    h.now += 100
    started = h.now
    tl, out = h.call(join_req(ids[0], session=5000, rebalance=8000), 9)
    assert out.replies == []
    tf, out = h.call(join_req(ids[1], session=5000, rebalance=8000), 9)
    assert out.replies == []
    # ids[2] keeps heartbeating (its session is fine) but never rejoins.
    for step in range(1, 4):
        h.now = started + step * 2000
        token, out = h.call(hb_req(ids[2], gen), 4)
        assert code_of(out, token) == E.REBALANCE_IN_PROGRESS
    assert h.coord.next_deadline() == started + 8000  # the max of the rebalance timeouts
    out = h.tick(started + 8000)
    lead, follow = join_resp(out, tl), join_resp(out, tf)
    assert lead.generation_id == follow.generation_id == gen + 1
    assert [m.member_id for m in lead.members] == ids[:2]
    token, out = h.call(hb_req(ids[2], gen), 4)
    assert code_of(out, token) == E.UNKNOWN_MEMBER_ID


def test_the_leader_is_replaced_when_it_does_not_rejoin() -> None:
    h = Harness()
    ids, gen = form_group(h, 2, session=5000, rebalance=4000)
    # A follower changes its metadata: rebalance; the leader never comes back.
    tf, out = h.call(join_req(ids[1], protocols=[("range", b"new")], session=5000,
                              rebalance=4000), 9)
    assert out.replies == []
    out = h.tick(h.now + 4000)
    r = join_resp(out, tf)
    assert r.leader == ids[1] and [m.metadata for m in r.members] == [b"new"]


def test_follower_rejoin_in_stable_with_same_metadata_returns_current_generation() -> None:
    h = Harness()
    ids, gen = form_group(h, 2)
    token, out = h.call(join_req(ids[1]), 9)
    r = join_resp(out, token)
    assert r.error_code == E.NONE and r.generation_id == gen and r.members == []
    view = h.coord.describe(G)
    assert view is not None and view.state is GroupState.STABLE


def test_a_sync_that_never_comes_removes_the_member() -> None:
    h = Harness(cfg(initial_rebalance_delay_ms=0))
    tokens = []
    ids = []
    for i in range(2):
        token, out = h.call(join_req(rebalance=5000), 9, f"c{i}")
        ids.append(join_resp(out, token).member_id)
    for mid in ids:  # with no initial delay, the first rejoin makes generation 1 alone
        token, out = h.call(join_req(mid, rebalance=5000), 9)
        tokens.append(token)
    view = h.coord.describe(G)
    assert view is not None and view.generation == 1 and view.state is \
        GroupState.PREPARING_REBALANCE  # ids[1] arrived: a second rebalance waits for ids[0]
    t, out = h.call(join_req(ids[0], rebalance=5000), 9)
    r = join_resp(out, t)
    assert r.generation_id == 2
    # Only the leader syncs; the other never does: after the rebalance timeout it is dropped.
    leader = r.leader
    other = ids[1] if leader == ids[0] else ids[0]
    ts, out = h.call(sync_req(leader, 2, {leader: b"x", other: b"y"}), 5)
    assert code_of(out, ts) == E.NONE
    h.tick(h.now + 5000)
    view = h.coord.describe(G)
    assert view is not None and [m.member_id for m in view.members] == [leader]
    assert view.state is GroupState.PREPARING_REBALANCE


# ---------------------------------------------------------------------- errors


def test_generation_and_member_errors() -> None:
    h = Harness()
    ids, gen = form_group(h, 2)
    cases: list[tuple[object, int, int]] = [
        (hb_req(ids[0], gen + 5), 4, E.ILLEGAL_GENERATION),
        (hb_req("nobody", gen), 4, E.UNKNOWN_MEMBER_ID),
        (sync_req(ids[0], gen - 1), 5, E.ILLEGAL_GENERATION),
        (sync_req("nobody", gen), 5, E.UNKNOWN_MEMBER_ID),
        (join_req("nobody"), 9, E.UNKNOWN_MEMBER_ID),
        (join_req(ids[0], group="no-such-group"), 9, E.UNKNOWN_MEMBER_ID),
        (HeartbeatRequest(group_id="", generation_id=gen, member_id=ids[0]), 4,
         E.INVALID_GROUP_ID),
        (join_req(session=50), 9, E.INVALID_SESSION_TIMEOUT),
        (join_req(session=2_000_000), 9, E.INVALID_SESSION_TIMEOUT),
        (join_req(instance="static-1"), 9, E.UNSUPPORTED_VERSION),
        (HeartbeatRequest(group_id=G, generation_id=gen, member_id=ids[0],
                          group_instance_id="static-1"), 4, E.UNSUPPORTED_VERSION),
        (SyncGroupRequest(group_id=G, generation_id=gen, member_id=ids[0],
                          group_instance_id="static-1"), 3, E.UNSUPPORTED_VERSION),
        (SyncGroupRequest(group_id="", generation_id=gen, member_id=ids[0]), 3,
         E.INVALID_GROUP_ID),
        (LeaveGroupRequest(group_id="", member_id=ids[0]), 1, E.INVALID_GROUP_ID),
        (join_req(group=""), 9, E.INVALID_GROUP_ID),
        (SyncGroupRequest(group_id=G, generation_id=gen, member_id=ids[0]), 5,
         E.INCONSISTENT_GROUP_PROTOCOL),  # v5 requires protocol type and name
        (SyncGroupRequest(group_id=G, generation_id=gen, member_id=ids[0],
                          protocol_type="consumer", protocol_name="roundrobin"), 5,
         E.INCONSISTENT_GROUP_PROTOCOL),
    ]
    for request, version, expected in cases:
        token, out = h.call(request, version)
        assert code_of(out, token) == expected, request
    # A commit with the wrong generation, or from a stranger.
    token, out = h.call(commit_req(ids[0], gen + 1, {("t", 0): 5}), 8)
    assert commit_codes(out.reply_for(token)) == {("t", 0): E.ILLEGAL_GENERATION}
    token, out = h.call(commit_req("nobody", gen, {("t", 0): 5}), 8)
    assert commit_codes(out.reply_for(token)) == {("t", 0): E.UNKNOWN_MEMBER_ID}
    token, out = h.call(commit_req("", -1, {("t", 0): 5}), 8)  # standalone, group not empty
    assert commit_codes(out.reply_for(token)) == {("t", 0): E.UNKNOWN_MEMBER_ID}
    static = commit_req(ids[0], gen, {("t", 0): 5})
    static.group_instance_id = "static-1"
    token, out = h.call(static, 7)
    assert commit_codes(out.reply_for(token)) == {("t", 0): E.UNSUPPORTED_VERSION}
    token, out = h.call(OffsetCommitRequest(group_id=G, generation_id_or_member_epoch=gen,
                                            member_id=ids[0]), 8)  # nothing to commit
    assert commit_codes(out.reply_for(token)) == {} and out.persist == []

    # During PreparingRebalance: SyncGroup says rebalance; a commit of the old generation is
    # still accepted; after the join completes, a commit before the sync is refused.
    tl, _ = h.call(join_req(ids[0]), 9)
    token, out = h.call(sync_req(ids[1], gen), 5)
    assert code_of(out, token) == E.REBALANCE_IN_PROGRESS
    token, out = h.call(commit_req(ids[1], gen, {("t", 0): 7}), 8)
    assert commit_codes(out.reply_for(token)) == {("t", 0): E.NONE}
    tf, out = h.call(join_req(ids[1]), 9)
    assert join_resp(out, tf).generation_id == gen + 1
    token, out = h.call(commit_req(ids[1], gen + 1, {("t", 0): 8}), 8)
    assert commit_codes(out.reply_for(token)) == {("t", 0): E.REBALANCE_IN_PROGRESS}

    # A parked SyncGroup is answered REBALANCE_IN_PROGRESS when a rebalance starts.
    ts, out = h.call(sync_req(ids[1], gen + 1), 5)
    assert out.replies == []
    tj, out = h.call(join_req("", ptype="consumer"), 3, "late")  # v3: no member id round trip
    assert code_of(out, ts) == E.REBALANCE_IN_PROGRESS
    assert out.reply_for(tj) is None  # parked in the new rebalance


def test_inconsistent_protocols_and_protocol_selection() -> None:
    h = Harness()
    ids, gen = form_group(h, 1)
    for request in (join_req(ptype="connect"), join_req(protocols=[("roundrobin", b"")]),
                    join_req(ids[0], ptype="connect")):
        token, out = h.call(request, 9)
        assert code_of(out, token) == E.INCONSISTENT_GROUP_PROTOCOL
    # A new group refuses an empty protocol type or list.
    for request in (join_req(group="g2", ptype=""), join_req(group="g2", protocols=[])):
        token, out = h.call(request, 9)
        assert code_of(out, token) == E.INCONSISTENT_GROUP_PROTOCOL
    assert h.coord.describe("g2") is None  # a refused join leaves no group behind

    def elect(prefs: list[list[str]]) -> str:
        hh = Harness(cfg(initial_rebalance_delay_ms=100))
        tokens = []
        for i, names in enumerate(prefs):
            protos = [(n, n.encode()) for n in names]
            t, out = hh.call(join_req(protocols=protos, group="vote"), 3, f"c{i}")
            tokens.append(t)
        out = hh.tick(1000)
        names = {join_resp(out, t).protocol_name for t in tokens}
        assert len(names) == 1
        return names.pop()  # type: ignore[return-value]

    # Only protocols every member supports are candidates; each member votes its favourite.
    assert elect([["range", "roundrobin"], ["roundrobin", "range"], ["roundrobin"]]) == \
        "roundrobin"
    assert elect([["sticky", "range"], ["range", "sticky"], ["sticky", "range"]]) == "sticky"
    # A tie goes to the leader's (the first member's) preference.
    assert elect([["range", "sticky"], ["sticky", "range"]]) == "range"
    assert elect([["sticky", "range"], ["range", "sticky"]]) == "sticky"


def test_join_before_v4_needs_no_member_id_round_trip_and_old_responses_encode() -> None:
    h = Harness()
    for version in (0, 1, 3):
        hh = Harness(cfg(initial_rebalance_delay_ms=0))
        token, out = hh.call(join_req(), version, "old")
        r = join_resp(out, token)
        assert r.error_code == E.NONE and r.generation_id == 1 and r.protocol_name == "range"
        assert r.member_id.startswith("old-") and r.leader == r.member_id
    # Errors before v7 carry "" as the protocol name, from v7 null.
    token, out = h.call(join_req("nobody", group="none"), 6)
    assert join_resp(out, token).protocol_name == ""
    token, out = h.call(join_req("nobody", group="none"), 7)
    assert join_resp(out, token).protocol_name is None


def test_leave_group_versions_and_unknown_members() -> None:
    h = Harness()
    ids, gen = form_group(h, 3)
    # v0-2: a single member, its error on top.
    token, out = h.call(LeaveGroupRequest(group_id=G, member_id="nobody"), 1)
    assert code_of(out, token) == E.UNKNOWN_MEMBER_ID
    token, out = h.call(LeaveGroupRequest(group_id=G, member_id=ids[2]), 2)
    assert code_of(out, token) == E.NONE
    # v3+: a batch, one error per member; an instance id names no member here.
    token, out = h.call(LeaveGroupRequest(group_id=G, members=[
        MemberIdentity(member_id=ids[0]), MemberIdentity(member_id="ghost"),
        MemberIdentity(member_id="", group_instance_id="static"),
        MemberIdentity(member_id=ids[1], group_instance_id="static"),
        MemberIdentity(member_id=ids[0])]), 5)
    resp = out.reply_for(token)
    assert isinstance(resp, LeaveGroupResponse) and resp.error_code == E.NONE
    assert [m.error_code for m in resp.members] == \
        [E.NONE, E.UNKNOWN_MEMBER_ID, E.UNKNOWN_MEMBER_ID, E.UNKNOWN_MEMBER_ID,
         E.UNKNOWN_MEMBER_ID]
    assert resp.members[2].group_instance_id == "static"
    # The last member leaves: the group goes Empty with a new generation, persisted.
    token, out = h.call(LeaveGroupRequest(group_id=G, members=[
        MemberIdentity(member_id=ids[1])]), 4)
    view = h.coord.describe(G)
    assert view is not None and view.state is GroupState.EMPTY
    assert view.generation == gen + 1 and view.leader is None
    assert decode_group(out.persist[-1].value or b"").members == ()
    token, out = h.call(LeaveGroupRequest(group_id="nope", members=[
        MemberIdentity(member_id="x")]), 3)
    resp = out.reply_for(token)
    assert isinstance(resp, LeaveGroupResponse)
    assert [m.error_code for m in resp.members] == [E.UNKNOWN_MEMBER_ID]


def test_a_parked_member_that_leaves_or_rejoins_twice_is_answered() -> None:
    h = Harness(cfg(initial_rebalance_delay_ms=1000))
    token, out = h.call(join_req(), 9)
    mid = join_resp(out, token).member_id
    first, out = h.call(join_req(mid), 9)
    assert out.replies == []
    second, out = h.call(join_req(mid), 9)  # a retry replaces the first, which is told so
    assert code_of(out, first) == E.REBALANCE_IN_PROGRESS
    token, out = h.call(LeaveGroupRequest(group_id=G, member_id=mid), 0)
    assert code_of(out, token) == E.NONE
    assert code_of(out, second) == E.UNKNOWN_MEMBER_ID
    assert join_resp(out, second).member_id == ""


def test_parked_syncs_replaced_or_left_are_answered_and_pending_members_leave() -> None:
    h = Harness()
    ids, gen = form_group(h, 3)
    tl, _ = h.call(join_req(ids[0]), 9)
    h.call(join_req(ids[1]), 9)
    tj, out = h.call(join_req(ids[2]), 9)
    assert join_resp(out, tl).leader == ids[0]
    first, out = h.call(sync_req(ids[1], gen + 1), 5)
    second, out = h.call(sync_req(ids[1], gen + 1), 5)  # a retry replaces the first
    assert code_of(out, first) == E.REBALANCE_IN_PROGRESS and out.reply_for(second) is None
    waiting, out = h.call(sync_req(ids[2], gen + 1), 5)
    token, out = h.call(LeaveGroupRequest(group_id=G, member_id=ids[2]), 0)
    assert code_of(out, token) == E.NONE
    assert code_of(out, waiting) == E.UNKNOWN_MEMBER_ID  # its member is gone
    assert code_of(out, second) == E.REBALANCE_IN_PROGRESS  # the group rebalances
    # A handed-out id can leave too, and then no longer blocks the join from completing.
    token, out = h.call(join_req(), 9, "newcomer")
    newcomer = join_resp(out, token).member_id
    ta, out = h.call(join_req(ids[0]), 9)
    tb, out = h.call(join_req(ids[1]), 9)
    assert out.replies == []  # waits for the newcomer's rejoin
    token, out = h.call(LeaveGroupRequest(group_id=G, members=[
        MemberIdentity(member_id=newcomer)]), 3)
    assert join_resp(out, ta).generation_id == gen + 2 == join_resp(out, tb).generation_id


def test_a_handed_out_member_id_expires_after_the_session_timeout() -> None:
    h = Harness()
    token, out = h.call(join_req(session=2000), 9)
    mid = join_resp(out, token).member_id
    view = h.coord.describe(G)
    assert view is not None and view.pending_members == (mid,)
    h.tick(2000)
    token, out = h.call(join_req(mid, session=2000), 9)
    assert code_of(out, token) == E.UNKNOWN_MEMBER_ID


def test_a_new_member_that_never_gets_its_join_answer_times_out() -> None:
    h = Harness(cfg(new_member_join_timeout_ms=5000))
    ids, gen = form_group(h, 1)
    token, out = h.call(join_req(), 9, "newcomer")
    newcomer = join_resp(out, token).member_id
    parked, out = h.call(join_req(newcomer), 9, "newcomer")
    assert out.replies == []  # waits for ids[0], who never rejoins nor heartbeats...
    for step in range(1, 3):  # ...but keeps its session with commits
        h.now += 2000
        t, out = h.call(commit_req(ids[0], gen, {("t", 0): step}), 8)
        assert commit_codes(out.reply_for(t)) == {("t", 0): E.NONE}
    out = h.tick(h.now + 1000)  # 5 s after the newcomer joined: dropped, told to start over
    r = join_resp(out, parked)
    assert r.error_code == E.UNKNOWN_MEMBER_ID and r.member_id == ""


# ---------------------------------------------------------------------- offsets, persistence


def test_offsets_standalone_and_group_commits_and_fetches() -> None:
    h = Harness()
    # A standalone consumer (generation -1, no member id) creates a "simple" group.
    token, out = h.call(commit_req("", -1, {("t", 0): 10, ("t", 1): 20, ("u", 0): 30},
                                   group="simple", metadata="m"), 8)
    assert commit_codes(out.reply_for(token)) == {("t", 0): 0, ("t", 1): 0, ("u", 0): 0}
    assert len(out.persist) == 3
    assert parse_key(h.config.key_prefix, out.persist[0].key) == ("simple", "t", 0)
    assert decode_offset(out.persist[0].value or b"").offset == 10
    view = h.coord.describe("simple")
    assert view is not None and view.state is GroupState.EMPTY and view.protocol_type is None
    # v0 has neither generation nor member id: a standalone commit too.
    token, out = h.call(OffsetCommitRequest(group_id="simple", topics=[OffsetCommitRequestTopic(
        name="t", partitions=[OffsetCommitRequestPartition(partition_index=2,
                                                           committed_offset=5)])]), 0)
    assert commit_codes(out.reply_for(token)) == {("t", 2): E.NONE}
    for version in (1, 2, 5, 7, 8):
        everything = None if version >= 2 else {"t": [0, 1, 2], "u": [0]}
        assert fetch(h, everything, version, "simple") == \
            {("t", 0): 10, ("t", 1): 20, ("t", 2): 5, ("u", 0): 30}
        assert fetch(h, {"t": [1, 9], "v": [0]}, version, "simple") == \
            {("t", 1): 20, ("t", 9): -1, ("v", 0): -1}
    assert fetch(h, {"t": [0]}, 8, "no-such-group") == {("t", 0): -1}
    assert fetch(h, None, 8, "no-such-group") == {}
    # The metadata string comes back.
    token, out = h.call(OffsetFetchRequest(group_id="simple", topics=[
        OffsetFetchRequestTopic(name="t", partition_indexes=[0])]), 5)
    resp = out.reply_for(token)
    assert isinstance(resp, OffsetFetchResponse) and resp.topics[0].partitions[0].metadata == "m"

    # A group member commits with its generation; a stale generation without a group is an
    # old generation (ILLEGAL_GENERATION), or GROUP_ID_NOT_FOUND from v9.
    ids, gen = form_group(h, 2)
    token, out = h.call(commit_req(ids[1], gen, {("t", 0): 99}), 8)
    assert commit_codes(out.reply_for(token)) == {("t", 0): E.NONE}
    assert fetch(h, {"t": [0]}) == {("t", 0): 99}
    for version, code in ((8, E.ILLEGAL_GENERATION), (9, E.GROUP_ID_NOT_FOUND)):
        token, out = h.call(commit_req("m", 3, {("t", 0): 1}, group="gone"), version)
        assert commit_codes(out.reply_for(token)) == {("t", 0): code}
    assert h.coord.describe("gone") is None
    # Bounds and the server's metadata.
    token, out = h.call(commit_req(ids[0], gen, {("t", 0): 1, ("t", 1): 2},
                                   metadata="x" * 5000), 8)
    assert set(commit_codes(out.reply_for(token)).values()) == {E.OFFSET_METADATA_TOO_LARGE}
    token, out = h.call(commit_req(ids[0], gen, {("t", 0): 1, ("nope", 0): 2}), 8,
                        partition_exists=lambda topic, partition: topic != "nope")
    assert commit_codes(out.reply_for(token)) == \
        {("t", 0): E.NONE, ("nope", 0): E.UNKNOWN_TOPIC_OR_PARTITION}
    # A group emptied of members accepts standalone commits again.
    for mid in ids:
        h.call(LeaveGroupRequest(group_id=G, member_id=mid), 1)
    token, out = h.call(commit_req("", -1, {("t", 0): 123}), 8)
    assert commit_codes(out.reply_for(token)) == {("t", 0): E.NONE}


def test_load_after_failover_resumes_offsets_and_the_stable_group() -> None:
    h = Harness()
    ids, gen = form_group(h, 3, session=6000)
    for i, mid in enumerate(ids):
        token, out = h.call(commit_req(mid, gen, {("t", i): 100 + i}), 8)
        assert commit_codes(out.reply_for(token)) == {("t", i): E.NONE}
    h.call(commit_req("", -1, {("x", 0): 7}, group="standalone"), 8)
    # A rebalance in flight (the leader rejoined) is not persisted, nor is the rejoin.
    h.call(join_req(ids[0], session=6000), 9)

    # Failover: a new coordinator from what the host stored (and the log replays the same).
    for records in (list(h.store.items()), h.log):
        new = Harness(h.config, seed=2)
        new.now = h.now + 500
        new.coord.load(records, now_ms=new.now)
        new.coord.check_invariants()
        assert fetch(new, None) == {("t", 0): 100, ("t", 1): 101, ("t", 2): 102}
        assert fetch(new, None, 8, "standalone") == {("x", 0): 7}
        view = new.coord.describe(G)
        assert view is not None and view.state is GroupState.STABLE
        assert view.generation == gen and view.leader == ids[0]
        assert {m.member_id: m.assignment for m in view.members} == \
            {mid: f"part-{mid}".encode() for mid in ids}
        # Two members carry on with heartbeats and commits; the third is gone and times out.
        for _ in range(3):
            new.now += 2500
            for mid in ids[:2]:
                token, out = new.call(hb_req(mid, gen), 4)
                assert code_of(out, token) in (E.NONE, E.REBALANCE_IN_PROGRESS)
        view = new.coord.describe(G)
        assert view is not None and [m.member_id for m in view.members] == ids[:2]
        assert view.state is GroupState.PREPARING_REBALANCE

    with pytest.raises(ValueError):
        GroupCoordinator(h.config).load([(b"other/key", b"{}")], now_ms=0)


def test_a_group_loaded_over_capacity_rebalances_and_cuts_the_last_to_rejoin() -> None:
    h = Harness()
    ids, gen = form_group(h, 2)
    small = Harness(cfg(max_group_size=1))
    small.coord.load(h.store.items(), now_ms=h.now)
    view = small.coord.describe(G)
    assert view is not None and view.state is GroupState.PREPARING_REBALANCE
    small.now = h.now
    ta, out = small.call(join_req(ids[0]), 9)
    assert out.replies == []
    tb, out = small.call(join_req(ids[1]), 9)
    r = join_resp(out, tb)
    assert r.error_code == E.GROUP_MAX_SIZE_REACHED and r.member_id == ""
    r = join_resp(out, ta)  # the one member left had rejoined: the rebalance completes
    assert r.error_code == E.NONE and r.generation_id == gen + 1
    assert [m.member_id for m in r.members] == [ids[0]]


def test_offsets_expire_after_retention_once_the_group_is_empty() -> None:
    h = Harness(cfg(offsets_retention_ms=50_000, offsets_retention_check_interval_ms=10_000))
    ids, gen = form_group(h, 1)
    h.call(commit_req(ids[0], gen, {("t", 0): 5}), 8)
    h.call(commit_req("", -1, {("s", 0): 1}, group="simple"), 8)
    for _ in range(14):  # an active group keeps its offsets however old
        h.now += 5000
        token, out = h.call(hb_req(ids[0], gen), 4)
        assert code_of(out, token) == E.NONE
    assert fetch(h, None) == {("t", 0): 5}
    assert h.coord.describe("simple") is None  # its commit is older than the retention
    assert offset_key(h.config.key_prefix, "simple", "s", 0) not in h.store
    emptied = h.now
    h.call(LeaveGroupRequest(group_id=G, member_id=ids[0]), 1)
    h.tick(emptied + 45_000)
    assert fetch(h, None) == {("t", 0): 5}  # empty for less than the retention
    h.tick(emptied + 60_000)
    assert h.coord.describe(G) is None
    assert not any(parse_key(h.config.key_prefix, k)[0] == G for k in h.store)
    # Replaying the whole log, tombstones included, gives the same (empty) state.
    replayed = GroupCoordinator(h.config)
    replayed.load(h.log, now_ms=h.now)
    assert replayed.group_ids() == []
    # OffsetCommit v2-4 may set a retention time: that offset expires then, group or not.
    token, out = h.call(OffsetCommitRequest(group_id="old", retention_time_ms=15_000, topics=[
        OffsetCommitRequestTopic(name="t", partitions=[OffsetCommitRequestPartition(
            partition_index=0, committed_offset=3)])]), 2)
    assert commit_codes(out.reply_for(token)) == {("t", 0): E.NONE}
    assert decode_offset(out.persist[0].value or b"").expire_timestamp_ms == h.now + 15_000
    h.tick(h.now + 25_000)  # past the expiry and then a sweep (one every 10 s)
    assert h.coord.describe("old") is None


def test_unload_answers_everything_parked_and_error_reply() -> None:
    h = Harness(cfg(initial_rebalance_delay_ms=1000))
    token, out = h.call(join_req(), 9)
    mid = join_resp(out, token).member_id
    parked, out = h.call(join_req(mid), 7)
    assert out.replies == []
    out = h.coord.unload()
    assert code_of(out, parked) == E.NOT_COORDINATOR
    assert h.coord.group_ids() == [] and h.coord.next_deadline() is None
    # error_reply turns any coordinator reply into the same response with an error.
    h2 = Harness()
    ids, gen = form_group(h2, 1)
    replies: list[Reply] = []
    for req, version in ((hb_req(ids[0], gen), 4), (commit_req(ids[0], gen, {("t", 0): 1}), 8),
                         (sync_req(ids[0], gen), 5), (join_req(ids[0]), 9),
                         (LeaveGroupRequest(group_id=G, member_id="x"), 1)):
        token, out = h2.call(req, version)
        replies += out.replies
    for version in (1, 5, 8):
        token, out = h2.call(OffsetFetchRequest(group_id=G, topics=[OffsetFetchRequestTopic(
            name="t", partition_indexes=[0])]) if version < 8 else OffsetFetchRequest(
            groups=[OffsetFetchRequestGroup(group_id=G)]), version)
        replies += out.replies
    for reply in replies:
        failed = error_reply(reply, E.NOT_COORDINATOR)
        failed.response.encode(failed.version)
        assert failed.token == reply.token and type(failed.response) is type(reply.response)


# ---------------------------------------------------------------------- bounds


def test_bounds() -> None:
    h = Harness(cfg(max_group_size=2, max_groups=3, max_metadata_bytes=100,
                    max_assignment_bytes=100, max_offsets_per_group=2))
    ids, gen = form_group(h, 2)
    token, out = h.call(join_req(), 9, "third")
    third = join_resp(out, token).member_id  # an id is still handed out...
    token, out = h.call(join_req(third), 9, "third")
    r = join_resp(out, token)  # ...but the group is full
    assert r.error_code == E.GROUP_MAX_SIZE_REACHED and r.member_id == ""
    token, out = h.call(join_req(group="big", protocols=[("range", b"x" * 200)]), 9)
    assert code_of(out, token) == E.POLICY_VIOLATION
    # max_groups: G plus two more; the fourth is refused, for joins and standalone commits.
    for name in ("g2", "g3"):
        token, out = h.call(join_req(group=name), 3)
        assert out.replies == []  # parked in the initial delay
    token, out = h.call(join_req(group="g4"), 3)
    assert code_of(out, token) == E.POLICY_VIOLATION
    token, out = h.call(commit_req("", -1, {("t", 0): 1}, group="g4"), 8)
    assert commit_codes(out.reply_for(token)) == {("t", 0): E.POLICY_VIOLATION}
    # max offsets per group.
    token, out = h.call(commit_req(ids[0], gen, {("t", 0): 1, ("t", 1): 1, ("t", 2): 1}), 8)
    assert commit_codes(out.reply_for(token)) == \
        {("t", 0): E.NONE, ("t", 1): E.NONE, ("t", 2): E.POLICY_VIOLATION}
    # An assignment over the bound fails the sync for everyone waiting; the group rebalances.
    tl, _ = h.call(join_req(ids[0]), 9)
    tf, out = h.call(join_req(ids[1]), 9)
    leader = join_resp(out, tl).leader
    other = ids[1] if leader == ids[0] else ids[0]
    tw, out = h.call(sync_req(other, gen + 1), 5)
    assert out.replies == []
    tls, out = h.call(sync_req(leader, gen + 1, {leader: b"x" * 60, other: b"y" * 60}), 5)
    assert code_of(out, tw) == code_of(out, tls) == E.POLICY_VIOLATION
    view = h.coord.describe(G)
    assert view is not None and view.state is GroupState.PREPARING_REBALANCE


# ---------------------------------------------------------------------- random sequences


@dataclass
class Client:
    name: str
    member_id: str = ""
    generation: int = -1
    leader: bool = False
    members: list[str] = field(default_factory=list)
    synced: int = -1  # the generation whose assignment it has
    rejoin: bool = False  # told REBALANCE_IN_PROGRESS
    waiting: set[Hashable] = field(default_factory=set)  # its requests not answered yet


ACTIONS = st.one_of(  # (kind, client or ms, version, protocol choice, flag)
    st.tuples(st.just("join"), st.integers(0, 3), st.sampled_from([1, 3, 4, 7, 9]),
              st.integers(0, 2), st.booleans()),
    st.tuples(st.just("sync"), st.integers(0, 3), st.sampled_from([0, 3, 5]), st.just(0),
              st.booleans()),
    st.tuples(st.just("hb"), st.integers(0, 3), st.sampled_from([0, 4]), st.just(0),
              st.booleans()),
    st.tuples(st.just("leave"), st.integers(0, 3), st.sampled_from([0, 3, 5]), st.just(0),
              st.booleans()),
    st.tuples(st.just("commit"), st.integers(0, 3), st.sampled_from([0, 2, 8, 9]),
              st.just(0), st.booleans()),
    st.tuples(st.just("tick"), st.integers(0, 12_000), st.just(0), st.just(0), st.booleans()),
)
# A client doing what a consumer would next (join, rejoin, sync, heartbeat), mostly, so that
# groups get to Stable; and time mostly passing in steps shorter than a session.
AUTO = st.tuples(st.just("auto"), st.integers(0, 3), st.just(0), st.just(0), st.booleans())
SHORT_TICK = st.tuples(st.just("tick"), st.integers(0, 1500), st.just(0), st.just(0),
                       st.booleans())
STEPS = st.one_of(ACTIONS, *[AUTO] * 14, *[SHORT_TICK] * 4)
PROTOCOL_CHOICES = [[("range", b"r")], [("range", b"r"), ("rr", b"q")], [("rr", b"q")]]


@settings(max_examples=150, deadline=None)
@given(actions=st.lists(STEPS, min_size=30, max_size=80), delay=st.sampled_from([0, 500, 3000]),
       seed=st.integers(0, 2**16))
def test_random_sequences_keep_the_invariants(actions: list[tuple[str, int, int, int, bool]],
                                              delay: int, seed: int) -> None:
    config = CoordinatorConfig(min_session_timeout_ms=10, initial_rebalance_delay_ms=delay,
                               new_member_join_timeout_ms=20_000, max_group_size=3,
                               offsets_retention_ms=30_000,
                               offsets_retention_check_interval_ms=7_000)
    coord = GroupCoordinator(config, rng=random.Random(seed))
    clients = [Client(f"c{i}") for i in range(4)]
    now = 0
    tokens = count()
    issued: dict[Hashable, Client] = {}
    answered: set[Hashable] = set()
    generations: list[int] = [0]
    incarnation = [0]  # a group deleted by retention and created again starts over at 0
    leaders: dict[tuple[int, int], str] = {}  # (incarnation, generation) -> its one leader

    def deliver(replies: Iterable[Reply]) -> None:
        for reply in replies:
            assert reply.token in issued and reply.token not in answered, reply
            answered.add(reply.token)
            reply.response.encode(reply.version)
            c = issued[reply.token]
            c.waiting.discard(reply.token)
            r = reply.response
            if isinstance(r, JoinGroupResponse):
                if r.error_code in (E.NONE, E.MEMBER_ID_REQUIRED):
                    c.member_id = r.member_id
                if r.error_code == E.NONE:
                    c.rejoin = False
                    c.generation = r.generation_id
                    c.leader = r.leader == r.member_id
                    key = (incarnation[0], r.generation_id)
                    assert leaders.setdefault(key, r.leader) == r.leader, "two leaders"
                    c.members = [m.member_id for m in r.members]
                    assert (not c.leader) or c.member_id in c.members
                elif r.error_code == E.UNKNOWN_MEMBER_ID:
                    c.member_id, c.generation = "", -1
            elif isinstance(r, (HeartbeatResponse, SyncGroupResponse)):
                if r.error_code == E.UNKNOWN_MEMBER_ID:
                    c.member_id, c.generation = "", -1
                elif r.error_code == E.ILLEGAL_GENERATION:
                    c.generation = -1
                elif r.error_code == E.REBALANCE_IN_PROGRESS:
                    c.rejoin = True
                elif isinstance(r, SyncGroupResponse) and r.error_code == E.NONE:
                    c.synced = c.generation

    def check() -> None:
        coord.check_invariants()
        view = coord.describe(G)
        if view is None:
            if generations[-1] != -1:
                incarnation[0] += 1
                generations.append(-1)
            return
        assert view.generation >= generations[-1], "the generation went back"
        generations.append(view.generation)
        member_ids = [m.member_id for m in view.members]
        assert len(set(member_ids)) == len(member_ids)
        assert (view.leader is None) == (not member_ids)
        assert view.leader is None or view.leader in member_ids  # one leader, a member
        if view.state is GroupState.STABLE:
            assert all(m.assignment is not None for m in view.members)
        # Kafka's group.max.size: a rebalance may hold more members than the bound until
        # those that do not rejoin are dropped, but never more rejoined ones.
        if view.state is GroupState.PREPARING_REBALANCE:
            assert sum(m.awaiting_join for m in view.members) <= config.max_group_size
        else:
            assert len(member_ids) <= config.max_group_size

    for kind, a, version, choice, flag in actions:
        if kind == "tick":
            now += a
            deliver(coord.tick(now).replies)
            check()
            continue
        c = clients[a]
        if kind == "auto" and c.waiting:
            continue  # a consumer waits for its answer (the random actions do not)
        token = next(tokens)
        issued[token] = c
        c.waiting.add(token)
        request: object
        if kind == "auto":
            if c.member_id == "" or c.generation == -1 or c.rejoin:
                kind, version, choice, flag = "join", 9, 0, True
            elif c.synced != c.generation:
                kind, version, flag = "sync", 5, True
            else:
                kind, version, flag = "hb", 4, True
        if kind == "join":
            request = join_req(c.member_id if flag else "", protocols=PROTOCOL_CHOICES[choice],
                               session=3000, rebalance=5000 + 1000 * a)
        elif kind == "sync":
            assignments = {mid: mid.encode() for mid in c.members} if c.leader and flag \
                else {}
            request = SyncGroupRequest(
                group_id=G, generation_id=c.generation, member_id=c.member_id,
                protocol_type="consumer" if version >= 5 else None,
                protocol_name=("range" if flag else "rr") if version >= 5 else None,
                assignments=[SyncGroupRequestAssignment(member_id=k, assignment=v)
                             for k, v in assignments.items()])
        elif kind == "hb":
            request = hb_req(c.member_id, c.generation if flag else c.generation + 1)
        elif kind == "leave":
            request = LeaveGroupRequest(group_id=G, member_id=c.member_id) if version < 3 \
                else LeaveGroupRequest(group_id=G, members=[MemberIdentity(
                    member_id=c.member_id)])
        else:
            request = commit_req(c.member_id if flag else "", c.generation if flag else -1,
                                 {("t", a): now})
        out = coord.handle(token, request, version=version, now_ms=now,  # type: ignore[arg-type]
                           client_id=c.name)
        deliver(out.replies)
        check()
        now += 1

    # However it was left, time alone answers every parked request and empties the group.
    deliver(coord.tick(now + 10**9).replies)
    check()
    assert answered == set(issued)
    view = coord.describe(G)
    assert view is None or (view.state is GroupState.EMPTY and not view.members)
