"""The caller's pure parts (breaker, budget) and its retry rules, with fake attempts."""

from __future__ import annotations

import asyncio

import pytest

from shoal.balance import Backend
from shoal.caller import (
    BreakerConfig,
    BreakerState,
    BudgetConfig,
    Caller,
    CallPolicy,
    CircuitBreaker,
    ConnectFailed,
    DeadlineExceeded,
    NoBackend,
    RetryBudget,
    SendFailed,
    UpstreamFailed,
)
from shoal.registry import OutlierConfig, OutlierDetector


# ---------------------------------------------------------------------- breaker
def test_breaker_opens_after_consecutive_failures_and_success_resets_the_count():
    b = CircuitBreaker(BreakerConfig(failure_threshold=3, open_s=5))
    for _ in range(2):
        b.on_failure(0)
    b.on_success(0)
    b.on_failure(0)
    b.on_failure(0)
    assert b.state(0) is BreakerState.CLOSED
    b.on_failure(1)
    assert b.state(1) is BreakerState.OPEN
    assert not b.allow(5.9)


def test_breaker_half_open_admits_a_bounded_number_of_probes():
    b = CircuitBreaker(BreakerConfig(failure_threshold=1, open_s=5, half_open_probes=2,
                                     success_threshold=2))
    b.on_failure(0)
    assert b.state(5) is BreakerState.HALF_OPEN
    assert b.allow(5) and b.allow(5)
    assert not b.allow(5)  # both probe slots taken
    b.on_success(5.1)
    assert b.state(5.1) is BreakerState.HALF_OPEN
    assert b.allow(5.1)  # the slot came back
    b.on_cancel()
    b.on_success(5.2)
    assert b.state(5.2) is BreakerState.CLOSED


def test_breaker_half_open_failure_reopens():
    b = CircuitBreaker(BreakerConfig(failure_threshold=1, open_s=5))
    b.on_failure(0)
    assert b.allow(5)
    b.on_failure(5)
    assert b.state(9.9) is BreakerState.OPEN
    assert b.state(10) is BreakerState.HALF_OPEN


def test_breaker_rejects_bad_config():
    with pytest.raises(ValueError, match="must be >= 1"):
        BreakerConfig(half_open_probes=0)


# ---------------------------------------------------------------------- budget
def test_budget_allows_the_minimum_then_a_fraction_of_active_requests():
    budget = RetryBudget(BudgetConfig(budget_percent=20, min_retry_concurrency=2))
    for _ in range(5):
        budget.start_request()
    assert budget.try_retry() and budget.try_retry()
    assert not budget.try_retry()  # 20% of 5 is 1, the minimum 2 applies
    assert budget.refused == 1
    for _ in range(15):
        budget.start_request()
    assert budget.try_retry() and budget.try_retry()  # 20% of 20 = 4
    assert not budget.try_retry()
    budget.end_retry()
    assert budget.try_retry()


# ---------------------------------------------------------------------- caller
class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make_caller(n: int = 3, lb: str = "round-robin", **kw) -> tuple[Caller, Clock]:
    clock = Clock()
    caller = Caller(lb, clock=clock, **kw)
    caller.update([Backend(f"b{i}", f"10.0.0.{i}:80") for i in range(n)])
    return caller, clock


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_idempotent_request_fails_over_to_another_backend():
    caller, _ = make_caller()
    seen: list[str] = []

    async def attempt(b: Backend) -> str:
        seen.append(b.id)
        if len(seen) < 3:
            raise SendFailed("reset")
        return b.id

    ex = run(caller.call(attempt, idempotent=True))
    assert len(set(seen)) == 3 and ex.value == seen[-1] and ex.attempts == 3
    caller.finish(ex, True)
    assert caller.retries == 2 and caller.budget.active == 0


