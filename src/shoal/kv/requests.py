"""The requests a KVStore applies, their responses, and their encoding in log entries.

Names and fields follow etcd's etcdserverpb, so an etcd-compatible gRPC API is a thin mapping.
What we add: lease requests carry `now_ms`, the proposing leader's clock (the state machine
reads no clock), LeaseExpire/LeasePromote are proposed by the leader itself, and a Command may
carry a client Session for exactly-once application. See docs/kv.md."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from enum import IntEnum
from typing import Any

from .codec import from_wire, pack, to_wire, unpack
from .errors import ErrDuplicateKey, ErrRequestTooLarge, ErrTooManyOps, MalformedRequest
from .keyvalue import ALL_KEYS, KeyValue, in_range
from .limits import KVLimits
from .mvcc import RANGE_SLICE, Steps

MAX_LEASE_TTL = 9_000_000_000  # seconds; etcd's MaxLeaseTTL


class SortOrder(IntEnum):
    NONE = 0
    ASCEND = 1
    DESCEND = 2


class SortTarget(IntEnum):
    KEY = 0
    VERSION = 1
    CREATE = 2
    MOD = 3
    VALUE = 4


class CompareResult(IntEnum):
    EQUAL = 0
    GREATER = 1
    LESS = 2
    NOT_EQUAL = 3


class CompareTarget(IntEnum):
    VERSION = 0
    CREATE = 1
    MOD = 2
    VALUE = 3
    LEASE = 4


# --- requests ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RangeRequest:
    key: bytes
    range_end: bytes = b""
    limit: int = 0  # 0 = no limit
    revision: int = 0  # 0 = current
    sort_order: SortOrder = SortOrder.NONE
    sort_target: SortTarget = SortTarget.KEY
    keys_only: bool = False
    count_only: bool = False
    min_mod_revision: int = 0
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0


@dataclass(frozen=True, slots=True)
class PutRequest:
    key: bytes
    value: bytes = b""
    lease: int = 0  # 0 = no lease (and detaches the key from any)
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False


@dataclass(frozen=True, slots=True)
class DeleteRangeRequest:
    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False


@dataclass(frozen=True, slots=True)
class Compare:
    """Holds when every key in [key, range_end) satisfies `target result operand`; a missing
    key compares as version/create/mod/lease 0, and never satisfies a VALUE compare (etcd)."""

    key: bytes
    target: CompareTarget
    result: CompareResult
    operand: int | bytes  # bytes for VALUE, an int for the others
    range_end: bytes = b""


@dataclass(frozen=True, slots=True)
class TxnRequest:
    compare: tuple[Compare, ...] = ()
    success: tuple[Op, ...] = ()
    failure: tuple[Op, ...] = ()


Op = RangeRequest | PutRequest | DeleteRangeRequest | TxnRequest


@dataclass(frozen=True, slots=True)
class CompactionRequest:
    revision: int


@dataclass(frozen=True, slots=True)
class LeaseGrantRequest:
    ttl: int  # seconds
    id: int = 0  # 0 = the store picks the next free id
    now_ms: int = 0  # the proposing leader's clock


@dataclass(frozen=True, slots=True)
class LeaseRevokeRequest:
    id: int


@dataclass(frozen=True, slots=True)
class LeaseKeepAliveRequest:
    id: int
    now_ms: int = 0


@dataclass(frozen=True, slots=True)
class LeaseExpireRequest:
    """Proposed by the leader for a lease its `expired(now_ms)` returned. Skipped if a
    keep-alive applied since has moved the expiry past `now_ms`, so an acknowledged
    keep-alive is never overridden by an older expiry decision."""

    id: int
    now_ms: int


@dataclass(frozen=True, slots=True)
class LeasePromoteRequest:
    """Proposed by a new leader: every lease expires `ttl` after `now_ms`, in its clock."""

    now_ms: int


@dataclass(frozen=True, slots=True)
class LeaseTimeToLiveRequest:
    id: int
    now_ms: int = 0
    keys: bool = False


@dataclass(frozen=True, slots=True)
class LeaseLeasesRequest:
    pass


@dataclass(frozen=True, slots=True)
class OpenSessionRequest:
    pass


@dataclass(frozen=True, slots=True)
class CloseSessionRequest:
    client_id: int


# --- two-phase commit (kv/intents.py) and shard ownership (kv/shards.py) ----------------


class RecordStatus(IntEnum):
    ABSENT = 0  # never written, or its coordinator's lease ended: presumed aborted
    PENDING = 1
    COMMITTED = 2
    ABORTED = 3


class TxnRecordAction(IntEnum):
    STATUS = 0
    COMMIT = 1  # pending -> committed
    ABORT = 2  # absent or pending -> aborted (the coordinator's own)
    ABORT_ABANDONED = 3  # absent -> aborted (anyone who met an intent)
    FORGET = 4  # decided -> absent, once no intent needs the record


LOCKING_READ = -1


@dataclass(frozen=True, slots=True)
class IntentRead:
    """A key a transaction read, at the version it saw (mod_revision 0: absent), or
    LOCKING_READ: lock the key as it is now and answer its version (SELECT ... FOR SHARE)."""

    key: bytes
    mod_revision: int


@dataclass(frozen=True, slots=True)
class IntentRange:
    """[key, range_end) in etcd's conventions (range_end b"\0": to the end)."""

    key: bytes
    range_end: bytes


