"""etcd's auth: users, roles with key-range permissions, tokens, and the checks on requests.

The auth state is replicated like everything else: it lives in one reserved key of the store
(`AUTH_KEY`), written by compare-and-swap transactions, so every member agrees on it and it
survives restarts and snapshots. The API layer hides that key from ranges, deletes, txns and
watches. Differences from etcd: an auth change moves the store revision (etcd keeps auth in its
own bucket); tokens are stateless HMAC tokens signed with a secret created at `auth enable` and
kept in the auth state, so any member accepts a token any member issued; passwords are hashed
with PBKDF2-SHA256 instead of bcrypt."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from ..kv.keyvalue import ALL_KEYS, in_range
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

AUTH_KEY = b"\xff\xfe/shoal/etcd-auth"
TOKEN_TTL_S = 600
PBKDF2_ROUNDS = 10_000
READ, WRITE, READWRITE = 0, 1, 2


@dataclass
class AuthState:
    enabled: bool = False
    revision: int = 0
    secret: str = ""
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {pw, roles}
    roles: dict[str, list[list[Any]]] = field(default_factory=dict)  # name -> [[type, k, end]]

    def dump(self) -> bytes:
        return json.dumps({"enabled": self.enabled, "revision": self.revision,
                           "secret": self.secret, "users": self.users, "roles": self.roles},
                          sort_keys=True).encode()

    @classmethod
    def load(cls, data: bytes) -> AuthState:
        raw = json.loads(data)
        return cls(bool(raw["enabled"]), int(raw["revision"]), str(raw["secret"]),
                   dict(raw["users"]), dict(raw["roles"]))

    def user_roles(self, user: str) -> list[str]:
        u = self.users.get(user)
        return list(u["roles"]) if u else []

    def is_root(self, user: str) -> bool:
        return "root" in self.user_roles(user)


def covers_key(key: bytes, range_end: bytes) -> bool:
    """Does [key, range_end) (etcd's conventions) include AUTH_KEY?"""
    return in_range(AUTH_KEY, key, range_end)


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ROUNDS)
    return salt.hex() + "$" + digest.hex()


def check_password(password: str, stored: str) -> bool:
    if not stored:
        return False
    salt_hex, _, _ = stored.partition("$")
    return hmac.compare_digest(hash_password(password, bytes.fromhex(salt_hex)), stored)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s)


class Auth:
    def __init__(self, backend: Backend):
        self.backend = backend
        self._cache: tuple[int, AuthState] = (-1, AuthState())

    # ------------------------------------------------------------------ state
    def state(self) -> AuthState:
        """The auth state as this member has applied it (local, like etcd's auth store)."""
        kv = self.backend.node.kv.mvcc.get(AUTH_KEY)
        rev = kv.mod_revision if kv is not None else 0
        if self._cache[0] != rev:
            self._cache = (rev, AuthState.load(kv.value) if kv is not None else AuthState())
        return self._cache[1]

    async def update(self, change: Any) -> AuthState:
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
            if (await self.backend.write(txn)).succeeded:
                # The write may have been forwarded to the leader; this member checks requests
                # against the state it has applied, so wait for it before answering, or the
                # caller's next request here could still be judged by the old rules.
                await self.backend.barrier()
                return st
        raise E.TOO_MANY_REQUESTS

    # ------------------------------------------------------------------ tokens
    def issue_token(self, st: AuthState, user: str) -> str:
        expiry = int(time.time()) + TOKEN_TTL_S
        body = f"{_b64(user.encode())}.{expiry}"
        sig = hmac.new(st.secret.encode(), body.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{body}.{sig}"

    def user_of(self, token: str | None) -> str | None:
        """The user a request acts as; None when auth is off (everything is allowed)."""
        st = self.state()
        if not st.enabled:
            return None
        if not token:
            raise E.USER_EMPTY
        try:
            name_b64, expiry, sig = token.split(".")
            body = f"{name_b64}.{expiry}"
            want = hmac.new(st.secret.encode(), body.encode(), hashlib.sha256).hexdigest()[:32]
            user = _unb64(name_b64).decode()
            ok = hmac.compare_digest(want, sig) and int(expiry) >= time.time()
        except (ValueError, UnicodeDecodeError):
            ok, user = False, ""
        if not ok or user not in st.users:
            raise E.INVALID_AUTH_TOKEN
        return user

    # ------------------------------------------------------------------ checks
    def check_admin(self, user: str | None) -> None:
        if user is not None and not self.state().is_root(user):
            raise E.PERMISSION_DENIED

    def check(self, user: str | None, key: bytes, range_end: bytes, write: bool) -> None:
        if user is None:
            return
        st = self.state()
        if st.is_root(user):
            return
        want = WRITE if write else READ
        spans: list[tuple[bytes, bytes | None]] = []
        for role in st.user_roles(user):
            for ptype, k, end in st.roles.get(role, []):
                if ptype in (want, READWRITE):
                    spans.append(_span(_unb64(k), _unb64(end)))
        if not _covered(_span(key, range_end), spans):
            raise E.PERMISSION_DENIED


def _span(key: bytes, range_end: bytes) -> tuple[bytes, bytes | None]:
    if range_end == b"":
        return key, key + b"\0"
    if range_end == ALL_KEYS:
        return key, None
    return key, range_end


def _covered(want: tuple[bytes, bytes | None], spans: list[tuple[bytes, bytes | None]]) -> bool:
    start, end = want
    cur: bytes | None = start
    for s, e in sorted(spans, key=lambda x: x[0]):
        if cur is None or (end is not None and cur >= end):
            return True
        if s <= cur and (e is None or e > cur):
            cur = e
    return cur is None or (end is not None and cur >= end)
