"""KVStore: the replicated state machine. Committed entries go in, in log order; responses come
out. Deterministic: no clock, no randomness, no iteration over salted hashes, so replicas that
apply the same entries hold byte-identical snapshots.

Every request is checked in full before anything is written (etcd's checkRequests), so an error
leaves the state untouched on every replica alike."""

from __future__ import annotations

import zlib
from operator import attrgetter
from typing import Any

from ..events.segments import Directory, MemoryDirectory, SegmentLog
from . import intents, partition, shards
from .codec import pack, unpack
from .errors import (
    CorruptSnapshot,
    ErrKeyNotFound,
    ErrNoSpace,
    MalformedRequest,
)
from .intents import IntentIndex
from .keyvalue import KeyValue
from .lease import Lessor
from .limits import KVLimits
from .mvcc import MVCC, RANGE_SLICE, RECORD_OVERHEAD, KVHash, Steps, finish
from .requests import (
    CloseSessionRequest,
    CloseSessionResponse,
    CompactionRequest,
    CompactionResponse,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    LeaseExpireRequest,
    LeaseExpireResponse,
    LeaseGrantRequest,
    LeaseGrantResponse,
    LeaseKeepAliveRequest,
    LeaseKeepAliveResponse,
    LeaseLeasesRequest,
    LeaseLeasesResponse,
    LeasePromoteRequest,
    LeasePromoteResponse,
    LeaseRevokeRequest,
    LeaseRevokeResponse,
    LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
    LogAppendRequest,
    LogCompactRequest,
    LogTrimRequest,
    Op,
    OpenSessionRequest,
    OpenSessionResponse,
    OpResponse,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    Request,
    Response,
    ResponseHeader,
    Session,
    ShardAssignRequest,
    ShardDropRequest,
    ShardExportRequest,
    ShardImportRequest,
    SortOrder,
    SortTarget,
    TxnPrepareRequest,
    TxnRecordRequest,
    TxnRequest,
    TxnResolveRequest,
    TxnResponse,
    decode_command,
    decode_response,
    encode_response,
    validate,
)
from .session import SessionTable

SNAPSHOT_FORMAT = 1

_SORT_KEYS = {  # attrgetter: sorting 100k keys calls it 100k times
    SortTarget.KEY: attrgetter("key"),
    SortTarget.VERSION: attrgetter("version"),
    SortTarget.CREATE: attrgetter("create_revision"),
    SortTarget.MOD: attrgetter("mod_revision"),
    SortTarget.VALUE: attrgetter("value"),
}


