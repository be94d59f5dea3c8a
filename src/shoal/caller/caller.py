"""The caller: one call, many attempts, each on a backend the picker chooses.

Per call: a deadline over all attempts and a timeout per attempt. A failed attempt is
retried on a backend not tried yet when it is safe: always when nothing was sent
(`ConnectFailed`), otherwise only for idempotent requests; the rest fail fast. Every retry
needs a slot from the retry budget. Each backend has a circuit breaker, and every outcome
feeds the outlier detector; backends that are ejected or unhealthy leave the picker's set.

A successful attempt returns an `Exchange` that stays open (in flight, holding its breaker
probe and budget share) until `finish(exchange, ok)`: for a proxy the response body still
streams after the attempt has returned its head."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..balance import Backend, Picker, Request, make_picker
from ..registry.outlier import OutlierDetector
from .breaker import BreakerConfig, CircuitBreaker
from .budget import RetryBudget
from .errors import ConnectFailed, DeadlineExceeded, NoBackend, SendFailed, UpstreamFailed

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CallPolicy:
    deadline_s: float = 15.0  # the whole call, retries included
    try_timeout_s: float = 5.0  # one attempt, until it returns
    max_attempts: int = 3  # first try plus retries; a retry never reuses a backend

    def __post_init__(self) -> None:
        if self.deadline_s <= 0 or self.try_timeout_s <= 0 or self.max_attempts < 1:
            raise ValueError("deadline_s and try_timeout_s must be > 0, max_attempts >= 1")


@dataclass(frozen=True, slots=True)
class Resume:
    """A call whose first attempt was started without awaiting (`Caller.begin`) and failed."""
    start: float  # when the call started (its deadline counts from here)
    backend_id: str
    error: Exception  # ConnectFailed, SendFailed or TimeoutError


@dataclass(slots=True)
class Exchange(Generic[T]):
    backend: Backend
    value: T
    started: float
    attempts: int


class Caller:
    def __init__(self, lb: str = "round-robin", *, lb_options: dict[str, Any] | None = None,
                 policy: CallPolicy | None = None, breaker: BreakerConfig | None = None,
                 budget: RetryBudget | None = None, outlier: OutlierDetector | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.lb, self.lb_options = lb, dict(lb_options or {})
        self.policy = policy or CallPolicy()
        self.breaker_config = breaker or BreakerConfig()
        self.budget = budget or RetryBudget()
        self.outlier = outlier or OutlierDetector()
        self.clock = clock
        self.backends: dict[str, Backend] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.unhealthy: set[str] = set()
        self.panic = False  # every backend unhealthy: routing to all of them (Envoy's panic)
        self.retries = 0
        self._picker: Picker | None = None
        make_picker(lb, [Backend("probe", "127.0.0.1:1")], **self.lb_options)  # fail early

    # ------------------------------------------------------------------ membership
    def update(self, backends: Sequence[Backend]) -> None:
        self.backends = {b.id: b for b in backends}
        self.breakers = {b: self.breakers.get(b) or CircuitBreaker(self.breaker_config)
                         for b in self.backends}
        self.unhealthy &= set(self.backends)
        self.outlier.update(list(self.backends))
        self._rebuild()

    def set_healthy(self, backend_id: str, healthy: bool) -> None:
        if healthy == (backend_id not in self.unhealthy):
            return
        (self.unhealthy.discard if healthy else self.unhealthy.add)(backend_id)
        self._rebuild()

    def routable(self) -> tuple[Backend, ...]:
        return self._picker.backends if self._picker is not None else ()

    def inflight(self, backend_id: str) -> int:
        return self._picker.inflight(backend_id) if self._picker is not None else 0

    def _rebuild(self) -> None:
        ejected = self.outlier.ejected()
        live = [b for b in self.backends.values() if b.id not in ejected and b.weight > 0]
        healthy = [b for b in live if b.id not in self.unhealthy]
        self.panic = bool(live) and not healthy
        chosen = healthy or live
        if not chosen:
            self._picker = None
        elif self._picker is None:
            self._picker = make_picker(self.lb, chosen, **self.lb_options)
        else:
            self._picker.update(chosen)  # keeps in-flight counts and latency estimates

    # ------------------------------------------------------------------ choosing
    def select(self, key: str | bytes | None, client: str | None, tried: Sequence[str],
               now: float) -> Backend | None:
        """A backend not in `tried` whose breaker lets a request through, or None."""
        if now >= self.outlier.next_expiry and self.outlier.sweep(now):
            self._rebuild()
        picker = self._picker
        if picker is None:
            return None
        first = picker.pick(Request(key, client, now))
        if self._admit(first, tried, now):
            return first
        # Hash pickers answer the same key the same way: salt it to ask for another backend.
        base = key if key is not None else (client or "")
        for salt in (1, 2):
            b = picker.pick(Request(f"{base!s}#{salt}", client, now))
            if self._admit(b, tried, now):
                return b
        return next((b for b in picker.backends if self._admit(b, tried, now)), None)

    def _admit(self, b: Backend, tried: Sequence[str], now: float) -> bool:
        return b.id not in tried and self.breakers[b.id].allow(now)

    # ------------------------------------------------------------------ calling
    async def call(self, attempt: Callable[[Backend], Awaitable[T]], *,
                   key: str | bytes | None = None, client: str | None = None,
                   idempotent: bool = False, deadline_s: float | None = None,
                   timer: Any = None, avoid: Sequence[str] = (),
                   resume: Resume | None = None) -> Exchange[T]:
        """Run `attempt(backend)` until one succeeds or the policy says stop. On success the
        caller must `finish` the returned exchange. `timer` is handed to `_timed` untouched
        (a subclass's own timeout mechanism, e.g. the gateway's per-connection watchdog).
        Backends in `avoid` are never chosen (a fan-out sends each branch to its own).
        `resume` continues a call begun with `begin` from its failed first attempt."""
        policy = self.policy
        tried: list[str] = list(avoid)
        last: Exception | None = None
        if resume is None:
            start, first = self.clock(), 0
            self.budget.start_request()
        else:
            start, first, last = resume.start, 1, resume.error
            tried.append(resume.backend_id)
        end = start + (deadline_s if deadline_s is not None else policy.deadline_s)
        try:
            for n in range(first, policy.max_attempts):
                if last is not None and not (isinstance(last, ConnectFailed) or idempotent):
                    break  # it may have run: only idempotent requests can run twice
                now = self.clock()
                if n:
                    if now >= end or not self.budget.try_retry():
                        break
                    self.retries += 1
                try:
                    backend = self.select(key, client, tried, now)
                    if backend is None:
                        if len(tried) == len(avoid):
                            raise NoBackend(f"no available backend ({len(self.backends)} "
                                            f"registered, {len(self.outlier.ejected())} ejected)")
                        break
                    tried.append(backend.id)
                    value = await self._attempt(attempt, backend, min(policy.try_timeout_s, end - now),
                                                timer)
                finally:
                    if n:
                        self.budget.end_retry()
                if not isinstance(value, Exception):
                    return Exchange(backend, value, start, n + 1)
                last = value
        except BaseException:
            self.budget.end_request()
            raise
        self.budget.end_request()
        n_tried = len(tried) - len(avoid)
        if isinstance(last, TimeoutError):
            what = "the call's deadline" if self.clock() >= end - 1e-3 else "the attempt timeout"
            raise DeadlineExceeded(f"backend {tried[-1]} did not answer within {what} "
                                   f"({n_tried} attempt{'s' * (n_tried > 1)})") from last
        raise UpstreamFailed(f"backend {tried[-1]} failed: {last} "
                             f"({n_tried} attempt{'s' * (n_tried > 1)})") from last

    def begin(self, key: str | bytes | None, client: str | None) -> tuple[Backend, float]:
        """A call's first attempt, started without awaiting (a proxy's fast path): its backend
        and start time. Then exactly one of: `finish` (on an `Exchange` of the two),
        `failed` and `call(resume=)`, or `abandon`. NoBackend if none is routable."""
        start = self.clock()
        self.budget.start_request()
        backend = self.select(key, client, (), start)
        if backend is None:
            self.budget.end_request()
            raise NoBackend(f"no available backend ({len(self.backends)} registered, "
                            f"{len(self.outlier.ejected())} ejected)")
        assert self._picker is not None
        self._picker.on_start(backend.id)
        return backend, start

    def failed(self, backend_id: str, t0: float) -> None:
        """An attempt started at `t0` failed (ConnectFailed, SendFailed or a timeout)."""
        if self._picker is not None:
            self._picker.on_finish(backend_id)
        self._record(backend_id, False, self.clock() - t0)

    def abandon(self, backend_id: str) -> None:
        """A call begun with `begin` ends with no verdict on its backend (it was never sent)."""
        if self._picker is not None:
            self._picker.on_finish(backend_id)
        breaker = self.breakers.get(backend_id)
        if breaker is not None:
            breaker.on_cancel()
        self.budget.end_request()

    async def _attempt(self, attempt: Callable[[Backend], Awaitable[T]], backend: Backend,
                       timeout: float, timer: Any) -> T | Exception:
        """One try: returns the value, or the exception (ConnectFailed, SendFailed or
        TimeoutError) after recording the failure."""
        picker = self._picker
        assert picker is not None
        picker.on_start(backend.id)
        t0 = self.clock()
        try:
            return await self._timed(attempt, backend, timeout, timer)
        except (ConnectFailed, SendFailed, TimeoutError) as exc:
            self.failed(backend.id, t0)
            return exc
        except BaseException:
            picker.on_finish(backend.id)
            self.breakers[backend.id].on_cancel()
            raise

    async def _timed(self, attempt: Callable[[Backend], Awaitable[T]], backend: Backend,
                     timeout: float, timer: Any) -> T:
        """Run one attempt, raising TimeoutError after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            return await attempt(backend)

    def finish(self, exchange: Exchange[Any], ok: bool) -> None:
        """The exchange is over: `ok` False if the backend answered 5xx or broke mid-body."""
        now = self.clock()
        bid = exchange.backend.id
        if self._picker is not None:
            self._picker.on_finish(bid)
        self.budget.end_request()
        self._record(bid, ok, now - exchange.started, now)

    def _record(self, bid: str, ok: bool, latency_s: float, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        breaker = self.breakers.get(bid)
        if breaker is not None:
            (breaker.on_success if ok else breaker.on_failure)(now)
        if self._picker is not None:
            self._picker.on_result(bid, latency_s, ok, now)
        if self.outlier.on_result(bid, ok, now):
            self._rebuild()