@dataclass(frozen=True, slots=True)
class IntentWrite:
    key: bytes
    value: bytes = b""
    delete: bool = False


@dataclass(frozen=True, slots=True)
class TxnPrepareRequest:
    txn: bytes  # the transaction's id
    record_group: int  # where its record lives
    reads: tuple[IntentRead, ...] = ()
    writes: tuple[IntentWrite, ...] = ()
    one_phase: bool = False  # the only shard: validate and write, no intents, no record
    record_lease: int = 0  # sent to the record group: create the pending record on this lease
    lock_ranges: tuple[IntentRange, ...] = ()  # lock whole ranges (no writer, no phantom) and
    # answer their keys: a snapshot of ranges across shards


@dataclass(frozen=True, slots=True)
class TxnResolveRequest:
    txn: bytes
    commit: bool
    keys: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class TxnRecordRequest:
    txn: bytes
    action: TxnRecordAction


@dataclass(frozen=True, slots=True)
class LogAppendRequest:
    """Record batches (Kafka's v2 format) for a partition's log (kv/partition.py)."""

    batches: bytes
    now_ms: int = 0  # the proposing leader's clock
    segment_bytes: int = 1 << 30  # the topic's segment.bytes and segment.ms: when to roll
    segment_ms: int = 7 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class LogTrimRequest:
    before_offset: int  # delete the whole segments before it (retention)


@dataclass(frozen=True, slots=True)
class LogCompactRequest:
    """Run the log cleaner over the closed segments (cleanup.policy=compact)."""

    now_ms: int  # the proposing leader's clock: tombstones older than the horizon go
    delete_retention_ms: int


@dataclass(frozen=True, slots=True)
class ShardAssignRequest:
    """From now on this group owns [start, end) (end b"" = no upper bound) as of shard map
    `version`; `serving` False while a split still brings the keys in."""

    start: bytes
    end: bytes
    version: int
    serving: bool = True


@dataclass(frozen=True, slots=True)
class ShardExportRequest:
    """Keys of [start, end) after `after`, with their intents: what a split moves."""

    start: bytes
    end: bytes
    after: bytes = b""
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class ShardImportRequest:
    kvs: tuple[KeyValue, ...]  # user keys and intent keys, as exported


@dataclass(frozen=True, slots=True)
class ShardDropRequest:
    """Delete the keys of [start, end), and their intents: a split moved them away."""

    start: bytes
    end: bytes


Request = (
    RangeRequest
    | PutRequest
    | DeleteRangeRequest
    | TxnRequest
    | CompactionRequest
    | LeaseGrantRequest
    | LeaseRevokeRequest
    | LeaseKeepAliveRequest
    | LeaseExpireRequest
    | LeasePromoteRequest
    | LeaseTimeToLiveRequest
    | LeaseLeasesRequest
    | OpenSessionRequest
    | CloseSessionRequest
    | TxnPrepareRequest
    | TxnResolveRequest
    | TxnRecordRequest
    | ShardAssignRequest
    | ShardExportRequest
    | ShardImportRequest
    | ShardDropRequest
    | LogAppendRequest
    | LogTrimRequest
    | LogCompactRequest
)


