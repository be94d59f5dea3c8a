"""Calling a component that runs elsewhere: discovery, governance and the cluster strategies.

A `Remote` is one component's replicas as this process sees them: the registry's watch keeps
its membership (`update`), a `shoal.caller.Caller` picks a replica with the component's picker
and holds a circuit breaker per replica, the outlier detector and the retry budget. Every
call goes through one of Dubbo's cluster strategies, chosen per call site
(`self.get(Inventory, strategy="forking")`) or per component in the deploy file:

| strategy  | what a call does                                                              |
|-----------|-------------------------------------------------------------------------------|
| failover  | one replica; on failure another, for idempotent methods (or a call never sent) |
| failfast  | one replica, one attempt, the failure raised                                  |
| failsafe  | one attempt; a failure is logged and the call returns None                   |
| failback  | one attempt; a failure returns None and the call is sent again in the background (if that is safe: idempotent, or never sent) |
| forking   | `forks` replicas at once, the first answer wins, the others are cancelled (idempotent methods only) |
| broadcast | every replica; any failure raises once all have answered; else the last answer |

What is safe to send twice decides everything: a call refused before it ran (no connection,
the callee draining) goes to another replica whatever the method; one that may have run (the
connection broke, the deadline passed) is sent again only for `@idempotent` methods, and
only within the retry budget. A non-idempotent call therefore runs at most once: it succeeds,
or fails with an error saying the outcome is unknown.

The method's own exceptions are answers, not faults: they reach the caller (re-raised as the
application's registered exception class when it has one) and count against no replica."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from ..balance import Backend
from ..caller import BreakerConfig, BreakerState, Caller, CallPolicy, NoBackend, RetryBudget
from ..caller import DeadlineExceeded as CallDeadlineExceeded
from ..caller.errors import ConnectFailed, SendFailed
from ..gateway.timeouts import CoarseTimeout, Wheel
from ..registry.instance import Instance
from ..registry.outlier import OutlierConfig, OutlierDetector
from ..rpc import DeadlineExceeded, Pool, RemoteError
from ..rpc.errors import MAY_HAVE_RUN, NEVER_RAN
from ..rpc.server import AUTHORIZATION
from .config import ComponentConfig
from .interface import MethodSpec

log = logging.getLogger(__name__)
DEFAULT_DEADLINE_S = 30.0  # a call with no deadline of its own, nor its caller's
FAILBACK_QUEUE = 1000  # failed calls waiting to be sent again
FAILBACK_DELAY_S = 1.0
T = TypeVar("T")


class StrategyRefused(TypeError):
    """The call site asked for a strategy the method cannot take."""


class RpcCaller(Caller):
    """The caller with its attempts timed on a coarse wheel, as the gateway's are: one loop
    timer per attempt (asyncio.timeout) cost a third of a small call's client-side CPU."""

    wheel: Wheel | None = None  # made in the running loop, on first use

    async def _timed(self, attempt: Callable[[Backend], Awaitable[T]], backend: Backend,
                     timeout: float, timer: Any) -> T:
        if self.wheel is None:
            self.wheel = Wheel()
        async with CoarseTimeout(self.wheel, timeout):
            return await attempt(backend)