class KVStore:
    def __init__(self, limits: KVLimits | None = None, files: Directory | None = None) -> None:
        self.limits = limits or KVLimits()
        # An event-log partition's segment files (kv/partition.py), opened at first use.
        self.files: Directory = files if files is not None else MemoryDirectory()
        self._segments: SegmentLog | None = None
        self.mvcc = MVCC()
        self.lessor = Lessor(self.limits.max_leases)
        self.sessions = SessionTable(self.limits.max_sessions)
        self.applied_index = 0
        self.intents = IntentIndex()  # prepared transactions' locks, by user key (kv/intents.py)
        self.span: shards.Span | None = None  # the keys this store owns; None: all (kv/shards.py)
        self.bugs: frozenset[str] = frozenset()  # planted bugs (intents.BUGS), simulator only

    @property
    def revision(self) -> int:
        return self.mvcc.revision

    @property
    def compact_revision(self) -> int:
        return self.mvcc.compact_revision

    @property
    def size_bytes(self) -> int:
        return self.mvcc.size_bytes

    # --- the apply path ---

    def apply_entry(self, data: bytes, index: int) -> Response:
        """Decode and apply one committed log entry. A malformed entry raises MalformedRequest
        on every replica alike, and still counts as applied."""
        self._advance(index)
        command = decode_command(data, self.limits)
        return self._apply(command.request, index, command.session)

    def apply(self, request: Request, index: int, session: Session | None = None) -> Response:
        self._advance(index)
        validate(request, self.limits)
        return self._apply(request, index, session)

    def _advance(self, index: int) -> None:
        # Equal for the commands of one batched entry (replica.BATCH_ENTRY), never lower.
        assert index >= self.applied_index and index > 0, f"index {index} after {self.applied_index}"
        self.applied_index = index

    def _apply(self, request: Request, index: int, session: Session | None) -> Response:
        if session is None:
            return self._dispatch(request, index)
        cached = self.sessions.cached(session.client_id, session.seq)
        if cached is not None:
            return decode_response(cached)
        response = self._dispatch(request, index)
        self.sessions.record(session.client_id, session.seq, index, encode_response(response))
        return response

    def _dispatch(self, request: Request, index: int) -> Response:
        match request:
            case RangeRequest():
                return self.range(request)
            case PutRequest() | DeleteRangeRequest() | TxnRequest():
                return self._write(request)
            case CompactionRequest():
                self.mvcc.compact(request.revision)
                return CompactionResponse(self._header())
            case LeaseGrantRequest():
                self._check_quota(RECORD_OVERHEAD)
                self.lessor.check_grant(request.id)
                lease = self.lessor.grant(request.id, request.ttl, request.now_ms)
                return LeaseGrantResponse(self._header(), lease.id, lease.ttl)
            case LeaseRevokeRequest():
                self._revoke(request.id)
                return LeaseRevokeResponse(self._header())
            case LeaseKeepAliveRequest():
                lease = self.lessor.keep_alive(request.id, request.now_ms)
                return LeaseKeepAliveResponse(self._header(), lease.id, lease.ttl)
            case LeaseExpireRequest():
                due = request.id in self.lessor and (
                    self.lessor.get(request.id).expiry_ms <= request.now_ms
                )
                if due:
                    self._revoke(request.id)
                return LeaseExpireResponse(self._header(), due)
            case LeasePromoteRequest():
                self.lessor.promote(request.now_ms)
                return LeasePromoteResponse(self._header())
            case LeaseTimeToLiveRequest():
                return self.time_to_live(request)
            case LeaseLeasesRequest():
                return LeaseLeasesResponse(self._header(), tuple(self.lessor.ids()))
            case OpenSessionRequest():
                return OpenSessionResponse(self._header(), self.sessions.open(index))
            case CloseSessionRequest():
                self.sessions.close(request.client_id)
                return CloseSessionResponse(self._header())
            case TxnPrepareRequest():
                shards.check_owned(self.span, [(r.key, b"") for r in request.reads]
                                   + [(w.key, b"") for w in request.writes]
                                   + [(g.key, g.range_end) for g in request.lock_ranges])
                return intents.prepare(self, request)
            case TxnResolveRequest():  # (a moved key's intent moved with it: resolve it there)
                shards.check_owned(self.span, [(k, b"") for k in request.keys])
                return intents.resolve(self, request)
            case TxnRecordRequest():
                return intents.record(self, request)
            case ShardAssignRequest():
                return shards.assign(self, request)
            case ShardExportRequest():
                return shards.export(self, request)
            case ShardImportRequest():
                return shards.import_keys(self, request)
            case ShardDropRequest():
                return shards.drop(self, request)
            case LogAppendRequest():
                return partition.append(self, request)
            case LogTrimRequest():
                return partition.trim(self, request)
            case LogCompactRequest():
                return partition.compact(self, request)
        raise MalformedRequest(f"not a request: {type(request).__name__}")

    @property
    def segments(self) -> SegmentLog:
        if self._segments is None:
            self._segments = partition.open_segments(self)
        return self._segments

    def _header(self) -> ResponseHeader:
        return ResponseHeader(self.mvcc.read_revision)

    # --- reads (also served directly after a ReadIndex, without the log) ---

    def range(self, r: RangeRequest) -> RangeResponse:
        return finish(self.range_steps(r))

    def range_steps(self, r: RangeRequest) -> Steps[RangeResponse]:
        """etcd's applierV3.Range: sort and revision filters need every key in the range;
        otherwise fetch one past the limit to know `more`. As steps (mvcc.range_steps): a
        server pauses between them, and the whole read is at one revision."""
        order = r.sort_order
        if r.sort_target != SortTarget.KEY and order == SortOrder.NONE:
            order = SortOrder.ASCEND
        elif r.sort_target == SortTarget.KEY and order == SortOrder.ASCEND:
            order = SortOrder.NONE  # the index is already in ascending key order
        if self.span is not None or self.intents.count:
            shards.check_owned(self.span, ((r.key, r.range_end),))
            intents.check_plain_read(self.intents, r.key, r.range_end)
        filtered = (
            r.min_mod_revision or r.max_mod_revision or r.min_create_revision
            or r.max_create_revision
        )  # fmt: skip
        fetch = 0 if order != SortOrder.NONE or filtered else r.limit + 1 if r.limit else 0
        kvs, count, revision = yield from self.mvcc.range_steps(r.key, r.range_end, r.revision,
                                                                fetch)
        header = ResponseHeader(revision)
        if r.count_only:
            return RangeResponse(header, (), False, count)
        if filtered:
            kvs = [kv for kv in kvs if _passes(r, kv)]
        if order != SortOrder.NONE:  # stable: ties stay in key order
            kvs.sort(key=_SORT_KEYS[r.sort_target], reverse=order == SortOrder.DESCEND)
        more = 0 < r.limit < len(kvs)
        if more:
            kvs = kvs[: r.limit]
        if r.keys_only:
            stripped = []
            for i in range(0, len(kvs), RANGE_SLICE):
                if i:
                    yield
                stripped += [_without_value(kv) for kv in kvs[i : i + RANGE_SLICE]]
            kvs = stripped
        return RangeResponse(header, tuple(kvs), more, count)

    def time_to_live(self, r: LeaseTimeToLiveRequest) -> LeaseTimeToLiveResponse:
        if r.id not in self.lessor:
            return LeaseTimeToLiveResponse(self._header(), r.id, -1)
        lease = self.lessor.get(r.id)
        keys = tuple(sorted(lease.keys)) if r.keys else ()
        return LeaseTimeToLiveResponse(
            self._header(), r.id, lease.remaining(r.now_ms), lease.ttl, keys
        )

    def hash_kv(self, revision: int = 0) -> KVHash:
        return self.mvcc.hash_kv(revision)

    def hash(self) -> int:
        """A digest of the whole replicated state, for comparing replicas."""
        return zlib.crc32(self.snapshot())

    # --- writes ---

    def _write(self, request: PutRequest | DeleteRangeRequest | TxnRequest) -> OpResponse:
        if self.span is not None or self.intents.count or self.intents.ranges:
            reads, writes = _spans(request)
            shards.check_owned(self.span, reads + writes)
            for key, range_end in reads:
                intents.check_plain_read(self.intents, key, range_end)
            intents.check_plain_write(self.intents, writes)
        path: list[bool] = []  # the branch each txn takes, decided on the state before it
        if isinstance(request, TxnRequest):
            self._txn_path(request, path)
        self._check(request, iter(path))
        self.mvcc.begin()
        response = self._execute(request, iter(path))
        self.mvcc.end()
        return response

    def _txn_path(self, txn: TxnRequest, path: list[bool]) -> None:
        """etcd's compareToPath: nested compares see the state before the outer txn's writes."""
        succeeded = all(self._compare(c) for c in txn.compare)
        path.append(succeeded)
        for op in txn.success if succeeded else txn.failure:
            if isinstance(op, TxnRequest):
                self._txn_path(op, path)

    def _check(self, request: Op, path: Any) -> None:
        """Everything that could fail, before the first write. The quota is checked on the
        bytes the whole request adds."""
        self._check_quota(self._check_op(request, path))

    def _check_op(self, op: Op, path: Any) -> int:
        match op:
            case RangeRequest():
                self.mvcc.check_revision(op.revision)
            case PutRequest():
                if op.lease and not op.ignore_lease:
                    self.lessor.get(op.lease)
                if (op.ignore_value or op.ignore_lease) and self.mvcc.get(op.key) is None:
                    raise ErrKeyNotFound(f"key {op.key!r} not found (ignore_value/ignore_lease)")
                return len(op.key) + len(op.value) + RECORD_OVERHEAD
            case TxnRequest():
                ops = op.success if next(path) else op.failure
                return sum(self._check_op(o, path) for o in ops)
        return 0

    def _check_quota(self, adding: int) -> None:
        quota = self.limits.quota_bytes
        if quota and adding and self.mvcc.size_bytes + adding > quota:
            raise ErrNoSpace(f"{self.mvcc.size_bytes} + {adding} bytes exceeds quota {quota}")

    def _execute(self, op: Op, path: Any) -> OpResponse:
        match op:
            case RangeRequest():
                return self.range(op)
            case PutRequest():
                prev = self._put(op)
                return PutResponse(self._header(), prev if op.prev_kv else None)
            case DeleteRangeRequest():
                deleted = self._delete(op.key, op.range_end)
                prevs = tuple(deleted) if op.prev_kv else ()
                return DeleteRangeResponse(self._header(), len(deleted), prevs)
            case TxnRequest():
                succeeded = next(path)
                responses = tuple(
                    self._execute(o, path) for o in (op.success if succeeded else op.failure)
                )
                return TxnResponse(self._header(), succeeded, responses)
        raise AssertionError(op)

    def _put(self, r: PutRequest) -> KeyValue | None:
        current = self.mvcc.get(r.key)
        value, lease = r.value, r.lease
        if current is not None:  # checked to exist when ignore_value/ignore_lease are set
            value = current.value if r.ignore_value else value
            lease = current.lease if r.ignore_lease else lease
        _, prev = self.mvcc.put(r.key, value, lease)
        if prev is not None and prev.lease and prev.lease != lease:
            self.lessor.detach(prev.lease, r.key)
        if lease:
            self.lessor.attach(lease, r.key)
        return prev

    def _delete(self, key: bytes, range_end: bytes) -> list[KeyValue]:
        deleted = self.mvcc.delete_range(key, range_end)
        for kv in deleted:
            if kv.lease:
                self.lessor.detach(kv.lease, kv.key)
        return deleted

    def _revoke(self, lease_id: int) -> None:
        """The lease's keys go in one revision, in key order."""
        keys = self.lessor.revoke(lease_id)
        self.mvcc.begin()
        for key in keys:
            deleted = self.mvcc.delete_range(key, b"")
            assert len(deleted) == 1 and deleted[0].lease == lease_id, (key, lease_id)
        self.mvcc.end()

    def _compare(self, c: Compare) -> bool:
        kvs, _, _ = self.mvcc.range(c.key, c.range_end)
        if not kvs:
            # A missing key has no value to compare, and version/revisions/lease of 0 (etcd).
            return False if c.target == CompareTarget.VALUE else compare_holds(c, KeyValue(c.key))
        return all(compare_holds(c, kv) for kv in kvs)

    # --- snapshot ---

    def snapshot(self) -> bytes:
        """The replicated state (not watchers), msgpack in a fixed order, then a crc32; a
        partition's segments follow, synced and named, not copied (kv/partition.py says
        why)."""
        body = pack([
            SNAPSHOT_FORMAT,
            self.applied_index,
            self.mvcc.dump(),
            self.lessor.dump(),
            self.sessions.dump(),
            *([self.segments.manifest()] if partition.is_partition(self) else []),
        ])  # fmt: skip
        return body + zlib.crc32(body).to_bytes(4, "big")

    def carrying_segments(self, data: bytes) -> bytes | None:
        """`data`, a `snapshot()` of this store, with the segment bytes it names carried in
        it: what a follower installs. None if the files no longer hold them (a trim or
        compaction since); the snapshot taken after it will do."""
        raw = unpack(data[:-4], "snapshot")
        if len(raw) == 5 or all(isinstance(entry[2], bytes) for entry in raw[5]):
            return data  # no partition, or carried already (one installed from a leader)
        carried = self.segments.carry(raw[5])
        if carried is None:
            return None
        body = pack([*raw[:5], carried])
        return body + zlib.crc32(body).to_bytes(4, "big")

    @property
    def rewritten_index(self) -> int:
        """The index of the last entry that deleted or rewrote a segment (0: none): a snapshot
        older than it no longer describes the segment files (kv/partition.py)."""
        return self._segments.rewritten if self._segments is not None else 0

    @classmethod
    def restore(cls, data: bytes, limits: KVLimits | None = None,
                files: Directory | None = None) -> KVStore:
        if not isinstance(data, bytes) or len(data) < 5:
            raise CorruptSnapshot("snapshot: too short")
        body, crc = data[:-4], int.from_bytes(data[-4:], "big")
        if zlib.crc32(body) != crc:
            raise CorruptSnapshot("snapshot: checksum mismatch")
        try:
            raw = unpack(body, "snapshot")
        except MalformedRequest as e:
            raise CorruptSnapshot(str(e)) from None
        if not (isinstance(raw, list) and len(raw) in (5, 6) and raw[0] == SNAPSHOT_FORMAT):
            raise CorruptSnapshot(f"snapshot: not format {SNAPSHOT_FORMAT}")
        _, applied_index, mvcc, leases, sessions, *segments = raw
        if type(applied_index) is not int or applied_index < 0:
            raise CorruptSnapshot(f"snapshot: bad applied index {applied_index!r}")
        store = cls(limits, files)
        store.applied_index = applied_index
        store.mvcc = MVCC.load(mvcc)
        store.lessor = Lessor.load(leases, store.limits.max_leases)
        store.sessions = SessionTable.load(sessions, store.limits.max_sessions)
        store._check_leases()
        store.intents = IntentIndex.rebuild(store)
        store.span = shards.load_span(store)
        if segments:
            store._segments = partition.restore_segments(store, segments[0])
        return store

    def _check_leases(self) -> None:
        """Every key with a lease is on that lease's key list, and the other way round."""
        attached = {}
        for kv in self.mvcc.range(b"\0", b"\0")[0]:
            if kv.lease:
                attached[kv.key] = kv.lease
        listed = {key: i for i in self.lessor.ids() for key in self.lessor.get(i).keys}
        if attached != listed:
            raise CorruptSnapshot("snapshot: lease key lists disagree with the keys")