@dataclass(frozen=True, slots=True)
class Session:
    """Exactly-once identity: `client_id` from OpenSessionResponse, `seq` increasing per
    request (one outstanding request per client, as in the Raft dissertation, §6.3)."""

    client_id: int
    seq: int


@dataclass(frozen=True, slots=True)
class Command:
    """What one log entry holds."""

    request: Request
    session: Session | None = None


# --- responses --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponseHeader:
    revision: int  # the store's revision when the response was made


@dataclass(frozen=True, slots=True)
class RangeResponse:
    header: ResponseHeader
    kvs: tuple[KeyValue, ...] = ()
    more: bool = False  # the limit cut the result short
    count: int = 0  # keys in the range (before limit and revision filters, as in etcd)


@dataclass(frozen=True, slots=True)
class PutResponse:
    header: ResponseHeader
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class DeleteRangeResponse:
    header: ResponseHeader
    deleted: int = 0
    prev_kvs: tuple[KeyValue, ...] = ()


@dataclass(frozen=True, slots=True)
class TxnResponse:
    header: ResponseHeader
    succeeded: bool
    responses: tuple[OpResponse, ...] = ()


OpResponse = RangeResponse | PutResponse | DeleteRangeResponse | TxnResponse


@dataclass(frozen=True, slots=True)
class CompactionResponse:
    header: ResponseHeader


@dataclass(frozen=True, slots=True)
class LeaseGrantResponse:
    header: ResponseHeader
    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseRevokeResponse:
    header: ResponseHeader


@dataclass(frozen=True, slots=True)
class LeaseKeepAliveResponse:
    header: ResponseHeader
    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseExpireResponse:
    header: ResponseHeader
    revoked: bool


@dataclass(frozen=True, slots=True)
class LeasePromoteResponse:
    header: ResponseHeader


@dataclass(frozen=True, slots=True)
class LeaseTimeToLiveResponse:
    header: ResponseHeader
    id: int
    ttl: int  # remaining seconds; -1 if the lease does not exist (etcd)
    granted_ttl: int = 0
    keys: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class LeaseLeasesResponse:
    header: ResponseHeader
    leases: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class OpenSessionResponse:
    header: ResponseHeader
    client_id: int


@dataclass(frozen=True, slots=True)
class CloseSessionResponse:
    header: ResponseHeader


@dataclass(frozen=True, slots=True)
class TxnConflict:
    key: bytes
    reason: str  # changed (a read is stale), locked (another's intent), decided (the record)
    holder: bytes = b""  # the transaction holding the lock
    holder_group: int = 0  # where its record lives


@dataclass(frozen=True, slots=True)
class TxnPrepareResponse:
    header: ResponseHeader
    prepared: bool
    conflicts: tuple[TxnConflict, ...] = ()
    record: RecordStatus = RecordStatus.ABSENT
    kvs: tuple[KeyValue, ...] = ()  # the keys read with LOCKING_READ, as locked (absent: none)


@dataclass(frozen=True, slots=True)
class TxnResolveResponse:
    header: ResponseHeader
    resolved: int


@dataclass(frozen=True, slots=True)
class TxnRecordResponse:
    header: ResponseHeader
    status: RecordStatus


@dataclass(frozen=True, slots=True)
class LogAppendResponse:
    header: ResponseHeader
    base_offset: int  # the first offset given (-1: refused or a trim)
    error: int  # a Kafka error code, 0 = none
    log_start_offset: int


@dataclass(frozen=True, slots=True)
class ShardResponse:
    header: ResponseHeader
    kvs: tuple[KeyValue, ...] = ()  # ShardExport: the slice
    more: bool = False  # ShardExport: keys after the slice
    serving: bool = False  # ShardAssign: the group serves its span (after the request)


Response = (
    RangeResponse
    | PutResponse
    | DeleteRangeResponse
    | TxnResponse
    | CompactionResponse
    | LeaseGrantResponse
    | LeaseRevokeResponse
    | LeaseKeepAliveResponse
    | LeaseExpireResponse
    | LeasePromoteResponse
    | LeaseTimeToLiveResponse
    | LeaseLeasesResponse
    | OpenSessionResponse
    | CloseSessionResponse
    | TxnPrepareResponse
    | TxnResolveResponse
    | TxnRecordResponse
    | ShardResponse
    | LogAppendResponse
)


