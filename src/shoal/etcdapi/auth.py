"""etcd's auth on this member: the shared permission model (shoal.auth) read from the state
this member has applied, changes to it made by compare-and-swap on its reserved key, and the
caller's token kept for the request's way to the leader.

The auth state is replicated like everything else: it lives in one reserved key of the store
(`AUTH_KEY`), written by compare-and-swap transactions, so every member agrees on it and it
survives restarts and snapshots. No client request on any port reaches that key."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from types import TracebackType

from ..auth import AUTH_KEY, AuthError, AuthState
from ..kv.requests import (
    Compare,
    CompareResult,
    CompareTarget,
    PutRequest,
    RangeRequest,
    TxnRequest,
)
from . import errors as E
from .backend import Backend

# The token the current etcd request came with. A member that does not lead forwards the
# request to the leader on Shoal's client port, which checks it again with this same token.
caller_token: contextvars.ContextVar[str | None] = contextvars.ContextVar("caller_token", default=None)


class Auth:
    def __init__(self, backend: Backend):
        self.backend = backend

    def state(self) -> AuthState:
        return self.backend.node.auth.state()

    async def update(self, change: Callable[[AuthState], None]) -> AuthState:
        """Apply `change(state)` (which may raise an EtcdError) by compare-and-swap."""
        for _ in range(20):
            resp = await self.backend.read(RangeRequest(AUTH_KEY))
            kv = resp.kvs[0] if resp.kvs else None
            st = AuthState.load(kv.value) if kv is not None else AuthState()
            change(st)
            st.revision += 1
            txn = TxnRequest(
                (Compare(AUTH_KEY, CompareTarget.MOD, CompareResult.EQUAL,
                         kv.mod_revision if kv else 0),),
                (PutRequest(AUTH_KEY, st.dump()),))
            if (await self.backend.write(txn, internal=True)).succeeded:
                # The write may have been forwarded to the leader; this member checks requests
                # against the state it has applied, so wait for it before answering, or the
                # caller's next request here could still be judged by the old rules.
                await self.backend.barrier()
                return st
        raise E.TOO_MANY_REQUESTS

    def user_of(self, token: str | None) -> str | None:
        """The user a request acts as; None when auth is off (everything is allowed)."""
        caller_token.set(token)
        with etcd_errors():
            return self.state().user_of(token)

    def check_admin(self, user: str | None) -> None:
        with etcd_errors():
            self.state().check_admin(user)

    def check(self, user: str | None, key: bytes, range_end: bytes, write: bool) -> None:
        with etcd_errors():
            self.state().check_range(user, key, range_end, write)

    def check_request(self, user: str | None, request: object) -> None:
        with etcd_errors():
            self.state().check_request(user, request)


def etcd_errors() -> _EtcdErrors:
    """The permission model's refusals as etcd's errors, which the rest of this API speaks."""
    return _ETCD_ERRORS


class _EtcdErrors:
    # Not a contextlib generator: every request enters it three times, at about 4 us each.
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if isinstance(exc, AuthError):
            raise E.from_exception(exc) from None


_ETCD_ERRORS = _EtcdErrors()
