"""The etcd v3 API over a Shoal node: one method per etcd RPC, independent of transport. The
gRPC server (server.py) and the JSON gateway (gateway.py) both call these.

Every method takes the etcd request message and a `Call` (the caller's auth token) and
returns etcd's response message, or raises an EtcdError carrying etcd's status and message."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..auth import (
    READWRITE,
    AuthState,
    guard,
    hash_password,
    hidden_counter,
    visible_events,
)
from ..auth.model import key_b64, key_unb64
from ..kv.errors import ErrCompacted, KVError
from ..kv.keyvalue import KeyValue, prefix_end
from ..kv.requests import (
    MAX_LEASE_TTL,
    CompactionRequest,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    LeaseGrantRequest,
    LeaseKeepAliveRequest,
    LeaseLeasesRequest,
    LeaseRevokeRequest,
    LeaseTimeToLiveRequest,
    PutRequest,
    RangeRequest,
    ResponseHeader,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
)
from ..kv.watch import WatchFilter, WatchGate
from ..kv.watch import WatchResponse as HubResponse
from ..kv.watch_queue import DEFAULT_WATCH_STREAM_BYTES, WatchQueue, first_revision
from ..server.config import Member
from ..server.node import Node, NodeError
from . import convert
from . import errors as E
from .auth import Auth, etcd_errors
from .backend import Backend
from .pb import auth_pb2, rpc_pb2, v3election_pb2, v3lock_pb2

log = logging.getLogger("shoal.etcdapi")

VERSION = "3.5.0"  # the etcd API level served (clients gate features on it)
SNAPSHOT_CHUNK = 32 * 1024
# A Watch stream paces each of its watches through a WatchGate: the hub hands a watch a response
# only while nothing of it waits in the stream's queue, and the stream pulls it again as gRPC
# takes its responses, so a stream nobody reads holds at most one response per watch. Behind
# that, the queue's hard bounds (the node's watch_queue_events and watch_queue_bytes per watch,
# WATCH_STREAM_BYTES for all of them) cancel a watch alone, the last resort. Answers to the
# stream's own requests (created, canceled, progress) are never dropped: past
# WATCH_CONTROL_LIMIT of them unsent, the stream stops reading requests.
WATCH_STREAM_BYTES = DEFAULT_WATCH_STREAM_BYTES
WATCH_CONTROL_LIMIT = 1_000
DUPLICATE_WATCH_ID = "mvcc: duplicate watch ID provided on the WatchStream"


@dataclass(frozen=True)
class Call:
    token: str | None = None


def default_client_urls(m: Member) -> list[str]:
    """The etcd endpoint of a member when its client port serves the etcd API (the hook)."""
    return [f"http://{m.client[0]}:{m.client[1]}"] if m.client[1] else []


class EtcdAPI:
    def __init__(self, node: Node, *, timeout: float = 5.0,
                 client_urls: Callable[[Member], list[str]] = default_client_urls,
                 peer_scheme: str = "http"):
        self.node = node
        self.backend = Backend(node, timeout)
        self.auth = Auth(self.backend)
        self.client_urls, self.peer_scheme = client_urls, peer_scheme
        tick_s = node.cfg.tick_ms / 1000
        # etcd's minimum lease TTL: long enough to survive a leader election
        self.min_ttl = max(1, math.ceil(3 * node.cfg.election_ticks * tick_s))
        self.watch_streams: set[WatchStream] = set()  # open Watch RPCs (for stats and tests)

    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        return self.backend.header(revision)

    # ================================================================ KV
    async def Range(self, m: rpc_pb2.RangeRequest, call: Call) -> rpc_pb2.RangeResponse:
        user = self.auth.user_of(call.token)
        req = convert.range_request(m)
        self.auth.check_request(user, req)
        req, fix = self._guard(req)
        resp = fix(await self.backend.read(req, m.serializable))
        return await convert.range_response_sliced(resp, self.header(resp.header.revision))

    async def Put(self, m: rpc_pb2.PutRequest, call: Call) -> rpc_pb2.PutResponse:
        user = self.auth.user_of(call.token)
        req = convert.put_request(m)
        self.auth.check_request(user, req)
        req, _ = self._guard(req)
        resp = await self.backend.write(req)
        return convert.put_response(resp, self.header(resp.header.revision))

    async def DeleteRange(self, m: rpc_pb2.DeleteRangeRequest,
                          call: Call) -> rpc_pb2.DeleteRangeResponse:
        user = self.auth.user_of(call.token)
        req = convert.delete_request(m)
        self.auth.check_request(user, req)
        op, fix = self._guard(req)
        resp = fix(await self.backend.write(op))
        return convert.delete_response(resp, self.header(resp.header.revision))

    async def Txn(self, m: rpc_pb2.TxnRequest, call: Call) -> rpc_pb2.TxnResponse:
        user = self.auth.user_of(call.token)
        req = convert.txn_request(m)
        self.auth.check_request(user, req)
        op, fix = self._guard(req)
        if not (op.success or op.failure) and not op.compare:
            resp = TxnResponse(ResponseHeader(self.node.kv.revision), True)
        else:
            # a txn without writes goes through the log too: linearizable, compares and ranges
            # atomic, and the store moves no revision for it
            resp = await self.backend.write(op)
        resp = fix(resp)
        return convert.txn_response(resp, self.header(resp.header.revision))

    async def Compact(self, m: rpc_pb2.CompactionRequest, call: Call) -> rpc_pb2.CompactionResponse:
        self.auth.user_of(call.token)
        resp = await self.backend.write(CompactionRequest(max(0, m.revision)))
        return rpc_pb2.CompactionResponse(header=self.header(resp.header.revision))

    def _guard(self, op: Any) -> tuple[Any, Callable[[Any], Any]]:
        """Keep the reserved keyspace out of users' reach (shoal.auth.reserved)."""
        with etcd_errors():
            return guard(op, hidden_counter(self.node.kv))

    # ================================================================ Lease
    async def LeaseGrant(self, m: rpc_pb2.LeaseGrantRequest, call: Call) -> rpc_pb2.LeaseGrantResponse:
        self.auth.user_of(call.token)
        if m.TTL > MAX_LEASE_TTL:
            raise E.LEASE_TTL_TOO_LARGE
        if m.ID < 0:
            raise E.LEASE_NOT_FOUND
        resp = await self.backend.write(LeaseGrantRequest(max(m.TTL, self.min_ttl), m.ID))
        return rpc_pb2.LeaseGrantResponse(header=self.header(resp.header.revision), ID=resp.id,
                                          TTL=resp.ttl)

    async def LeaseRevoke(self, m: rpc_pb2.LeaseRevokeRequest, call: Call) -> rpc_pb2.LeaseRevokeResponse:
        self.auth.user_of(call.token)
        if m.ID <= 0:
            raise E.LEASE_NOT_FOUND
        resp = await self.backend.write(LeaseRevokeRequest(m.ID))
        return rpc_pb2.LeaseRevokeResponse(header=self.header(resp.header.revision))

    async def keep_alive_once(self, lease_id: int) -> rpc_pb2.LeaseKeepAliveResponse:
        if lease_id <= 0:
            return rpc_pb2.LeaseKeepAliveResponse(header=self.header(), ID=lease_id, TTL=0)
        try:
            resp = await self.backend.write(LeaseKeepAliveRequest(lease_id))
        except E.EtcdError as exc:
            if exc is not E.LEASE_NOT_FOUND:
                raise
            return rpc_pb2.LeaseKeepAliveResponse(header=self.header(), ID=lease_id, TTL=0)
        return rpc_pb2.LeaseKeepAliveResponse(header=self.header(resp.header.revision),
                                              ID=resp.id, TTL=resp.ttl)

    async def LeaseKeepAlive(self, requests: AsyncIterator[rpc_pb2.LeaseKeepAliveRequest],
                             call: Call) -> AsyncIterator[rpc_pb2.LeaseKeepAliveResponse]:
        self.auth.user_of(call.token)
        async for m in requests:
            yield await self.keep_alive_once(m.ID)

    async def LeaseTimeToLive(self, m: rpc_pb2.LeaseTimeToLiveRequest,
                              call: Call) -> rpc_pb2.LeaseTimeToLiveResponse:
        self.auth.user_of(call.token)
        if m.ID <= 0:
            return rpc_pb2.LeaseTimeToLiveResponse(header=self.header(), ID=m.ID, TTL=-1)
        resp = await self.backend.read(LeaseTimeToLiveRequest(m.ID, keys=m.keys))
        return rpc_pb2.LeaseTimeToLiveResponse(
            header=self.header(resp.header.revision), ID=m.ID, TTL=resp.ttl,
            grantedTTL=resp.granted_ttl, keys=list(resp.keys))

    async def LeaseLeases(self, m: rpc_pb2.LeaseLeasesRequest, call: Call) -> rpc_pb2.LeaseLeasesResponse:
        self.auth.user_of(call.token)
        resp = await self.backend.read(LeaseLeasesRequest())
        return rpc_pb2.LeaseLeasesResponse(header=self.header(resp.header.revision),
                                           leases=[rpc_pb2.LeaseStatus(ID=i) for i in resp.leases])

    # ================================================================ Watch
    async def Watch(self, requests: AsyncIterator[rpc_pb2.WatchRequest],
                    call: Call) -> AsyncIterator[rpc_pb2.WatchResponse]:
        user = self.auth.user_of(call.token)
        stream = WatchStream(self, user)
        reader = asyncio.create_task(stream.read(requests))
        self.watch_streams.add(stream)
        try:
            while True:
                item = await stream.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.watch_streams.discard(stream)
            reader.cancel()
            stream.close()

    # ================================================================ Cluster
    def _member(self, m: Member, learners: set[int]) -> rpc_pb2.Member:
        return rpc_pb2.Member(ID=m.id, name=f"shoal-{m.id}",
                              peerURLs=[f"{self.peer_scheme}://{m.peer[0]}:{m.peer[1]}"],
                              clientURLs=self.client_urls(m), isLearner=m.id in learners)

    def _members(self) -> list[rpc_pb2.Member]:
        learners = set(self.node.core.status().conf.learners)
        return [self._member(m, learners) for _, m in sorted(self.node.members.items())]

    async def MemberList(self, m: rpc_pb2.MemberListRequest, call: Call) -> rpc_pb2.MemberListResponse:
        self.auth.user_of(call.token)
        if m.linearizable:
            await self.backend.barrier()
        return rpc_pb2.MemberListResponse(header=self.header(), members=self._members())

    def _parse_peer(self, urls: list[str], client: tuple[str, int] | None = None
                    ) -> tuple[tuple[str, int], tuple[str, int]]:
        """A member's peer address from its first peer URL. Shoal members also have a client
        address, which etcd's MemberAdd cannot carry: give it as `?client=host:port` on the
        peer URL, or it stays unknown (port 0, no client URLs) as with an unstarted etcd
        member."""
        if not urls:
            raise E.MEMBER_BAD_URLS
        try:
            u = urlsplit(urls[0])
            if u.scheme not in ("http", "https") or not u.hostname or u.port is None:
                raise ValueError(urls[0])
            peer = (u.hostname, u.port)
            q = parse_qs(u.query).get("client")
            if q:
                host, _, port = q[0].rpartition(":")
                client = (host or u.hostname, int(port))
        except ValueError:
            raise E.MEMBER_BAD_URLS from None
        return peer, client if client is not None else (peer[0], 0)

    async def _change(self, op: str, member: Member | None, node_id: int) -> None:
        body_op = {"add": "member_add", "add-learner": "member_add", "remove": "member_remove"}[op]
        body: dict[str, Any] = {"id": node_id}
        if member is not None:
            body.update(peer=f"{member.peer[0]}:{member.peer[1]}",
                        client=f"{member.client[0]}:{member.client[1]}",
                        learner=op == "add-learner")
        await self.backend.leader_call(
            lambda: self.node.change_membership(op, member, node_id, self.backend.timeout),
            body_op, body)
        await self.backend.barrier()  # the member list we answer with includes the change

    async def MemberAdd(self, m: rpc_pb2.MemberAddRequest, call: Call) -> rpc_pb2.MemberAddResponse:
        self.auth.check_admin(self.auth.user_of(call.token))
        peer, client = self._parse_peer(list(m.peerURLs))
        if any(x.peer == peer for x in self.node.members.values()):
            raise E.PEER_URL_EXIST
        new_id = max(self.node.members, default=0) + 1
        member = Member(new_id, peer, client)
        await self._change("add-learner" if m.isLearner else "add", member, new_id)
        learners = {new_id} if m.isLearner else set()
        return rpc_pb2.MemberAddResponse(header=self.header(), member=self._member(member, learners),
                                         members=self._members())

    async def MemberRemove(self, m: rpc_pb2.MemberRemoveRequest,
                           call: Call) -> rpc_pb2.MemberRemoveResponse:
        self.auth.check_admin(self.auth.user_of(call.token))
        if m.ID not in self.node.members:
            raise E.MEMBER_NOT_FOUND
        await self._change("remove", None, m.ID)
        return rpc_pb2.MemberRemoveResponse(header=self.header(), members=self._members())

    async def MemberUpdate(self, m: rpc_pb2.MemberUpdateRequest,
                           call: Call) -> rpc_pb2.MemberUpdateResponse:
        self.auth.check_admin(self.auth.user_of(call.token))
        old = self.node.members.get(m.ID)
        if old is None:
            raise E.MEMBER_NOT_FOUND
        peer, client = self._parse_peer(list(m.peerURLs), old.client)
        learner = m.ID in self.node.core.status().conf.learners
        # re-adding a member with its role unchanged only replaces its addresses
        await self._change("add-learner" if learner else "add", Member(m.ID, peer, client), m.ID)
        return rpc_pb2.MemberUpdateResponse(header=self.header(), members=self._members())

    async def MemberPromote(self, m: rpc_pb2.MemberPromoteRequest,
                            call: Call) -> rpc_pb2.MemberPromoteResponse:
        self.auth.check_admin(self.auth.user_of(call.token))
        member = self.node.members.get(m.ID)
        if member is None:
            raise E.MEMBER_NOT_FOUND
        if m.ID not in self.node.core.status().conf.learners:
            raise E.MEMBER_NOT_LEARNER
        try:
            await self._change("add", member, m.ID)
        except E.EtcdError as exc:
            if exc.code == E.C.INVALID_ARGUMENT:  # the core refused: the learner lags
                raise E.LEARNER_NOT_READY from None
            raise
        return rpc_pb2.MemberPromoteResponse(header=self.header(), members=self._members())

    # ================================================================ Maintenance
    async def Status(self, m: rpc_pb2.StatusRequest, call: Call) -> rpc_pb2.StatusResponse:
        """`leader` is a member id as MemberList gives it (Shoal's node id, in both). dbSize is
        the store's estimated bytes, the size the quota is checked against; the errors name
        a missing leader and every alarm, as etcd's do."""
        st = self.node.status()
        errors = [] if self.node.leader else ["etcdserver: no leader"]
        errors += [f"memberID:{member} alarm:{alarm} " for member, alarm in st["alarms"]]
        size = int(st["db_size"])
        return rpc_pb2.StatusResponse(
            header=self.header(), version=VERSION, dbSize=size, leader=st["leader"],
            raftIndex=st["commit"], raftTerm=st["term"], raftAppliedIndex=st["applied"],
            errors=errors, dbSizeInUse=size, isLearner=self.node.id in st["learners"],
            dbSizeQuota=self.node.cfg.quota_backend_bytes)

    async def Alarm(self, m: rpc_pb2.AlarmRequest, call: Call) -> rpc_pb2.AlarmResponse:
        """GET lists the alarms (of one type, unless NONE) as of a linearizable read;
        ACTIVATE and DEACTIVATE go through the log, on the leader, and list what they changed.
        A member whose own disk refuses writes lists its NOSPACE too (not replicated)."""
        user = self.auth.user_of(call.token)
        kind = rpc_pb2.AlarmType.Name(m.alarm)
        if m.action == rpc_pb2.AlarmRequest.GET:
            await self.backend.barrier()
            found = [(n, a) for n, a in self.node.alarms() if m.alarm == rpc_pb2.NONE or a == kind]
        else:
            self.auth.check_admin(user)
            if m.alarm == rpc_pb2.NONE:
                return rpc_pb2.AlarmResponse(header=self.header())  # etcd: nothing to change
            action = "activate" if m.action == rpc_pb2.AlarmRequest.ACTIVATE else "deactivate"
            body = {"action": action, "member": m.memberID, "alarm": kind}
            found = await self.backend.leader_call(
                lambda: self.node.alarm(action, m.memberID, kind, self.backend.timeout),
                "alarm", body)
        return rpc_pb2.AlarmResponse(header=self.header(), alarms=[
            rpc_pb2.AlarmMember(memberID=n, alarm=rpc_pb2.AlarmType.Value(a)) for n, a in found])

    async def Defragment(self, m: rpc_pb2.DefragmentRequest, call: Call) -> rpc_pb2.DefragmentResponse:
        self.auth.check_admin(self.auth.user_of(call.token))
        return rpc_pb2.DefragmentResponse(header=self.header())  # nothing to defragment

    async def Hash(self, m: rpc_pb2.HashRequest, call: Call) -> rpc_pb2.HashResponse:
        self.auth.check_admin(self.auth.user_of(call.token))
        return rpc_pb2.HashResponse(header=self.header(), hash=self.node.kv.hash() & 0xFFFFFFFF)

    async def HashKV(self, m: rpc_pb2.HashKVRequest, call: Call) -> rpc_pb2.HashKVResponse:
        self.auth.check_admin(self.auth.user_of(call.token))
        try:
            h = self.node.kv.hash_kv(max(0, m.revision))
        except KVError as exc:
            raise E.from_exception(exc) from None
        return rpc_pb2.HashKVResponse(header=self.header(), hash=h.hash & 0xFFFFFFFF,
                                      compact_revision=h.compact_revision, hash_revision=h.revision)

    async def Snapshot(self, m: rpc_pb2.SnapshotRequest,
                       call: Call) -> AsyncIterator[rpc_pb2.SnapshotResponse]:
        """Shoal's snapshot, not a bbolt file, framed so etcd tools accept the stream: etcd's
        snapshot is a whole number of 512-byte pages followed by the sha256 of those pages
        (etcdctl checks exactly that). So: `SNAPSHOT_MAGIC`, the 8-byte big-endian length of
        `Node.snapshot_bytes()`, those bytes, zero padding to a multiple of 512, the sha256."""
        self.auth.check_admin(self.auth.user_of(call.token))
        await self.backend.barrier()
        header = self.header()
        data = frame_snapshot(self.node.snapshot_bytes())
        for off in range(0, len(data), SNAPSHOT_CHUNK):
            chunk = data[off:off + SNAPSHOT_CHUNK]
            yield rpc_pb2.SnapshotResponse(header=header, blob=chunk, version=VERSION,
                                           remaining_bytes=len(data) - off - len(chunk))

    async def MoveLeader(self, m: rpc_pb2.MoveLeaderRequest, call: Call) -> rpc_pb2.MoveLeaderResponse:
        self.auth.check_admin(self.auth.user_of(call.token))
        if m.targetID not in self.node.core.status().conf.voters or m.targetID == 0:
            raise E.BAD_LEADER_TRANSFEREE
        if self.node.role != "leader":
            raise E.NOT_LEADER  # etcd: MoveLeader must be sent to the leader
        try:
            await self.node.transfer_leadership(m.targetID)
        except NodeError as exc:
            raise E.from_exception(exc) from None
        loop = asyncio.get_running_loop()
        end = loop.time() + self.backend.timeout
        while self.node.leader != m.targetID:
            if loop.time() > end:
                raise E.TIMEOUT
            await asyncio.sleep(0.02)
        return rpc_pb2.MoveLeaderResponse(header=self.header())

    # ================================================================ Auth
    async def _auth_change(self, call: Call, change: Callable[[AuthState], None],
                           admin: bool = True) -> rpc_pb2.ResponseHeader:
        user = self.auth.user_of(call.token)
        if admin:
            self.auth.check_admin(user)
        await self.auth.update(change)
        return self.header()

    async def AuthEnable(self, m: rpc_pb2.AuthEnableRequest, call: Call) -> rpc_pb2.AuthEnableResponse:
        def change(st: AuthState) -> None:
            if "root" not in st.users:
                raise E.ROOT_USER_NOT_EXIST
            if "root" not in st.users["root"]["roles"]:
                raise E.ROOT_ROLE_NOT_EXIST
            st.enabled = True
            st.secret = st.secret or secrets.token_hex(32)
        return rpc_pb2.AuthEnableResponse(header=await self._auth_change(call, change))

    async def AuthDisable(self, m: rpc_pb2.AuthDisableRequest, call: Call) -> rpc_pb2.AuthDisableResponse:
        def change(st: AuthState) -> None:
            st.enabled = False
        return rpc_pb2.AuthDisableResponse(header=await self._auth_change(call, change))

    async def AuthStatus(self, m: rpc_pb2.AuthStatusRequest, call: Call) -> rpc_pb2.AuthStatusResponse:
        st = self.auth.state()
        return rpc_pb2.AuthStatusResponse(header=self.header(), enabled=st.enabled,
                                          authRevision=st.revision)

    async def Authenticate(self, m: rpc_pb2.AuthenticateRequest,
                           call: Call) -> rpc_pb2.AuthenticateResponse:
        await self.backend.barrier()  # the latest users and passwords
        with etcd_errors():
            token = await asyncio.to_thread(self.auth.state().login, m.name, m.password)
        return rpc_pb2.AuthenticateResponse(header=self.header(), token=token)

    async def UserAdd(self, m: rpc_pb2.AuthUserAddRequest, call: Call) -> rpc_pb2.AuthUserAddResponse:
        if not m.name:
            raise E.USER_EMPTY
        no_password = m.options.no_password if m.HasField("options") else False
        pw = "" if no_password else await asyncio.to_thread(hash_password, m.password)

        def change(st: AuthState) -> None:
            if m.name in st.users:
                raise E.USER_ALREADY_EXIST
            st.users[m.name] = {"pw": pw, "roles": []}
        return rpc_pb2.AuthUserAddResponse(header=await self._auth_change(call, change))

    async def UserGet(self, m: rpc_pb2.AuthUserGetRequest, call: Call) -> rpc_pb2.AuthUserGetResponse:
        user = self.auth.user_of(call.token)
        if user is not None and user != m.name:
            self.auth.check_admin(user)
        st = self.auth.state()
        if m.name not in st.users:
            raise E.USER_NOT_FOUND
        return rpc_pb2.AuthUserGetResponse(header=self.header(), roles=sorted(st.user_roles(m.name)))

    async def UserList(self, m: rpc_pb2.AuthUserListRequest, call: Call) -> rpc_pb2.AuthUserListResponse:
        self.auth.check_admin(self.auth.user_of(call.token))
        return rpc_pb2.AuthUserListResponse(header=self.header(), users=sorted(self.auth.state().users))

    async def UserDelete(self, m: rpc_pb2.AuthUserDeleteRequest,
                         call: Call) -> rpc_pb2.AuthUserDeleteResponse:
        def change(st: AuthState) -> None:
            if st.enabled and m.name == "root":
                raise E.INVALID_AUTH_MGMT
            if st.users.pop(m.name, None) is None:
                raise E.USER_NOT_FOUND
        return rpc_pb2.AuthUserDeleteResponse(header=await self._auth_change(call, change))

    async def UserChangePassword(self, m: rpc_pb2.AuthUserChangePasswordRequest,
                                 call: Call) -> rpc_pb2.AuthUserChangePasswordResponse:
        pw = await asyncio.to_thread(hash_password, m.password)

        def change(st: AuthState) -> None:
            if m.name not in st.users:
                raise E.USER_NOT_FOUND
            st.users[m.name]["pw"] = pw
        return rpc_pb2.AuthUserChangePasswordResponse(header=await self._auth_change(call, change))

    async def UserGrantRole(self, m: rpc_pb2.AuthUserGrantRoleRequest,
                            call: Call) -> rpc_pb2.AuthUserGrantRoleResponse:
        def change(st: AuthState) -> None:
            if m.user not in st.users:
                raise E.USER_NOT_FOUND
            if m.role != "root" and m.role not in st.roles:
                raise E.ROLE_NOT_FOUND
            roles = st.users[m.user]["roles"]
            if m.role not in roles:
                roles.append(m.role)
        return rpc_pb2.AuthUserGrantRoleResponse(header=await self._auth_change(call, change))

    async def UserRevokeRole(self, m: rpc_pb2.AuthUserRevokeRoleRequest,
                             call: Call) -> rpc_pb2.AuthUserRevokeRoleResponse:
        def change(st: AuthState) -> None:
            if m.name not in st.users:
                raise E.USER_NOT_FOUND
            if st.enabled and m.name == "root" and m.role == "root":
                raise E.INVALID_AUTH_MGMT
            roles = st.users[m.name]["roles"]
            if m.role not in roles:
                raise E.ROLE_NOT_GRANTED
            roles.remove(m.role)
        return rpc_pb2.AuthUserRevokeRoleResponse(header=await self._auth_change(call, change))

    async def RoleAdd(self, m: rpc_pb2.AuthRoleAddRequest, call: Call) -> rpc_pb2.AuthRoleAddResponse:
        if not m.name:
            raise E.ROLE_EMPTY

        def change(st: AuthState) -> None:
            if m.name in st.roles:
                raise E.ROLE_ALREADY_EXIST
            st.roles[m.name] = []
        return rpc_pb2.AuthRoleAddResponse(header=await self._auth_change(call, change))

    async def RoleGet(self, m: rpc_pb2.AuthRoleGetRequest, call: Call) -> rpc_pb2.AuthRoleGetResponse:
        user = self.auth.user_of(call.token)
        st = self.auth.state()
        if user is not None and m.role not in st.user_roles(user):
            self.auth.check_admin(user)
        if m.role not in st.roles:
            raise E.ROLE_NOT_FOUND
        perms = [auth_pb2.Permission(permType=t, key=key_unb64(k), range_end=key_unb64(e))  # type: ignore[arg-type]
                 for t, k, e in st.roles[m.role]]
        if m.role == "root":
            perms = [auth_pb2.Permission(permType=READWRITE, key=b"\0", range_end=b"\0")]  # type: ignore[arg-type]
        return rpc_pb2.AuthRoleGetResponse(header=self.header(), perm=perms)

    async def RoleList(self, m: rpc_pb2.AuthRoleListRequest, call: Call) -> rpc_pb2.AuthRoleListResponse:
        self.auth.check_admin(self.auth.user_of(call.token))
        return rpc_pb2.AuthRoleListResponse(header=self.header(), roles=sorted(self.auth.state().roles))

    async def RoleDelete(self, m: rpc_pb2.AuthRoleDeleteRequest,
                         call: Call) -> rpc_pb2.AuthRoleDeleteResponse:
        def change(st: AuthState) -> None:
            if st.enabled and m.role == "root":
                raise E.INVALID_AUTH_MGMT
            if st.roles.pop(m.role, None) is None:
                raise E.ROLE_NOT_FOUND
            for u in st.users.values():
                if m.role in u["roles"]:
                    u["roles"].remove(m.role)
        return rpc_pb2.AuthRoleDeleteResponse(header=await self._auth_change(call, change))

    async def RoleGrantPermission(self, m: rpc_pb2.AuthRoleGrantPermissionRequest,
                                  call: Call) -> rpc_pb2.AuthRoleGrantPermissionResponse:
        if not m.HasField("perm") or not m.perm.key:
            raise E.EMPTY_KEY
        perm = [int(m.perm.permType), key_b64(m.perm.key), key_b64(m.perm.range_end)]

        def change(st: AuthState) -> None:
            if m.name not in st.roles:
                raise E.ROLE_NOT_FOUND
            perms = [p for p in st.roles[m.name] if p[1:] != perm[1:]]
            st.roles[m.name] = sorted([*perms, perm], key=lambda p: (p[1], p[2]))
        return rpc_pb2.AuthRoleGrantPermissionResponse(header=await self._auth_change(call, change))

    async def RoleRevokePermission(self, m: rpc_pb2.AuthRoleRevokePermissionRequest,
                                   call: Call) -> rpc_pb2.AuthRoleRevokePermissionResponse:
        span = [key_b64(m.key), key_b64(m.range_end)]

        def change(st: AuthState) -> None:
            if m.role not in st.roles:
                raise E.ROLE_NOT_FOUND
            kept = [p for p in st.roles[m.role] if p[1:] != span]
            if len(kept) == len(st.roles[m.role]):
                raise E.PERMISSION_NOT_GRANTED
            st.roles[m.role] = kept
        return rpc_pb2.AuthRoleRevokePermissionResponse(header=await self._auth_change(call, change))

    # ================================================================ Lock (v3lockpb)
    async def Lock(self, m: v3lock_pb2.LockRequest, call: Call) -> v3lock_pb2.LockResponse:
        """etcd's v3lock: a concurrency.Mutex on `name` held by the caller's lease (kept alive
        by this server while the caller waits, as etcd's session does)."""
        user = self.auth.user_of(call.token)
        if not m.name:
            raise E.EMPTY_LOCK_NAME
        prefix = m.name + b"/"
        self.auth.check(user, prefix, prefix_end(prefix), write=True)
        key = prefix + f"{m.lease:x}".encode()
        async with self._keeping_alive(m.lease):
            rev, header_rev = await self._enqueue(prefix, key, b"", m.lease)
            try:
                await self._wait_turn(prefix, rev)
                if (await self.backend.read(RangeRequest(key))).count == 0:
                    raise E.SESSION_EXPIRED
            except BaseException:
                await self._delete_quietly(key)
                raise
        return v3lock_pb2.LockResponse(header=self.header(), key=key)

    async def Unlock(self, m: v3lock_pb2.UnlockRequest, call: Call) -> v3lock_pb2.UnlockResponse:
        user = self.auth.user_of(call.token)
        if not m.key:
            raise E.EMPTY_KEY
        self.auth.check(user, m.key, b"", write=True)
        resp = await self.backend.write(DeleteRangeRequest(m.key))
        return v3lock_pb2.UnlockResponse(header=self.header(resp.header.revision))

    async def _enqueue(self, prefix: bytes, key: bytes, value: bytes, lease: int) -> tuple[int, int]:
        """Put our key unless it exists; returns its create revision and the txn's revision."""
        resp = await self.backend.write(TxnRequest(
            (Compare(key, CompareTarget.CREATE, CompareResult.EQUAL, 0),),
            (PutRequest(key, value, lease=lease),),
            (RangeRequest(key),)))
        if resp.succeeded:
            return resp.header.revision, resp.header.revision
        return resp.responses[0].kvs[0].create_revision, resp.header.revision

    async def _wait_turn(self, prefix: bytes, rev: int) -> None:
        """etcd's waitDeletes: until no key under `prefix` was created before `rev`."""
        while True:
            before = await self.backend.read(RangeRequest(
                prefix, prefix_end(prefix), limit=1, sort_order=SortOrder.DESCEND,
                sort_target=SortTarget.CREATE, max_create_revision=rev - 1))
            if not before.kvs:
                return
            await self._wait_deleted(before.kvs[0].key, before.header.revision + 1)

    async def _wait_deleted(self, key: bytes, start: int) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def sink(resp: HubResponse) -> None:
            if not done.done() and (resp.canceled or any(e.type == 1 for e in resp.events)):
                done.set_result(None)

        try:
            created = self.node.watch(sink, key=key, start_revision=start)
        except ErrCompacted:
            return  # history moved on: the caller looks again
        except KVError as exc:
            raise E.from_exception(exc) from None
        try:
            await done
        finally:
            self.node.cancel_watch(created.watch_id)

    async def _delete_quietly(self, key: bytes) -> None:
        try:
            await asyncio.shield(self.backend.write(DeleteRangeRequest(key)))
        except Exception:  # noqa: BLE001 - best effort; the lease still bounds the key's life
            log.info("could not delete %r after a failed lock or campaign", key)

    def _keeping_alive(self, lease: int) -> _KeepAlive:
        return _KeepAlive(self, lease)

    # ================================================================ Election (v3electionpb)
    async def Campaign(self, m: v3election_pb2.CampaignRequest,
                       call: Call) -> v3election_pb2.CampaignResponse:
        user = self.auth.user_of(call.token)
        if not m.name:
            raise E.EtcdError(E.C.INVALID_ARGUMENT, "election: empty name")
        prefix = m.name + b"/"
        self.auth.check(user, prefix, prefix_end(prefix), write=True)
        key = prefix + f"{m.lease:x}".encode()
        async with self._keeping_alive(m.lease):
            rev, _ = await self._enqueue(prefix, key, m.value, m.lease)
            try:
                current = await self.backend.read(RangeRequest(key))
                if current.kvs and current.kvs[0].value != m.value:
                    await self._proclaim(key, rev, m.lease, m.value)
                await self._wait_turn(prefix, rev)
            except BaseException:
                await self._delete_quietly(key)
                raise
        leader = v3election_pb2.LeaderKey(name=m.name, key=key, rev=rev, lease=m.lease)
        return v3election_pb2.CampaignResponse(header=self.header(), leader=leader)

    async def _proclaim(self, key: bytes, rev: int, lease: int, value: bytes) -> int:
        resp = await self.backend.write(TxnRequest(
            (Compare(key, CompareTarget.CREATE, CompareResult.EQUAL, rev),),
            (PutRequest(key, value, lease=lease),)))
        if not resp.succeeded:
            raise E.ELECTION_NOT_LEADER
        return resp.header.revision

    async def Proclaim(self, m: v3election_pb2.ProclaimRequest,
                       call: Call) -> v3election_pb2.ProclaimResponse:
        user = self.auth.user_of(call.token)
        if not m.HasField("leader"):
            raise E.MISSING_LEADER_KEY
        self.auth.check(user, m.leader.key, b"", write=True)
        rev = await self._proclaim(m.leader.key, m.leader.rev, m.leader.lease, m.value)
        return v3election_pb2.ProclaimResponse(header=self.header(rev))

    async def _leader_kv(self, name: bytes) -> tuple[KeyValue | None, int]:
        prefix = name + b"/"
        resp = await self.backend.read(RangeRequest(
            prefix, prefix_end(prefix), limit=1, sort_order=SortOrder.ASCEND,
            sort_target=SortTarget.CREATE))
        return (resp.kvs[0] if resp.kvs else None), resp.header.revision

    async def Leader(self, m: v3election_pb2.LeaderRequest, call: Call) -> v3election_pb2.LeaderResponse:
        user = self.auth.user_of(call.token)
        prefix = m.name + b"/"
        self.auth.check(user, prefix, prefix_end(prefix), write=False)
        kv, rev = await self._leader_kv(m.name)
        if kv is None:
            raise E.ELECTION_NO_LEADER
        return v3election_pb2.LeaderResponse(header=self.header(rev), kv=convert.keyvalue(kv))

    async def Observe(self, m: v3election_pb2.LeaderRequest,
                      call: Call) -> AsyncIterator[v3election_pb2.LeaderResponse]:
        """Every change of leader or of its value, in order, starting with the current one."""
        user = self.auth.user_of(call.token)
        prefix = m.name + b"/"
        self.auth.check(user, prefix, prefix_end(prefix), write=False)
        changed = asyncio.Event()  # set by any change: one flag, not a queue of them
        last: KeyValue | None = None
        kv, rev = await self._leader_kv(m.name)
        created = self.node.watch(lambda resp: changed.set(), key=prefix,
                                  range_end=prefix_end(prefix), start_revision=rev + 1)
        try:
            while True:
                if kv is not None and (last is None or (kv.key, kv.mod_revision) != (last.key, last.mod_revision)):
                    last = kv
                    yield v3election_pb2.LeaderResponse(header=self.header(rev), kv=convert.keyvalue(kv))
                await changed.wait()
                changed.clear()
                kv, rev = await self._leader_kv(m.name)
        finally:
            self.node.cancel_watch(created.watch_id)

    async def Resign(self, m: v3election_pb2.ResignRequest, call: Call) -> v3election_pb2.ResignResponse:
        user = self.auth.user_of(call.token)
        if not m.HasField("leader"):
            raise E.MISSING_LEADER_KEY
        self.auth.check(user, m.leader.key, b"", write=True)
        resp = await self.backend.write(TxnRequest(
            (Compare(m.leader.key, CompareTarget.CREATE, CompareResult.EQUAL, m.leader.rev),),
            (DeleteRangeRequest(m.leader.key),)))
        return v3election_pb2.ResignResponse(header=self.header(resp.header.revision))