# --- encoding ---------------------------------------------------------------------------


def encode_command(request: Request, session: Session | None = None) -> bytes:
    return pack(to_wire(Command(request, session), Command))


# A txn entry (compare or op, tagged) is one array of at most 13 values; a txn adds its own
# array and three lists. So a legal command holds at most these per txn entry, and decoding
# stops past them, before a hostile command of a million empty arrays is built.
_VALUES_PER_ENTRY = 20
_ARRAYS_PER_ENTRY = 5


def decode_command(data: bytes, limits: KVLimits) -> Command:
    """The Command in a log entry, validated. Raises a MalformedRequest naming the problem."""
    entries = 3 * limits.max_txn_ops + 1
    raw = unpack(data, "command", max_values=_VALUES_PER_ENTRY * entries + 16,
                 max_arrays=_ARRAYS_PER_ENTRY * entries + 4)
    command: Command = from_wire(raw, Command, "Command")
    validate(command.request, limits)
    if command.session is not None:
        _positive(command.session.client_id, "Session.client_id")
        _positive(command.session.seq, "Session.seq")
    return command


def encode_response(response: Response) -> bytes:
    # The same response is encoded twice on its way to a client with a session: once for the
    # session's record when applied, once for the answer. Responses are frozen, so the last
    # few encodings are kept by identity (with the response itself, so its id stays its own).
    hit = _recent.get(id(response))
    if hit is not None and hit[0] is response:
        return hit[1]
    data = pack(to_wire(response, Response))
    if len(data) <= _RECENT_BYTES:  # (a big range is not kept alive for this)
        _recent[id(response)] = (response, data)
        if len(_recent) > _RECENT:
            del _recent[next(iter(_recent))]
    return data


_RECENT, _RECENT_BYTES = 2048, 1024  # more than one batch of applied writes, whose answers follow
_recent: dict[int, tuple[Response, bytes]] = {}


_KVS_AT = 1 + [f.name for f in fields(RangeResponse)].index("kvs")  # after the type's name


def encode_response_steps(response: Response) -> Steps[bytes]:
    """encode_response as steps, pausing after every RANGE_SLICE keys of a range: 100k keys
    cost about 100 ms in one go."""
    if not (isinstance(response, RangeResponse) and len(response.kvs) > RANGE_SLICE):
        return encode_response(response)
    kvs: list[Any] = []
    for i in range(0, len(response.kvs), RANGE_SLICE):
        kvs.extend(to_wire(response.kvs[i:i + RANGE_SLICE], tuple[KeyValue, ...]))
        yield
    wire = to_wire(replace(response, kvs=()), Response)
    wire[_KVS_AT] = kvs
    return pack(wire)


def decode_response(data: bytes) -> Response:
    response: Response = from_wire(unpack(data, "response"), Response, "Response")
    return response


# --- validation (what etcd checks before proposing; we check again when applying) --------