def test_non_idempotent_request_fails_fast_unless_nothing_was_sent():
    caller, _ = make_caller()
    seen: list[str] = []

    async def sent_then_failed(b: Backend) -> str:
        seen.append(b.id)
        raise SendFailed("reset after the request went out")

    with pytest.raises(UpstreamFailed, match="1 attempt"):
        run(caller.call(sent_then_failed, idempotent=False))
    assert len(seen) == 1

    async def refused_then_ok(b: Backend) -> str:
        seen.append(b.id)
        if len(seen) == 2:
            raise ConnectFailed("refused")
        return b.id

    ex = run(caller.call(refused_then_ok, idempotent=False))
    assert ex.attempts == 2 and seen[1] != seen[2]


def test_retry_budget_stops_retries():
    caller, _ = make_caller(budget=RetryBudget(BudgetConfig(budget_percent=0,
                                                            min_retry_concurrency=0)))
    calls = []

    async def attempt(b: Backend) -> str:
        calls.append(b.id)
        raise ConnectFailed("refused")

    with pytest.raises(UpstreamFailed):
        run(caller.call(attempt, idempotent=True))
    assert len(calls) == 1 and caller.budget.refused == 1


def test_deadline_gives_504_and_attempt_timeout_moves_on():
    caller, _ = make_caller(policy=CallPolicy(deadline_s=0.3, try_timeout_s=0.1, max_attempts=5))
    calls = []

    async def hang(b: Backend) -> str:
        calls.append(b.id)
        await asyncio.sleep(10)
        return "never"

    with pytest.raises(DeadlineExceeded):
        run(caller.call(hang, idempotent=True))
    assert 2 <= len(calls) <= 3  # each attempt timed out after 0.1 s, on a new backend


def test_open_breaker_and_ejection_steer_traffic_away():
    caller, clock = make_caller(breaker=BreakerConfig(failure_threshold=2, open_s=10),
                                outlier=OutlierDetector(OutlierConfig(consecutive_failures=100)))

    async def fail_b0(b: Backend) -> str:
        if b.id == "b0":
            raise ConnectFailed("refused")
        return b.id

    for _ in range(6):
        caller.finish(run(caller.call(fail_b0, idempotent=True)), True)
    assert caller.breakers["b0"].state(clock.t) is BreakerState.OPEN
    picked = {caller.select(None, None, [], clock.t).id for _ in range(20)}
    assert picked == {"b1", "b2"}
    clock.t += 10  # half-open: one probe goes to b0 again
    picked = [caller.select(None, None, [], clock.t).id for _ in range(6)]
    assert picked.count("b0") == 1


def test_hash_picker_retry_reaches_another_backend():
    caller, clock = make_caller(lb="maglev", lb_options={"table_size": 251})
    first = caller.select("user-7", None, [], clock.t)
    assert caller.select("user-7", None, [], clock.t) == first  # affinity
    other = caller.select("user-7", None, [first.id], clock.t)
    assert other is not None and other != first
    assert caller.select("user-7", None, ["b0", "b1", "b2"], clock.t) is None


def test_no_backends_is_a_503_and_all_unhealthy_routes_anyway():
    caller, _ = make_caller(n=0)

    async def attempt(b: Backend) -> str:
        return b.id

    with pytest.raises(NoBackend) as info:
        run(caller.call(attempt))
    assert info.value.status == 503
    caller.update([Backend("a", "10.0.0.1:80"), Backend("b", "10.0.0.2:80")])
    caller.set_healthy("a", False)
    assert [b.id for b in caller.routable()] == ["b"]
    caller.set_healthy("b", False)
    assert caller.panic and {b.id for b in caller.routable()} == {"a", "b"}


def test_outlier_ejection_from_caller_results_and_return():
    caller, clock = make_caller(n=4, outlier=OutlierDetector(OutlierConfig(
        consecutive_failures=3, base_ejection_s=30, max_ejection_percent=50)),
        breaker=BreakerConfig(failure_threshold=1000))

    async def fail_b1(b: Backend) -> str:
        if b.id == "b1":
            raise SendFailed("reset")
        return b.id

    for _ in range(12):
        caller.finish(run(caller.call(fail_b1, idempotent=True)), True)
    assert caller.outlier.ejected() == {"b1"}
    assert "b1" not in {b.id for b in caller.routable()}
    clock.t += 30
    caller.select(None, None, [], clock.t)  # the sweep returns it
    assert "b1" in {b.id for b in caller.routable()}