class Remote:
    def __init__(self, component: str, config: ComponentConfig, pool: Pool, *,
                 errors: dict[str, type[BaseException]] | None = None,
                 breaker: BreakerConfig | None = None, outlier: OutlierConfig | None = None,
                 budget: RetryBudget | None = None, token: str | None = None):
        self.component, self.config, self.pool = component, config, pool
        self.token = token  # the deployment's secret, sent with every call when set
        self.errors = errors or {}
        from ..balance.registry import options

        self._rng = random.Random()
        lb_options = {"rng": self._rng} if "rng" in options(config.picker) else {}
        self.caller = RpcCaller(config.picker, lb_options=lb_options,
                             policy=CallPolicy(DEFAULT_DEADLINE_S, DEFAULT_DEADLINE_S,
                                               config.retries + 1),
                             breaker=breaker, budget=budget,
                             outlier=OutlierDetector(outlier) if outlier else None)
        self._failback: set[asyncio.Task[None]] = set()

    def update(self, instances: Sequence[Instance]) -> None:
        self.caller.update([i.backend() for i in instances])

    # ------------------------------------------------------------------ one call
    async def invoke(self, method: MethodSpec, payload: bytes, deadline: float,
                     metadata: dict[str, str], strategy: str) -> bytes | None:
        try:
            if strategy == "failover":
                return await self._one(method, payload, deadline, metadata, method.idempotent)
            if strategy == "failfast":
                return await self._one(method, payload, deadline, metadata, False, fast=True)
            if strategy == "failsafe":
                try:
                    return await self._one(method, payload, deadline, metadata, False, fast=True)
                except Exception as exc:  # noqa: BLE001 - failsafe: the failure is only logged
                    log.warning("%s (failsafe): %s", method.qualname, exc)
                    return None
            if strategy == "failback":
                await self._failback_call(method, payload, deadline, metadata)
                return None
            if strategy == "forking":
                return await self._forking(method, payload, deadline, metadata)
            if strategy == "broadcast":
                return await self._broadcast(method, payload, deadline, metadata)
            raise StrategyRefused(f"unknown strategy {strategy!r}")
        except CallDeadlineExceeded as exc:
            raise DeadlineExceeded(str(exc), method.qualname) from exc
        except RemoteError as exc:
            raise self._app_error(exc) from None

    async def _one(self, method: MethodSpec, payload: bytes, deadline: float,
                   metadata: dict[str, str], idempotent: bool, *, fast: bool = False,
                   avoid: Sequence[str] = ()) -> bytes:
        name = method.qualname
        if self.token is not None:
            metadata[AUTHORIZATION] = self.token

        async def attempt(backend: Backend) -> bytes:
            try:
                reply = await self.pool.call(backend.address, name, payload, deadline, metadata,
                                             local_timer=False)
            except NEVER_RAN as exc:
                if fast:  # failfast: no second try, even where one would be safe
                    raise SendFailed(str(exc)) from exc
                raise ConnectFailed(str(exc)) from exc
            except MAY_HAVE_RUN as exc:
                if isinstance(exc, TimeoutError):
                    raise
                raise SendFailed(f"{exc}; it may or may not have run") from exc
            return reply.payload

        exchange = await self.caller.call(attempt, idempotent=idempotent and not fast,
                                          deadline_s=max(0.0, deadline - time.monotonic()),
                                          avoid=avoid)
        self.caller.finish(exchange, True)
        return exchange.value

    def _app_error(self, exc: RemoteError) -> BaseException:
        cls = self.errors.get(exc.type_name)
        if cls is None:
            return exc
        try:
            return cls(exc.detail)
        except Exception:  # noqa: BLE001 - a class that does not take one message
            return exc

    # ------------------------------------------------------------------ fan-out
    def _closed_backends(self) -> list[Backend]:
        now = time.monotonic()
        return [b for b in self.caller.routable()
                if self.caller.breakers[b.id].state(now) is not BreakerState.OPEN]

    def _fan_out(self, method: MethodSpec, payload: bytes, deadline: float,
                 metadata: dict[str, str], targets: list[Backend]) -> list[asyncio.Future[bytes]]:
        ids = [b.id for b in targets]
        return [asyncio.ensure_future(self._one(method, payload, deadline, dict(metadata), True,
                                                fast=True, avoid=[i for i in ids if i != b.id]))
                for b in targets]

    async def _forking(self, method: MethodSpec, payload: bytes, deadline: float,
                       metadata: dict[str, str]) -> bytes:
        if not method.idempotent:
            raise StrategyRefused(f"{method.qualname}: forking runs a call on several replicas "
                                  "at once; only @idempotent methods may use it")
        live = self._closed_backends()
        targets = self._rng.sample(live, min(self.config.forks, len(live))) if live else []
        if len(targets) < 2:  # nothing to fork over: an ordinary call
            return await self._one(method, payload, deadline, metadata, True)
        tasks = self._fan_out(method, payload, deadline, metadata, targets)
        try:
            errors: list[BaseException] = []
            for next_done in asyncio.as_completed(tasks):
                try:
                    return await next_done
                except Exception as exc:  # noqa: BLE001 - another branch may still answer
                    errors.append(exc)
            raise errors[-1]
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t

    async def _broadcast(self, method: MethodSpec, payload: bytes, deadline: float,
                         metadata: dict[str, str]) -> bytes:
        targets = list(self.caller.routable())
        if not targets:
            return await self._one(method, payload, deadline, metadata, False, fast=True)
        tasks = self._fan_out(method, payload, deadline, metadata, targets)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return results[-1]  # type: ignore[return-value]

    # ------------------------------------------------------------------ failback
    async def _failback_call(self, method: MethodSpec, payload: bytes, deadline: float,
                             metadata: dict[str, str]) -> None:
        try:
            await self._one(method, payload, deadline, metadata, False, fast=True)
            return None
        except RemoteError:
            raise  # an answer: nothing to send again
        except Exception as exc:  # noqa: BLE001 - failback: retried later when safe
            if not (method.idempotent or _never_ran(exc)):
                raise
            if len(self._failback) >= FAILBACK_QUEUE:
                log.warning("%s (failback): queue full, dropped: %s", method.qualname, exc)
                return None
            log.info("%s (failback): failed (%s); sending again later", method.qualname, exc)
            task = asyncio.ensure_future(self._resend(method, payload, metadata))
            self._failback.add(task)
            task.add_done_callback(self._failback.discard)
            return None

    async def _resend(self, method: MethodSpec, payload: bytes, metadata: dict[str, str]) -> None:
        for n in range(max(1, self.config.retries)):
            await asyncio.sleep(FAILBACK_DELAY_S * (n + 1))
            try:
                await self._one(method, payload, time.monotonic() + DEFAULT_DEADLINE_S,
                                dict(metadata), method.idempotent)
                return
            except Exception as exc:  # noqa: BLE001
                log.info("%s (failback): resend %d failed: %s", method.qualname, n + 1, exc)

    async def close(self) -> None:
        for t in list(self._failback):
            t.cancel()


def _never_ran(exc: BaseException) -> bool:
    """Did the call fail before any replica could run it? (Along the chain of causes: the
    caller wraps the attempt's error, which wraps the RPC's.)"""
    seen: BaseException | None = exc
    for _ in range(8):  # bounded: a cycle in a chain of causes must not hang us
        if seen is None:
            return False
        if isinstance(seen, (*NEVER_RAN, NoBackend)):
            return True
        seen = seen.__cause__
    return False


def app_errors(classes: Sequence[type[BaseException]]) -> dict[str, type[Any]]:
    """The exception classes a caller re-raises by name, builtins included."""
    import builtins

    table: dict[str, type[Any]] = {n: v for n, v in vars(builtins).items()
                                   if isinstance(v, type) and issubclass(v, Exception)}
    table.update({c.__name__: c for c in classes})
    return table