def validate(request: Request, limits: KVLimits) -> None:
    name = type(request).__name__
    match request:
        case RangeRequest():
            _key(request.key, name, limits)
            for field in ("limit", "revision", "min_mod_revision", "max_mod_revision",
                          "min_create_revision", "max_create_revision"):  # fmt: skip
                _non_negative(getattr(request, field), f"{name}.{field}")
        case PutRequest():
            _key(request.key, name, limits)
            if len(request.value) > limits.max_value_bytes:
                raise ErrRequestTooLarge(
                    f"{name}.value: {len(request.value)} bytes, limit {limits.max_value_bytes}"
                )
            _non_negative(request.lease, f"{name}.lease")
            if request.ignore_value and request.value:
                raise MalformedRequest(f"{name}: value is provided with ignore_value")
            if request.ignore_lease and request.lease:
                raise MalformedRequest(f"{name}: lease is provided with ignore_lease")
        case DeleteRangeRequest():
            _key(request.key, name, limits)
        case TxnRequest():
            _validate_txn(request, limits)
        case CompactionRequest():
            _non_negative(request.revision, f"{name}.revision")
        case LeaseGrantRequest():
            if not 0 < request.ttl <= MAX_LEASE_TTL:
                raise MalformedRequest(f"{name}.ttl: {request.ttl} not in 1..{MAX_LEASE_TTL}")
            _non_negative(request.id, f"{name}.id")
            _non_negative(request.now_ms, f"{name}.now_ms")
        case LeaseRevokeRequest() | LeaseKeepAliveRequest() | LeaseExpireRequest():
            _positive(request.id, f"{name}.id")
        case LeaseTimeToLiveRequest():
            _positive(request.id, f"{name}.id")
        case CloseSessionRequest():
            _positive(request.client_id, f"{name}.client_id")
        case LeasePromoteRequest() | LeaseLeasesRequest() | OpenSessionRequest():
            pass
        case TxnPrepareRequest():
            _txn_id(request.txn, name)
            if len(request.reads) + len(request.writes) > limits.max_txn_ops:
                raise ErrTooManyOps(f"{name}: {len(request.reads)} reads and "
                                    f"{len(request.writes)} writes, limit {limits.max_txn_ops}")
            written: set[bytes] = set()
            for w in request.writes:
                _key(w.key, f"{name}.writes", limits)
                if len(w.value) > limits.max_value_bytes:
                    raise ErrRequestTooLarge(f"{name}.writes: {len(w.value)} bytes, "
                                             f"limit {limits.max_value_bytes}")
                if w.key in written:
                    raise ErrDuplicateKey(f"{name}: key {w.key!r:.80} written twice")
                written.add(w.key)
            for rg in request.lock_ranges:
                _key(rg.key, f"{name}.lock_ranges", limits)
                if not rg.range_end:
                    raise MalformedRequest(f"{name}.lock_ranges: a range needs a range_end")
            for r in request.reads:
                _key(r.key, f"{name}.reads", limits)
                if r.mod_revision != LOCKING_READ:
                    _non_negative(r.mod_revision, f"{name}.reads.mod_revision")
            _non_negative(request.record_group, f"{name}.record_group")
            _non_negative(request.record_lease, f"{name}.record_lease")
            if request.one_phase and request.record_lease:
                raise MalformedRequest(f"{name}: a one-phase commit has no record")
        case TxnResolveRequest():
            _txn_id(request.txn, name)
            if len(request.keys) > limits.max_txn_ops:
                raise ErrTooManyOps(f"{name}: {len(request.keys)} keys, limit {limits.max_txn_ops}")
            for k in request.keys:
                _key(k, name, limits)
        case TxnRecordRequest():
            _txn_id(request.txn, name)
        case ShardAssignRequest() | ShardExportRequest() | ShardDropRequest():
            _non_negative(getattr(request, "version", 0), f"{name}.version")
            _non_negative(getattr(request, "limit", 0), f"{name}.limit")
        case ShardImportRequest():
            for kv in request.kvs:
                _key(kv.key, name, limits)
        case LogAppendRequest():
            if not 0 < len(request.batches) <= limits.max_value_bytes:
                raise ErrRequestTooLarge(f"{name}: {len(request.batches)} bytes of batches, "
                                         f"limit {limits.max_value_bytes}")
            if request.segment_bytes <= 0 or request.segment_ms <= 0:
                raise MalformedRequest(f"{name}: segment_bytes and segment_ms must be positive")
        case LogTrimRequest():
            _non_negative(request.before_offset, f"{name}.before_offset")
        case LogCompactRequest():
            _non_negative(request.delete_retention_ms, f"{name}.delete_retention_ms")
        case _:
            raise MalformedRequest(f"not a request: {type(request).__name__}")
    now_ms = getattr(request, "now_ms", 0)
    _non_negative(now_ms, f"{name}.now_ms")


def _validate_txn(txn: TxnRequest, limits: KVLimits) -> None:
    check_txn_size(txn, limits.max_txn_ops,
                   lambda op: op if isinstance(op, TxnRequest) else None)
    _validate_entries(txn, limits)


def check_txn_size(txn: Any, max_ops: int, nested: Callable[[Any], Any]) -> None:
    """etcd's checkTxnRequest: no list longer than `max_ops`, and a nested txn gets what its
    parent's longest list leaves of it. The compares and ops of the whole tree, which etcd
    leaves unbounded (widths 42, 42, 42 pass, 74,088 ranges), we bound by what the largest
    flat txn holds, so nesting never buys more work. `txn` is anything with compare, success
    and failure lists (a TxnRequest, or etcd's protobuf before it is converted); `nested(op)`
    is the txn inside an op, or None."""
    total = _count_ops(txn, max_ops, nested)
    if total > 3 * max_ops:
        raise ErrTooManyOps(f"TxnRequest: {total} compares and operations in all, nested txns "
                            f"included; limit {3 * max_ops}")


