"""Durable, claimed progress for service-level transactions: what sagas (saga.py) and TCC
(tcc.py) share, so neither copies the other's bookkeeping.

Each instance (one saga run, one TCC transaction) is a record in Shoal's store, under a root
such as `/shoal/sagas` (normal keys, not the reserved `\\xff\\xfe/shoal/` space):

    <root>/<id>                the record: a msgpack map (format, kind, definition name, input,
                               status, error, and the kind's own fields: steps, tries, ...)
    <root>/<id>/claim          who drives the instance now: a key attached to that process's lease
    <root>/<id>/branch/<name>  a TCC branch's fence (tcc.py)
    <root>.inflight/<id>       present from creation until the instance is finished: what
                               recovery scans, so finished records cost it nothing

Ownership. A coordinator process holds one lease, kept alive while it runs, and drives an
instance only while it holds the instance's claim: the claim key, created with compare
"absent" and attached to that lease. The claim key's create revision is the **fencing token**:
every new claim of an instance has a larger one. A process that dies (or stops refreshing for
longer than the lease's ttl) loses its lease, the store deletes its claim keys, and the
instances become claimable again.

Fencing. Every write of a record compares the record's mod revision (nobody wrote it since
we did) and the claim's create revision (the claim is still ours, not re-created by a newer
owner), so a paused old owner cannot overwrite a newer owner's progress: its write fails and
it stops with LostClaim. Actions get the token and `guards` (the same claim comparison) to put
into their own store transactions, and external services can refuse requests carrying a token
older than one they have seen.

Recovery. `recover()` scans the in-flight index, skips instances claimed by a live owner,
and takes each unclaimed one with compare-and-put (claim absent and record unchanged since it
was read), so exactly one process resumes each; it then drives it from its recorded state.
Work that must finish (a compensation, a confirm, a step past a saga's pivot) and keeps
failing is *stalled*: after its bounded retries the record gets a `retry_after` time and the
claim is released in the same write, and a later recovery pass tries again, with growing
delays between stalls."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import socket
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

import msgpack

from ..client import txn
from ..client.aio import Client
from ..client.errors import ClientError
from ..kv import prefix_end
from ..kv.errors import ErrLeaseNotFound, KVError
from ..kv.keyvalue import KeyValue
from ..kv.requests import Compare, CompareResult, CompareTarget, Op, RangeResponse, TxnResponse

log = logging.getLogger("shoal.txn")

FORMAT = 1  # the record layout's version, stored in every record
MAX_ID = 200  # characters in an instance id
SCAN_PAGE = 64  # in-flight index entries read (and their records and claims) per recovery step
T = TypeVar("T")


# ---------------------------------------------------------------------------- errors
class OrchestrationError(Exception):
    """Something about an instance's durable state or its ownership, as opposed to a
    failure of a user's action (which is retried, then compensated or stalled)."""


class UnknownDefinition(OrchestrationError):
    def __init__(self, kind: str, name: str, known: Iterable[str], instance: str | None = None):
        names = ", ".join(sorted(known)) or "none"
        where = f" (instance {instance!r} was started with it)" if instance else ""
        super().__init__(f"no {kind} definition named {name!r} is registered here{where}; "
                         f"registered: {names}. A recovering process needs the same definitions "
                         "as the one that started the instance")
        self.name = name


class MalformedState(OrchestrationError):
    def __init__(self, key: bytes, reason: str):
        super().__init__(f"stored state at {key!r} is malformed: {reason}")
        self.key, self.reason = key, reason


class LostClaim(OrchestrationError):
    """This process no longer owns the instance: it must stop driving it (a newer owner, or
    a later recovery, carries on from the recorded state)."""

    def __init__(self, kind: str, id: str, reason: str):
        super().__init__(f"{kind} {id!r}: lost the claim: {reason}")
        self.id, self.reason = id, reason


class InstanceBusy(OrchestrationError):
    """Another live owner (or another call in this process) drives the instance now."""