# ==================================================================== helpers


class _KeepAlive:
    """Keeps a lease alive while a Lock or Campaign waits; the lease must exist."""

    def __init__(self, api: EtcdAPI, lease: int):
        self.api, self.lease = api, lease
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _KeepAlive:
        if self.lease == 0:
            return self
        ttl = await self.api.backend.read(LeaseTimeToLiveRequest(self.lease))
        if ttl.ttl < 0:
            raise E.LEASE_NOT_FOUND
        self.task = asyncio.create_task(self._run(max(ttl.granted_ttl / 3, 0.2)))
        return self

    async def _run(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                await self.api.backend.write(LeaseKeepAliveRequest(self.lease))
            except E.EtcdError as exc:
                if exc is E.LEASE_NOT_FOUND:
                    return

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None:
            self.task.cancel()


class WatchStream:
    """One Watch RPC: many watchers, ids local to the stream, responses in one bounded queue
    (kv/watch_queue.py), each watcher paced by its gate; one that still overflows is canceled
    alone."""

    def __init__(self, api: EtcdAPI, user: str | None):
        self.api, self.node, self.user = api, api.node, user
        cfg = api.node.cfg
        self.out: WatchQueue[Any] = WatchQueue(cfg.watch_queue_events, cfg.watch_queue_bytes,
                                               max(WATCH_STREAM_BYTES, cfg.watch_queue_bytes))
        self._ready = asyncio.Event()  # something is queued, or a held watch may be pulled
        self._room = asyncio.Event()  # the stream's own answers are below WATCH_CONTROL_LIMIT
        self._room.set()
        self.hub_ids: dict[int, int] = {}  # stream watch id -> hub watch id
        self.gates: dict[int, WatchGate] = {}  # stream watch id -> its gate
        self._held: dict[int, WatchGate] = {}  # watches the hub holds back for us: pull them
        self.next_id = 0
        self.closed = False

    async def read(self, requests: AsyncIterator[rpc_pb2.WatchRequest]) -> None:
        try:
            async for req in requests:
                self.handle(req)
                if self.out.control >= WATCH_CONTROL_LIMIT:  # the client is not reading us
                    self._room.clear()
                    await self._room.wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported to the client as the stream's end
            self._end(exc)
            return
        self._end(None)

    async def get(self) -> Any:
        """The next response to send, in order; None or an exception ends the stream. Called
        as gRPC takes each response, so this is where held-back watches are pulled again."""
        while True:
            self._pull_held()
            if self.out:
                break
            self._ready.clear()
            await self._ready.wait()
        item = self.out.pop()
        if self.out.control < WATCH_CONTROL_LIMIT:
            self._room.set()
        return item

    def _has_room(self, sid: int) -> bool:
        if self.closed or sid not in self.gates:
            return False
        if not self.out.holds(sid) and self.out.bytes < self.out.max_total_bytes // 2:
            return True
        self._held[sid] = self.gates[sid]
        return False

    def _pull_held(self) -> None:
        for sid, gate in list(self._held.items()):
            if sid not in self.hub_ids:
                self._held.pop(sid, None)
            elif self._has_room(sid):
                resp = gate.pull()
                if resp is None:  # caught up: its next events come through the node's polls
                    self._held.pop(sid, None)
                else:
                    self.emit(sid, resp)

    def _end(self, item: BaseException | None) -> None:
        self.out.push(None, item)
        self._ready.set()

    def send(self, resp: rpc_pb2.WatchResponse) -> None:
        """An answer of the stream's own (created, canceled, progress): never dropped."""
        self.out.push(None, resp, nbytes=resp.ByteSize())
        self._ready.set()

    def _forget(self, sid: int) -> int | None:
        """Stop following a watch here; its hub watch id, if it was live."""
        gate = self.gates.pop(sid, None)
        if gate is not None:
            gate.close()
        self._held.pop(sid, None)
        self.out.forget(sid)
        return self.hub_ids.pop(sid, None)

    def handle(self, req: rpc_pb2.WatchRequest) -> None:
        kind = req.WhichOneof("request_union")
        if kind == "create_request":
            self.create(req.create_request)
        elif kind == "cancel_request":
            sid = req.cancel_request.watch_id
            hub = self._forget(sid)
            if hub is not None:
                self.node.cancel_watch(hub)
                self.send(rpc_pb2.WatchResponse(header=self.api.header(), watch_id=sid, canceled=True))
        elif kind == "progress_request":
            self.send(rpc_pb2.WatchResponse(header=self.api.header(), watch_id=-1))

    def create(self, c: rpc_pb2.WatchCreateRequest) -> None:
        header = self.api.header()
        try:
            self.api.auth.check(self.user, c.key, c.range_end, write=False)
        except E.EtcdError as exc:
            self.send(rpc_pb2.WatchResponse(header=header, watch_id=c.watch_id, created=True,
                                            canceled=True, cancel_reason=exc.message))
            return
        if c.watch_id:
            sid = c.watch_id
            if sid in self.hub_ids or sid < 0:
                self.send(rpc_pb2.WatchResponse(header=header, watch_id=sid, created=True,
                                                canceled=True, cancel_reason=DUPLICATE_WATCH_ID))
                return
        else:
            while self.next_id in self.hub_ids:
                self.next_id += 1
            sid = self.next_id
            self.next_id += 1
        # Until the created answer is queued, the gate has no room: the node's first push gives
        # nothing, and the watch's history is pulled after that answer, at the stream's pace.
        ready = False
        early: list[HubResponse] = []  # (only a cancel can come before that)
        gate = WatchGate(lambda: ready and self._has_room(sid))
        self.gates[sid] = gate

        def sink(resp: HubResponse) -> None:
            if ready:
                self.emit(sid, resp)
            else:
                early.append(resp)

        filters = tuple(WatchFilter(f) for f in c.filters if f in (0, 1))
        try:
            created = self.node.watch(sink, key=c.key, range_end=c.range_end,
                                      start_revision=max(0, c.start_revision), prev_kv=c.prev_kv,
                                      filters=filters, progress_notify=c.progress_notify, gate=gate)
        except ErrCompacted as exc:
            self.gates.pop(sid, None)
            self.send(rpc_pb2.WatchResponse(header=header, watch_id=sid, created=True))
            self.send(rpc_pb2.WatchResponse(
                header=header, watch_id=sid, canceled=True, compact_revision=exc.compact_revision,
                cancel_reason=E.COMPACTED.message.removeprefix("etcdserver: ")))
            return
        except KVError as exc:
            self.gates.pop(sid, None)
            self.send(rpc_pb2.WatchResponse(header=header, watch_id=sid, created=True, canceled=True,
                                            cancel_reason=E.from_exception(exc).message))
            return
        self.hub_ids[sid] = created.watch_id
        self.send(rpc_pb2.WatchResponse(header=header, watch_id=sid, created=True))
        ready = True
        for resp in early:
            self.emit(sid, resp)
        self._held[sid] = gate  # its history, if any, comes through get()
        self._ready.set()

    def emit(self, sid: int, resp: HubResponse) -> None:
        if self.closed or sid not in self.gates:
            return
        events = visible_events(resp.events)
        if resp.events and not events and not resp.canceled:
            return
        rev = max([resp.revision, *(e.kv.mod_revision for e in events)])
        msg = rpc_pb2.WatchResponse(
            header=self.api.header(rev), watch_id=sid, events=[convert.event(e) for e in events],
            canceled=resp.canceled, compact_revision=resp.compact_revision,
            cancel_reason=resp.cancel_reason)
        if resp.canceled:  # the node ended it: nothing follows
            gate = self.gates.pop(sid, None)
            if gate is not None:
                gate.close()
            self._held.pop(sid, None)
            self.hub_ids.pop(sid, None)
            self.out.push_final(sid, msg, msg.ByteSize())
        else:
            overflow = self.out.push(sid, msg, events=len(events), nbytes=msg.ByteSize(),
                                     first_revision=first_revision(resp.events, resp.revision))
            if overflow is not None:  # the last resort: cancel it alone, say where to resume
                hub = self._forget(overflow.watch_id)
                if hub is not None:
                    self.node.cancel_watch(hub)
                log.info("etcd watch %d could not keep up; canceled: %s", overflow.watch_id,
                         overflow.reason)
                end = rpc_pb2.WatchResponse(header=self.api.header(), watch_id=overflow.watch_id,
                                            canceled=True, cancel_reason=overflow.reason)
                self.out.push_final(overflow.watch_id, end, end.ByteSize())
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        for gate in self.gates.values():
            gate.close()
        for hub in self.hub_ids.values():
            self.node.cancel_watch(hub)
        self.gates.clear()
        self._held.clear()
        self.hub_ids.clear()
        self.out.clear()


SNAPSHOT_MAGIC = b"SHOALSNP"


def frame_snapshot(snapshot: bytes) -> bytes:
    body = SNAPSHOT_MAGIC + len(snapshot).to_bytes(8, "big") + snapshot
    body += bytes(-len(body) % 512)
    return body + hashlib.sha256(body).digest()


def unframe_snapshot(data: bytes) -> bytes:
    """The `Node.snapshot_bytes()` inside a file written by `etcdctl snapshot save`."""
    body, digest = data[:-32], data[-32:]
    if len(body) % 512 or hashlib.sha256(body).digest() != digest:
        raise ValueError("not an etcd-framed Shoal snapshot: bad length or sha256")
    if not body.startswith(SNAPSHOT_MAGIC):
        raise ValueError("not a Shoal snapshot: missing magic")
    n = int.from_bytes(body[8:16], "big")
    return body[16:16 + n]