def _count_ops(txn: Any, budget: int, nested: Callable[[Any], Any]) -> int:
    widest = max(len(txn.compare), len(txn.success), len(txn.failure))
    if widest > budget:
        raise ErrTooManyOps(f"TxnRequest: a list of {widest} entries, limit {budget} "
                            "(a nested txn gets what its parent's longest list leaves)")
    total = len(txn.compare) + len(txn.success) + len(txn.failure)
    for op in (*txn.success, *txn.failure):
        if (inner := nested(op)) is not None:
            total += _count_ops(inner, budget - widest, nested)
    return total


def _validate_entries(txn: TxnRequest, limits: KVLimits) -> None:
    for c in txn.compare:
        _key(c.key, "Compare", limits)
        wants = bytes if c.target == CompareTarget.VALUE else int
        if type(c.operand) is not wants:
            raise MalformedRequest(
                f"Compare.operand: target {c.target.name} needs {wants.__name__}, "
                f"got {type(c.operand).__name__}"
            )
    for op in (*txn.success, *txn.failure):
        if isinstance(op, TxnRequest):
            _validate_entries(op, limits)  # counted with its parent
        elif isinstance(op, RangeRequest | PutRequest | DeleteRangeRequest):
            validate(op, limits)
        else:
            raise MalformedRequest(f"TxnRequest: {type(op).__name__} is not a txn operation")
    _check_intervals(txn.success)
    _check_intervals(txn.failure)


Interval = tuple[bytes, bytes]


def _check_intervals(ops: tuple[Op, ...]) -> tuple[set[bytes], list[Interval]]:
    """etcd's checkIntervals: within one branch (nested txns included) no key is put twice or
    both put and deleted, because all of a txn's writes share one revision and a key has at
    most one version per revision. Returns (puts, deletes) of the branch."""
    dels: list[Interval] = [
        (op.key, op.range_end) for op in ops if isinstance(op, DeleteRangeRequest)
    ]
    puts: set[bytes] = set()
    for op in ops:
        if not isinstance(op, TxnRequest):
            continue
        puts_then, dels_then = _check_intervals(op.success)
        puts_else, dels_else = _check_intervals(op.failure)
        for key in sorted(puts_then):
            _no_duplicate(key, puts, dels)
            puts.add(key)
        for key in sorted(puts_else):
            if key not in puts_then:  # then and else are exclusive, so a shared key is fine
                _no_duplicate(key, puts, dels)
            elif any(in_range(key, s, e) for s, e in dels):
                raise ErrDuplicateKey(f"TxnRequest: key {key!r} is both put and deleted")
            puts.add(key)
        dels += dels_then + dels_else
    for op in ops:
        if isinstance(op, PutRequest):
            _no_duplicate(op.key, puts, dels)
            puts.add(op.key)
    return puts, dels


def _no_duplicate(key: bytes, puts: set[bytes], dels: list[Interval]) -> None:
    if key in puts:
        raise ErrDuplicateKey(f"TxnRequest: key {key!r} is put twice")
    if any(in_range(key, s, e) for s, e in dels):
        raise ErrDuplicateKey(f"TxnRequest: key {key!r} is both put and deleted")


def _txn_id(txn: bytes, where: str) -> None:
    if not 8 <= len(txn) <= 32:
        raise MalformedRequest(f"{where}.txn: an id of {len(txn)} bytes, expected 8 to 32")


def _key(key: bytes, where: str, limits: KVLimits) -> None:
    if not key:
        raise MalformedRequest(f"{where}.key: key is not provided (use {ALL_KEYS!r} for all)")
    if len(key) > limits.max_key_bytes:
        raise ErrRequestTooLarge(f"{where}.key: {len(key)} bytes, limit {limits.max_key_bytes}")


def _non_negative(value: int, where: str) -> None:
    if value < 0:
        raise MalformedRequest(f"{where}: {value} is negative")


def _positive(value: int, where: str) -> None:
    if value <= 0:
        raise MalformedRequest(f"{where}: {value} must be > 0")
