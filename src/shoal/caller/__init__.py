"""Calling through the balancer: deadlines, failover retries for idempotent requests, a retry
budget and a circuit breaker per backend. See docs/gateway.md ("The caller")."""

from .breaker import BreakerConfig, BreakerState, CircuitBreaker
from .budget import BudgetConfig, RetryBudget
from .caller import Caller, CallPolicy, Exchange, Resume
from .errors import (
    CallError,
    ConnectFailed,
    DeadlineExceeded,
    NoBackend,
    SendFailed,
    UpstreamFailed,
)

__all__ = [
    "BreakerConfig", "BreakerState", "BudgetConfig", "CallError", "CallPolicy", "Caller",
    "CircuitBreaker", "ConnectFailed", "DeadlineExceeded", "Exchange", "NoBackend",
    "Resume", "RetryBudget", "SendFailed", "UpstreamFailed",
]