class ConflictingStart(OrchestrationError):
    """An id reused with another definition or another input."""


class Stalled(OrchestrationError):
    """Work that must finish kept failing after its retries; the instance was released for a
    recovery pass to try again from `retry_after` (a time.time() value)."""

    def __init__(self, kind: str, id: str, what: str, retry_after: float):
        super().__init__(f"{kind} {id!r} stalled: {what}; released for recovery to retry after "
                         f"{max(0.0, retry_after - time.time()):.1f} s")
        self.id, self.what, self.retry_after = id, what, retry_after


class Abort(Exception):
    """Raised by an action (or a TCC try) that fails for good (a business refusal, say):
    it is not retried."""


# ---------------------------------------------------------------------------- retries
@dataclass(frozen=True)
class Retry:
    """`retries` more attempts after the first, `backoff` seconds before the first retry,
    doubling (with jitter) up to `max_backoff`; `timeout` bounds each attempt."""

    retries: int = 3
    backoff: float = 0.05
    max_backoff: float = 2.0
    timeout: float | None = None

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < self.backoff:
            raise ValueError(f"retry policy needs retries >= 0 and 0 <= backoff <= max_backoff, "
                             f"not {self}")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"an attempt's timeout must be positive, not {self.timeout}")


async def attempt(call: Callable[[int], Awaitable[T]], policy: Retry, what: str) -> T:
    """`call(n)` for n = 1, 2, ... until it returns, at most 1 + policy.retries times.
    Abort and OrchestrationError are raised at once: retrying cannot change them."""
    delay = policy.backoff
    for n in range(1, policy.retries + 2):
        try:
            async with asyncio.timeout(policy.timeout):
                return await call(n)
        except (Abort, OrchestrationError):
            raise
        except Exception as exc:
            if n > policy.retries:
                raise
            log.info("%s: attempt %d failed (%r); retrying", what, n, exc)
        await asyncio.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, policy.max_backoff)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class Namespace:
    """Where one kind's instances live (see the module docstring for the layout)."""

    root: bytes

    def __post_init__(self) -> None:
        if not self.root.startswith(b"/") or self.root.endswith(b"/") or len(self.root) < 2:
            raise ValueError(f"a root is a key path like b'/shoal/sagas', not {self.root!r}")

    def record(self, id: str) -> bytes:
        return self.root + b"/" + id.encode()

    def claim(self, id: str) -> bytes:
        return self.record(id) + b"/claim"

    def child(self, id: str, *parts: str) -> bytes:
        return b"/".join([self.record(id), *(p.encode() for p in parts)])

    @property
    def inflight_prefix(self) -> bytes:
        return self.root + b".inflight/"

    def inflight(self, id: str) -> bytes:
        return self.inflight_prefix + id.encode()


def check_name(what: str, name: str) -> str:
    """Ids and names become path segments: no '/', no control characters, bounded."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_ID:
        raise ValueError(f"{what} must be a string of 1..{MAX_ID} characters, not {name!r}")
    if "/" in name or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise ValueError(f"{what} {name!r} may not contain '/' or control characters")
    return name


def claim_held(claim_key: bytes, token: int) -> Compare:
    """Holds while the claim created at revision `token` still exists (not expired, not
    replaced by a newer owner's)."""
    return Compare(claim_key, CompareTarget.CREATE, CompareResult.EQUAL, token)


def encode(value: Any, what: str) -> bytes:
    try:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{what} must be msgpack-encodable (None, bool, int, float, str, "
                         f"bytes, lists and maps of them): {exc}") from None


def decode(key: bytes, raw: bytes) -> Any:
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise MalformedState(key, f"not msgpack ({exc})") from None


def first_kv(resp: Any) -> KeyValue | None:
    assert isinstance(resp, RangeResponse)
    return resp.kvs[0] if resp.kvs else None


# ---------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Outcome:
    """Where an instance is (or ended): `status` is the kind's (saga: done / compensated;
    TCC: confirmed / cancelled; others while in flight), `results` its steps' or tries'
    results by name, `error` what made it compensate or cancel."""

    id: str
    kind: str
    definition: str
    status: str
    results: dict[str, Any]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("done", "confirmed")


@dataclass(frozen=True)
class Change:
    """One durable transition, as passed to `on_change` after it was written: `step` and
    `state` name the saga step (or TCC participant) it was about, if any."""

    kind: str
    id: str
    status: str
    step: str | None
    state: str | None
    token: int


@dataclass
class RecoveryPass:
    """What one `recover()` did: instances it drove to the end, instances it could not
    (the error says why: unknown definition, malformed state, stalled, lost claim), stalled
    ones not due yet, and how many live owners were found driving theirs."""

    finished: list[Outcome] = field(default_factory=list)
    failed: dict[str, Exception] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)
    busy: int = 0


