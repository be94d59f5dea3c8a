"""A retry budget, Envoy-style: retries in flight may be at most `budget_percent` of the
requests in flight, but never fewer than `min_retry_concurrency` are allowed.

Why a budget and not only a retry count: with "retry up to 2 times", a backend outage
triples the load on the survivors exactly when they can least take it. A budget bounds the
extra load to a fraction of real traffic however many requests fail, while a trickle of
traffic (below the minimum) may still retry everything.

Pure: no clock, no I/O; callers report starts and ends."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BudgetConfig:
    budget_percent: float = 20.0
    min_retry_concurrency: int = 3

    def __post_init__(self) -> None:
        if not 0 <= self.budget_percent <= 100 or self.min_retry_concurrency < 0:
            raise ValueError("budget_percent must be in 0..100, min_retry_concurrency >= 0")


class RetryBudget:
    def __init__(self, config: BudgetConfig | None = None):
        self.config = config or BudgetConfig()
        self.active = 0  # requests in flight, retries included
        self.retries = 0  # retries in flight
        self.refused = 0  # retries the budget refused, for metrics

    def start_request(self) -> None:
        self.active += 1

    def end_request(self) -> None:
        assert self.active > 0, "end_request without start_request"
        self.active -= 1

    def try_retry(self) -> bool:
        """Take a retry slot if the budget allows; pair a True with `end_retry`."""
        allowed = max(self.config.min_retry_concurrency,
                      int(self.active * self.config.budget_percent / 100))
        if self.retries >= allowed:
            self.refused += 1
            return False
        self.retries += 1
        return True

    def end_retry(self) -> None:
        assert self.retries > 0, "end_retry without try_retry"
        self.retries -= 1
