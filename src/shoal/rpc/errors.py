"""What a failed RPC raises at the caller, by the code in the callee's ERROR frame.

The split that governance needs: `Unavailable` and `ConnectFailed` mean the call never ran
(always safe to send elsewhere); `ConnectionLost` and `DeadlineExceeded` mean it may have run
(only idempotent methods are retried); `RemoteError` is the method's own exception, an answer
and not a fault of the backend, so it is neither retried nor counted against it."""

from __future__ import annotations

from . import protocol as p


class RpcError(Exception):
    code = p.INTERNAL

    def __init__(self, message: str, method: str = ""):
        named = not method or message.startswith(method)  # the callee's message may say it
        super().__init__(message if named else f"{method}: {message}")
        self.method, self.detail = method, message


class DeadlineExceeded(RpcError, TimeoutError):
    code = p.DEADLINE_EXCEEDED


class Cancelled(RpcError):
    code = p.CANCELLED


class UnknownMethod(RpcError):
    code = p.UNKNOWN_METHOD


class BadRequest(RpcError):
    code = p.BAD_REQUEST


class RequestTooLarge(RpcError):
    code = p.REQUEST_TOO_LARGE


class Unavailable(RpcError):
    """The callee refused the call before running it (shutting down, or not serving it)."""
    code = p.UNAVAILABLE


class RemoteError(RpcError):
    """The method raised on the callee; `type_name` is its exception class."""
    code = p.APPLICATION

    def __init__(self, message: str, method: str = "", type_name: str = "Exception"):
        super().__init__(message, method)
        self.type_name = type_name


class Internal(RpcError):
    code = p.INTERNAL


class Unauthenticated(RpcError):
    code = p.UNAUTHENTICATED


class ConnectionLost(RpcError):
    """The connection broke with the call in flight: it may or may not have run."""


class NotConnected(RpcError):
    """No connection to the callee could be made: nothing was sent."""


BY_CODE: dict[str, type[RpcError]] = {
    cls.code: cls for cls in (DeadlineExceeded, Cancelled, UnknownMethod, BadRequest,
                              RequestTooLarge, Unavailable, RemoteError, Internal,
                              Unauthenticated)}


def from_frame(code: str, message: str, method: str) -> RpcError:
    if code == p.APPLICATION:
        type_name, _, text = message.partition(": ")
        return RemoteError(text, method, type_name)
    return BY_CODE.get(code, Internal)(message, method)


NEVER_RAN = (NotConnected, Unavailable)
MAY_HAVE_RUN = (ConnectionLost, DeadlineExceeded, Cancelled)