def _spans(op: Op) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """The key ranges `op` reads and those it writes, both branches of a txn included."""
    reads: list[tuple[bytes, bytes]] = []
    writes: list[tuple[bytes, bytes]] = []
    todo = [op]
    while todo:
        match todo.pop():
            case RangeRequest() as r:
                reads.append((r.key, r.range_end))
            case PutRequest() as p:
                writes.append((p.key, b""))
            case DeleteRangeRequest() as d:
                writes.append((d.key, d.range_end))
            case TxnRequest() as t:
                reads.extend((c.key, c.range_end) for c in t.compare)
                todo.extend(t.success)
                todo.extend(t.failure)
    return reads, writes


def _passes(r: RangeRequest, kv: KeyValue) -> bool:
    return not (
        (r.max_mod_revision and kv.mod_revision > r.max_mod_revision)
        or (r.min_mod_revision and kv.mod_revision < r.min_mod_revision)
        or (r.max_create_revision and kv.create_revision > r.max_create_revision)
        or (r.min_create_revision and kv.create_revision < r.min_create_revision)
    )


def _without_value(kv: KeyValue) -> KeyValue:
    return KeyValue(kv.key, kv.create_revision, kv.mod_revision, kv.version, b"", kv.lease)


def compare_holds(c: Compare, kv: KeyValue) -> bool:
    """Does the one version `kv` satisfy compare `c` (etcd's rules)?"""
    actual: int | bytes
    match c.target:
        case CompareTarget.VERSION:
            actual = kv.version
        case CompareTarget.CREATE:
            actual = kv.create_revision
        case CompareTarget.MOD:
            actual = kv.mod_revision
        case CompareTarget.VALUE:
            actual = kv.value
        case CompareTarget.LEASE:
            actual = kv.lease
    operand = c.operand
    match c.result:
        case CompareResult.EQUAL:
            return actual == operand
        case CompareResult.NOT_EQUAL:
            return actual != operand
        case CompareResult.GREATER:
            return actual > operand  # type: ignore[operator]
        case CompareResult.LESS:
            return actual < operand  # type: ignore[operator]
    raise AssertionError(c.result)