@dataclass
class Instance:
    """An instance this process holds the claim of: its record as last written, the
    record key's mod revision then, and the claim's fencing token."""

    id: str
    record: dict[str, Any]
    revision: int
    token: int
    fresh: bool  # created by this process's run(), not resumed


class Named(Protocol):
    @property
    def name(self) -> str: ...


D = TypeVar("D", bound=Named)


# ---------------------------------------------------------------------------- coordinator
class Coordinator(ABC, Generic[D]):
    """The durable-state and claim machinery; saga.Orchestrator and tcc.TccCoordinator add
    how to drive their kind. `ttl`: the lease's seconds (how long a dead process's instances
    wait for recovery); `max_concurrent`: instances one recovery pass drives at once;
    `on_change`: called (synchronously) after every durable transition."""

    kind: ClassVar[str]
    default_root: ClassVar[bytes]
    statuses: ClassVar[frozenset[str]]
    terminal: ClassVar[frozenset[str]]

    def __init__(self, client: Client, definitions: Iterable[D] = (), *, ttl: int = 10,
                 root: bytes | None = None, max_concurrent: int = 16,
                 stall_backoff: float = 1.0, max_stall_backoff: float = 300.0,
                 owner: str | None = None, on_change: Callable[[Change], None] | None = None):
        if ttl < 1:
            raise ValueError(f"lease ttl is at least 1 second, not {ttl}")
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, not {max_concurrent}")
        if not 0 < stall_backoff <= max_stall_backoff:
            raise ValueError("need 0 < stall_backoff <= max_stall_backoff")
        self.client, self.ttl, self.max_concurrent = client, ttl, max_concurrent
        self.ns = Namespace(root or self.default_root)
        self.stall_backoff, self.max_stall_backoff = stall_backoff, max_stall_backoff
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.on_change = on_change
        self._definitions: dict[str, D] = {}
        for d in definitions:
            self.register(d)
        self._lease_id = 0
        self._keepalive: asyncio.Task[None] | None = None
        self._lease_lock = asyncio.Lock()
        self._driving: set[str] = set()  # ids this process drives now (claimed by us)

    # ------------------------------------------------------------------ definitions
    def register(self, definition: D) -> None:
        if definition.name in self._definitions:
            raise ValueError(f"a {self.kind} definition named {definition.name!r} is already "
                             "registered")
        self._definitions[definition.name] = definition

    def definition(self, name: str, instance: str | None = None) -> D:
        try:
            return self._definitions[name]
        except KeyError:
            raise UnknownDefinition(self.kind, name, self._definitions, instance) from None

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Take the lease now (else the first claim does)."""
        await self._lease()

    async def close(self) -> None:
        """Stop refreshing and revoke the lease: this process's claims go at once, so
        instances still in flight here are recovered elsewhere without waiting for the ttl
        (their drivers here stop with LostClaim at their next write)."""
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        lease, self._lease_id = self._lease_id, 0
        if lease:
            with contextlib.suppress(ClientError, KVError, TimeoutError):
                await self.client.lease_revoke(lease)

    @property
    def lease_id(self) -> int:
        """The lease this process's claims are attached to (0 before the first)."""
        return self._lease_id

    async def _lease(self) -> int:
        async with self._lease_lock:
            if self._lease_id and self._keepalive is not None and not self._keepalive.done():
                return self._lease_id
            grant = await self.client.lease_grant(self.ttl)
            self._lease_id = grant.id
            self._keepalive = self.client.keep_alive(grant.id, self.ttl)
            self._keepalive.add_done_callback(functools.partial(self._keepalive_ended, grant.id))
            return self._lease_id

    def _keepalive_ended(self, lease: int, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s coordinator %s: keep-alive of lease %x failed (%s): the claims on "
                        "it are lost; the next claim takes a new lease", self.kind, self.owner,
                        lease, task.exception())

    def _drop_lease(self, lease: int) -> None:
        """Forget `lease` (the store has): the next _lease() grants a new one."""
        if self._lease_id == lease:
            self._lease_id = 0
            if self._keepalive is not None:
                self._keepalive.cancel()
                self._keepalive = None

    async def _with_lease(self, call: Callable[[int], Awaitable[T]]) -> T:
        """`call(lease)`, once more with a fresh lease if the store no longer knows ours
        (it expired while this process was paused, say)."""
        lease = await self._lease()
        try:
            return await call(lease)
        except ErrLeaseNotFound:
            self._drop_lease(lease)
            return await call(await self._lease())

    def _claim_value(self, lease: int) -> bytes:
        return encode({"owner": self.owner, "lease": lease}, "claim")

    # ------------------------------------------------------------------ records
    def _new_record(self, definition: str, input: Any, **fields: Any) -> dict[str, Any]:
        return {"v": FORMAT, "kind": self.kind, "def": definition, "input": input,
                "status": self.initial_status, "error": None, "stalls": 0, "retry_after": 0.0,
                "stalled": None, **fields}

    initial_status: ClassVar[str]

    def _decode(self, key: bytes, raw: bytes) -> dict[str, Any]:
        rec = decode(key, raw)
        if not isinstance(rec, dict):
            raise MalformedState(key, f"a record is a map, this is a {type(rec).__name__}")
        if rec.get("v") != FORMAT:
            raise MalformedState(key, f"format {rec.get('v')!r}; this code reads {FORMAT}")
        if rec.get("kind") != self.kind:
            raise MalformedState(key, f"kind {rec.get('kind')!r}, expected {self.kind!r}")
        if not isinstance(rec.get("def"), str):
            raise MalformedState(key, "no definition name")
        if rec.get("status") not in self.statuses:
            raise MalformedState(key, f"status {rec.get('status')!r} is none of "
                                      f"{sorted(self.statuses)}")
        if not isinstance(rec.get("stalls"), int) or \
                not isinstance(rec.get("retry_after"), int | float):
            raise MalformedState(key, "stalls / retry_after missing or not numbers")
        for name in ("error", "stalled"):
            if rec.get(name) is not None and not isinstance(rec[name], str):
                raise MalformedState(key, f"{name} is not a string")
        self._validate(key, rec)
        return rec

    @abstractmethod
    def _validate(self, key: bytes, record: dict[str, Any]) -> None:
        """Raise MalformedState if the kind's own fields do not hold together."""

    @abstractmethod
    def _outcome(self, id: str, record: dict[str, Any]) -> Outcome: ...

    @abstractmethod
    def _matching(self, id: str, record: dict[str, Any]) -> D:
        """The record's definition, checked against what the record was written with
        (UnknownDefinition, MalformedState)."""

    @abstractmethod
    async def _drive(self, inst: Instance) -> Outcome:
        """Take a claimed instance from its recorded state to a terminal one."""

    async def status(self, id: str) -> Outcome | None:
        """Where instance `id` is now, as recorded (None if there is no such instance)."""
        key = self.ns.record(check_name("id", id))
        kv = first_kv(await self.client.get(key))
        return None if kv is None else self._outcome(id, self._decode(key, kv.value))

    async def forget(self, id: str) -> bool:
        """Delete a finished instance's record and everything under it (TCC fences too: do
        it only once no late request for it can arrive). False if it is not finished."""
        key = self.ns.record(check_name("id", id))
        kv = first_kv(await self.client.get(key))
        if kv is None or self._decode(key, kv.value)["status"] not in self.terminal:
            return False
        resp = await self.client.txn([txn.mod_revision_equals(key, kv.mod_revision)],
                                     [txn.delete(key), txn.delete(key + b"/", prefix=True)])
        return resp.succeeded

    # ------------------------------------------------------------------ claims and writes
    def guards(self, inst: Instance) -> tuple[Compare, ...]:
        """Comparisons that hold only while `inst` is still claimed by this process."""
        return (claim_held(self.ns.claim(inst.id), inst.token),)

    async def _start(self, definition: str, id: str | None, input: Any,
                     record: dict[str, Any]) -> Outcome:
        """Create instance `id` and drive it. An id seen before is not run twice: a finished
        one answers with its outcome, an unclaimed one in flight is resumed, one driven by a
        live owner raises InstanceBusy; with another definition or input, ConflictingStart."""
        id = check_name("id", id if id is not None else uuid.uuid4().hex)
        self.definition(definition)
        value = encode(record, f"{self.kind} {id!r}'s input")
        if id in self._driving:
            raise InstanceBusy(f"{self.kind} {id!r} is already being driven by this process")
        self._driving.add(id)
        try:
            key, claim = self.ns.record(id), self.ns.claim(id)

            async def create(lease: int) -> TxnResponse:
                return await self.client.txn(
                    [txn.absent(key)],
                    [txn.put(key, value), txn.put(claim, self._claim_value(lease), lease=lease),
                     txn.put(self.ns.inflight(id), b"")],
                    [txn.get(key), txn.get(claim)])

            resp = await self._with_lease(create)
            if resp.succeeded:
                rev = resp.header.revision
                inst = Instance(id, record, rev, rev, fresh=True)
                self._notify(inst, None, "created")
                return await self._drive_claimed(inst)
            kv, held = first_kv(resp.responses[0]), first_kv(resp.responses[1])
            assert kv is not None
            existing = self._decode(key, kv.value)
            if existing["def"] != definition:
                raise ConflictingStart(f"{self.kind} id {id!r} belongs to definition "
                                       f"{existing['def']!r}, not {definition!r}")
            if encode(existing["input"], "input") != encode(input, "input"):
                raise ConflictingStart(f"{self.kind} id {id!r} was started with another input; "
                                       "an id names one instance: pick a new one")
            if existing["status"] in self.terminal:
                return self._outcome(id, existing)
            if held is not None:
                raise InstanceBusy(f"{self.kind} {id!r} is being driven by "
                                   f"{self._claim_owner(held)}")
            inst2 = await self._take(id, kv, existing)
            if inst2 is None:
                raise InstanceBusy(f"{self.kind} {id!r} was claimed by another process just now")
            return await self._drive_claimed(inst2)
        finally:
            self._driving.discard(id)

    async def _take(self, id: str, kv: KeyValue, record: dict[str, Any]) -> Instance | None:
        """Claim an unclaimed instance whose record is still `kv` (compare-and-put: of the
        processes trying at once, one gets it); None if another did first."""
        key, claim = self.ns.record(id), self.ns.claim(id)

        async def grab(lease: int) -> TxnResponse:
            return await self.client.txn(
                [txn.absent(claim), txn.mod_revision_equals(key, kv.mod_revision)],
                [txn.put(claim, self._claim_value(lease), lease=lease)])

        resp = await self._with_lease(grab)
        if not resp.succeeded:
            return None
        log.info("%s %s: claimed %r to resume it from %r (fencing token %d)", self.kind,
                 self.owner, id, record["status"], resp.header.revision)
        return Instance(id, record, kv.mod_revision, resp.header.revision, fresh=False)

    def _claim_owner(self, kv: KeyValue) -> str:
        with contextlib.suppress(MalformedState, TypeError, AttributeError):
            return f"{decode(kv.key, kv.value).get('owner')} (fencing token {kv.create_revision})"
        return f"an unknown owner (fencing token {kv.create_revision})"

    async def _save(self, inst: Instance, record: dict[str, Any], *, step: str | None = None,
                    state: str | None = None, final: bool = False,
                    release: bool = False) -> None:
        """Write `record` if the record is as we last wrote it and the claim is still ours;
        `final` also deletes the claim and the in-flight entry, `release` the claim.
        LostClaim if the compare fails: the caller must stop."""
        key, claim = self.ns.record(inst.id), self.ns.claim(inst.id)
        if final:
            record = {**record, "stalled": None}  # (what stalled it was overcome)
        ops: list[Op] = [txn.put(key, encode(record, f"{self.kind} {inst.id!r}'s state"))]
        if final:
            ops += [txn.delete(claim), txn.delete(self.ns.inflight(inst.id))]
        elif release:
            ops.append(txn.delete(claim))
        resp = await self.client.txn(
            [txn.mod_revision_equals(key, inst.revision), claim_held(claim, inst.token)], ops,
            [txn.get(key), txn.get(claim)])
        if not resp.succeeded:
            raise self._lost(inst, first_kv(resp.responses[0]), first_kv(resp.responses[1]))
        inst.record, inst.revision = record, resp.header.revision
        self._notify(inst, step, state)

    def _lost(self, inst: Instance, kv: KeyValue | None, held: KeyValue | None) -> LostClaim:
        if held is None:
            why = (f"its claim (fencing token {inst.token}) is gone: this process's lease "
                   f"{self._lease_id:x} expired or was revoked")
        elif held.create_revision != inst.token:
            why = (f"{self._claim_owner(held)} claimed it after us (our token: {inst.token})")
        else:
            why = (f"its record was rewritten by someone else (revision "
                   f"{kv.mod_revision if kv else 0}, we wrote {inst.revision})")
        return LostClaim(self.kind, inst.id, why)

    async def _stall(self, inst: Instance, what: str) -> None:
        """Release the instance for a later recovery pass (see Stalled)."""
        stalls = inst.record["stalls"] + 1
        delay = min(self.stall_backoff * 2 ** min(stalls - 1, 30), self.max_stall_backoff)
        retry_after = time.time() + delay * (0.75 + random.random() / 2)
        await self._save(inst, {**inst.record, "stalls": stalls, "retry_after": retry_after,
                                "stalled": what}, release=True)
        raise Stalled(self.kind, inst.id, what, retry_after)

    async def _release(self, inst: Instance) -> None:
        """Give the claim up without writing the record (best effort)."""
        claim = self.ns.claim(inst.id)
        with contextlib.suppress(ClientError, KVError, TimeoutError):
            async with asyncio.timeout(5):
                await self.client.txn([claim_held(claim, inst.token)], [txn.delete(claim)])

    async def _drive_claimed(self, inst: Instance) -> Outcome:
        self._driving.add(inst.id)
        try:
            return await self._drive(inst)
        except (LostClaim, Stalled):
            raise  # nothing of ours to give back
        except BaseException:
            # An error of ours or a cancel: let another process (or a later pass) take it now
            # rather than when this process's lease ends.
            await asyncio.shield(self._release(inst))
            raise
        finally:
            self._driving.discard(inst.id)

    def _notify(self, inst: Instance, step: str | None, state: str | None) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(Change(self.kind, inst.id, inst.record["status"], step, state,
                                  inst.token))
        except Exception:
            log.exception("%s on_change callback failed", self.kind)

    # ------------------------------------------------------------------ recovery
    async def recover(self) -> RecoveryPass:
        """One pass: claim every in-flight instance nobody drives (its owner's lease ended,
        or it was released) and drive each to the end, at most `max_concurrent` at a time."""
        report = RecoveryPass()
        slots = asyncio.Semaphore(self.max_concurrent)
        tasks: set[asyncio.Task[None]] = set()

        async def resume(inst: Instance) -> None:
            try:
                report.finished.append(await self._drive_claimed(inst))
            except Exception as exc:  # reported, and the next instance is not held up
                log.warning("%s recovery of %r: %s", self.kind, inst.id, exc)
                report.failed[inst.id] = exc
            finally:
                slots.release()

        try:
            async for id, kv, record in self._orphans(report):
                await slots.acquire()
                if id in self._driving:
                    slots.release()
                    continue
                # Marked before any await, so neither run() nor another pass takes it too;
                # the driver's own bookkeeping unmarks it when it ends.
                self._driving.add(id)
                inst = None
                try:
                    inst = await self._take_or_adopt(id, kv, record)
                finally:
                    if inst is None:
                        self._driving.discard(id)
                        slots.release()
                if inst is None:
                    continue
                task = asyncio.create_task(resume(inst))
                tasks.add(task)
        finally:
            await asyncio.gather(*tasks, return_exceptions=True)
        return report

    async def _take_or_adopt(self, id: str, kv: KeyValue, record: dict[str, Any],
                             ) -> Instance | None:
        held = first_kv(await self.client.get(self.ns.claim(id)))
        if held is None:
            return await self._take(id, kv, record)
        # Claimed with our own lease but driven by nobody here (a driver that failed and could
        # not give it back): ours to carry on under the same token.
        return Instance(id, record, kv.mod_revision, held.create_revision, fresh=False) \
            if held.lease == self._lease_id else None

    async def _orphans(self, report: RecoveryPass,
                       ) -> AsyncIterator[tuple[str, KeyValue, dict[str, Any]]]:
        """In-flight instances nobody drives and that are due, page by page of the index."""
        prefix = self.ns.inflight_prefix
        start, end = prefix, prefix_end(prefix)
        while True:
            page = await self.client.get(start, range_end=end, limit=SCAN_PAGE, keys_only=True)
            ids = [kv.key[len(prefix):].decode(errors="replace") for kv in page.kvs]
            reads = await asyncio.gather(*(self._peek(id) for id in ids))
            for id, (kv, held) in zip(ids, reads, strict=True):
                if held is not None and held.lease != self._lease_id:
                    report.busy += 1
                    continue
                if id in self._driving:
                    continue
                if kv is None:  # (cannot happen through this module: created together)
                    await self.client.txn([txn.absent(self.ns.record(id))],
                                          [txn.delete(self.ns.inflight(id))])
                    continue
                try:
                    record = self._decode(kv.key, kv.value)
                    if record["status"] in self.terminal:
                        continue
                    self._matching(id, record)  # checked before claiming, not after
                except OrchestrationError as exc:
                    report.failed[id] = exc  # left alone: another process may know better
                    continue
                if record["retry_after"] > time.time():
                    report.waiting.append(id)
                    continue
                yield id, kv, record
            if not page.more or not page.kvs:
                return
            start = page.kvs[-1].key + b"\x00"

    async def _peek(self, id: str) -> tuple[KeyValue | None, KeyValue | None]:
        try:
            check_name("id", id)
        except ValueError:
            return None, None
        rec, held = await asyncio.gather(self.client.get(self.ns.record(id)),
                                         self.client.get(self.ns.claim(id)))
        return first_kv(rec), first_kv(held)

    async def run_recovery(self, interval: float | None = None) -> None:
        """Recover forever (until cancelled), a pass every `interval` seconds (default: the
        lease ttl, about how long a dead owner's claims take to go), with jitter so that
        processes started together do not scan together."""
        every = interval if interval is not None else float(self.ttl)
        if every <= 0:
            raise ValueError(f"recovery interval must be positive, not {every}")
        while True:
            try:
                report = await self.recover()
                for id, exc in report.failed.items():
                    log.warning("%s recovery: %r: %s", self.kind, id, exc)
            except (ClientError, KVError, TimeoutError) as exc:
                log.warning("%s recovery pass failed: %s", self.kind, exc)
            await asyncio.sleep(every * (0.75 + random.random() / 2))

