"""How an attempt failed, and how a whole call failed.

Attempts raise `ConnectFailed` when nothing reached the backend (always safe to try another)
and `SendFailed` when the request may have reached it (only idempotent requests are retried).
A call ends in `NoBackend` (503), `DeadlineExceeded` (504) or `UpstreamFailed` (502)."""

from __future__ import annotations


class ConnectFailed(Exception):
    """The backend was not reached: no byte of the request was sent."""


class SendFailed(Exception):
    """The request was sent, or partly sent, and no usable answer came back."""


class CallError(Exception):
    status = 502


class NoBackend(CallError):
    status = 503


class DeadlineExceeded(CallError):
    status = 504


class UpstreamFailed(CallError):
    status = 502
