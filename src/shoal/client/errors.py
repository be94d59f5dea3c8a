"""Errors a client sees. Store errors keep their shoal.kv classes (ErrCompacted with its
compact_revision, ErrLeaseNotFound, ...) so callers can catch them by type."""

from __future__ import annotations

from typing import Any

from ..kv import errors as kv_errors


class ClientError(Exception):
    """The cluster answered, but not with success. `code` is the protocol's error code."""

    def __init__(self, message: str, code: str = "error", **details: Any):
        super().__init__(message)
        self.code, self.details = code, details


class Unavailable(ClientError):
    """No node could be reached or none answered in time; the request may not have run.
    `tried` maps each endpoint the call tried to why it did not serve the call."""

    def __init__(self, message: str, tried: dict[str, str] | None = None):
        super().__init__(message, "unavailable")
        self.tried = tried or {}


class WatchCanceled(ClientError):
    """The server, or this client, canceled a watch whose consumer could not keep up with its
    events (or for another reason the cluster gave). Nothing was lost up to `resume_revision`:
    everything before it was delivered, so `watch(..., start_revision=resume_revision)` carries
    on. It is not resumed automatically, because a consumer that is still slow would be
    canceled again and again."""

    def __init__(self, reason: str, resume_revision: int):
        super().__init__(f"watch canceled: {reason}", "watch_canceled",
                         reason=reason, resume_revision=resume_revision)
        self.reason, self.resume_revision = reason, resume_revision


class PermissionDenied(ClientError):
    """The cluster's auth refused the request: no or a bad token, a wrong password, or a user
    without permission for these keys. The message is etcd's."""


AUTH_CODES = frozenset({"user_empty", "invalid_auth_token", "permission_denied", "auth_failed",
                        "auth_not_enabled"})


def error_from(code: str, body: Any) -> Exception:
    message = body.get("message", code) if isinstance(body, dict) else str(body)
    cls = getattr(kv_errors, code, None)
    if isinstance(cls, type) and issubclass(cls, kv_errors.KVError):
        exc = cls.__new__(cls)  # rebuilt from its message: constructors differ per class
        Exception.__init__(exc, message)
        if isinstance(body, dict):
            exc.restore_details({k: v for k, v in body.items() if k != "message"})
        return exc
    details = {k: v for k, v in body.items() if k != "message"} if isinstance(body, dict) else {}
    return (PermissionDenied if code in AUTH_CODES else ClientError)(message, code, **details)


def compacted(compact_revision: int) -> kv_errors.ErrCompacted:
    return kv_errors.ErrCompacted(compact_revision - 1, compact_revision)
