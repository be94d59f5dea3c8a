"""The one error a replica (and the host in front of it) reports to a client: a protocol code
the client acts on, a message for people, and details such as where the leader is."""

from __future__ import annotations

from typing import Any


class NodeError(Exception):
    """A request failed in a way the client should hear about; `code` is a protocol code
    (not_leader, no_leader, too_many_requests, unavailable, timeout, bad_request)."""

    def __init__(self, code: str, message: str, **details: Any):
        super().__init__(message)
        self.code, self.details = code, details
