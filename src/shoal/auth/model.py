"""The auth state, its tokens and passwords, and the permission check on store requests.

Differences from etcd: an auth change moves the store revision (etcd keeps auth in its own
bucket); tokens are stateless HMAC tokens signed with a secret created at `auth enable` and kept
in the (reserved, unreadable) auth state, so any member accepts a token any member issued;
passwords are hashed with PBKDF2-SHA256 instead of bcrypt."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..kv.keyvalue import ALL_KEYS, KeyValue
from ..kv.requests import (
    CloseSessionRequest,
    CompactionRequest,
    DeleteRangeRequest,
    LeaseGrantRequest,
    LeaseKeepAliveRequest,
    LeaseLeasesRequest,
    LeaseRevokeRequest,
    LeaseTimeToLiveRequest,
    OpenSessionRequest,
    PutRequest,
    RangeRequest,
    TxnPrepareRequest,
    TxnRecordRequest,
    TxnRequest,
    TxnResolveRequest,
)

AUTH_KEY = b"\xff\xfe/shoal/etcd-auth"
TOKEN_TTL_S = 600
PBKDF2_ROUNDS = 10_000
READ, WRITE, READWRITE = 0, 1, 2


class AuthError(Exception):
    """A request refused by the permission model; `code` is the wire code, the message etcd's."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


USER_EMPTY = AuthError("user_empty", "etcdserver: user name is empty")
INVALID_TOKEN = AuthError("invalid_auth_token", "etcdserver: invalid auth token")
PERMISSION_DENIED = AuthError("permission_denied", "etcdserver: permission denied")
AUTH_NOT_ENABLED = AuthError("auth_not_enabled", "etcdserver: authentication is not enabled")
AUTH_FAILED = AuthError("auth_failed",
                        "etcdserver: authentication failed, invalid user ID or password")

# What a client may send; the rest (lease expiry and promotion) only a leader proposes.
CLIENT_REQUESTS = (RangeRequest, PutRequest, DeleteRangeRequest, TxnRequest, CompactionRequest,
                   LeaseGrantRequest, LeaseRevokeRequest, LeaseKeepAliveRequest,
                   LeaseTimeToLiveRequest, LeaseLeasesRequest, OpenSessionRequest,
                   CloseSessionRequest, TxnPrepareRequest, TxnResolveRequest, TxnRecordRequest)


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

    # ------------------------------------------------------------------ tokens
    def login(self, name: str, password: str) -> str:
        """A token for `name` if `password` is theirs. Slow by design (PBKDF2): run it off
        the event loop."""
        if not self.enabled:
            raise AUTH_NOT_ENABLED
        u = self.users.get(name)
        if u is None or not check_password(password, u["pw"]):
            raise AUTH_FAILED
        return self.issue_token(name)

    def issue_token(self, user: str) -> str:
        body = f"{key_b64(user.encode())}.{int(time.time()) + TOKEN_TTL_S}"
        return f"{body}.{self._sign(body)}"

    def user_of(self, token: str | None) -> str | None:
        """The user a request acts as; None when auth is off (everything is allowed)."""
        if not self.enabled:
            return None
        if not token:
            raise USER_EMPTY
        try:
            name_b64, expiry, sig = token.split(".")
            user = key_unb64(name_b64).decode()
            ok = hmac.compare_digest(self._sign(f"{name_b64}.{expiry}"), sig) \
                and int(expiry) >= time.time()
        except (ValueError, UnicodeDecodeError):
            ok, user = False, ""
        if not ok or user not in self.users:
            raise INVALID_TOKEN
        return user

    def _sign(self, body: str) -> str:
        return hmac.new(self.secret.encode(), body.encode(), hashlib.sha256).hexdigest()[:32]

    # ------------------------------------------------------------------ checks
    def check_admin(self, user: str | None) -> None:
        if user is not None and not self.is_root(user):
            raise PERMISSION_DENIED

    def check_range(self, user: str | None, key: bytes, range_end: bytes, write: bool) -> None:
        if user is None or self.is_root(user):
            return
        want = WRITE if write else READ
        spans: list[tuple[bytes, bytes | None]] = []
        for role in self.user_roles(user):
            for ptype, k, end in self.roles.get(role, []):
                if ptype in (want, READWRITE):
                    spans.append(_span(key_unb64(k), key_unb64(end)))
        if not _covered(_span(key, range_end), spans):
            raise PERMISSION_DENIED

    def check_request(self, user: str | None, request: Any) -> None:
        """May `user` send this store request? Key-range permissions as etcd's; any user may
        use leases, sessions and compaction (as in etcd)."""
        if not isinstance(request, CLIENT_REQUESTS):
            raise PERMISSION_DENIED
        if isinstance(request, RangeRequest):
            self.check_range(user, request.key, request.range_end, write=False)
        elif isinstance(request, PutRequest):
            self.check_range(user, request.key, b"", write=True)
        elif isinstance(request, DeleteRangeRequest):
            self.check_range(user, request.key, request.range_end, write=True)
        elif isinstance(request, TxnRequest):
            for c in request.compare:
                self.check_range(user, c.key, c.range_end, write=False)
            for op in (*request.success, *request.failure):
                self.check_request(user, op)
        elif isinstance(request, TxnPrepareRequest):
            for r in request.reads:
                self.check_range(user, r.key, b"", write=False)
            for w in request.writes:
                self.check_range(user, w.key, b"", write=True)
        elif isinstance(request, TxnResolveRequest):  # applies what the record decided
            for key in request.keys:
                self.check_range(user, key, b"", write=False)


class AuthView:
    """The auth state as this member has applied it (local, like etcd's auth store), parsed
    once per change of the key."""

    def __init__(self, get: Callable[[], KeyValue | None]):
        self._get = get
        self._cache: tuple[int, AuthState] = (-1, AuthState())

    def state(self) -> AuthState:
        kv = self._get()
        rev = kv.mod_revision if kv is not None else 0
        if self._cache[0] != rev:
            self._cache = (rev, AuthState.load(kv.value) if kv is not None else AuthState())
        return self._cache[1]


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ROUNDS)
    return salt.hex() + "$" + digest.hex()


def check_password(password: str, stored: str) -> bool:
    if not stored:
        return False
    salt_hex, _, _ = stored.partition("$")
    return hmac.compare_digest(hash_password(password, bytes.fromhex(salt_hex)), stored)


def key_b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def key_unb64(s: str) -> bytes:
    return base64.b64decode(s)


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
