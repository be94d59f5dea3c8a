"""Client sessions for exactly-once application (Raft dissertation §6.3).

A client opens a session (its id is the log index of the open, so it is unique and every
replica agrees on it) and numbers its requests. The table keeps, per client, the latest applied
sequence number and its encoded response: a retry of that request gets the cached response
instead of a second application. Only the latest is kept, which is enough for a client with one
outstanding request.

The table is bounded: opening a session beyond `max_sessions` evicts the least recently used
one, by last-applied index, the same on every replica. A request from an evicted (or closed, or
never opened) session fails with ErrSessionExpired rather than risk a second application.
Errors are not cached: an error changes nothing, so a retry that now succeeds is the same as the
first attempt never having happened."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import CorruptSnapshot, ErrSessionExpired, ErrStaleSequence


@dataclass(slots=True)
class ClientSession:
    seq: int  # latest applied; 0 = none yet
    index: int  # log index it was applied at (or the session opened at)
    response: bytes  # encoded response to `seq`


class SessionTable:
    def __init__(self, max_sessions: int) -> None:
        assert max_sessions > 0
        self.max_sessions = max_sessions
        # Insertion order is recency order: touching a session moves it to the end.
        self._sessions: dict[int, ClientSession] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, client_id: int) -> bool:
        return client_id in self._sessions

    def open(self, index: int) -> int:
        """A new session with id `index`; evicts the least recently used beyond the bound."""
        assert index not in self._sessions
        while len(self._sessions) >= self.max_sessions:
            del self._sessions[next(iter(self._sessions))]
        self._sessions[index] = ClientSession(0, index, b"")
        return index

    def close(self, client_id: int) -> None:
        if self._sessions.pop(client_id, None) is None:
            raise ErrSessionExpired(f"client {client_id}: no session to close")

    def cached(self, client_id: int, seq: int) -> bytes | None:
        """The cached response if `seq` was applied, None if it is new."""
        session = self._sessions.get(client_id)
        if session is None:
            raise ErrSessionExpired(f"client {client_id}: session unknown, closed or evicted")
        if seq == session.seq:
            return session.response
        if seq < session.seq:
            raise ErrStaleSequence(
                f"client {client_id}: seq {seq} was applied; only seq {session.seq} is kept"
            )
        return None

    def record(self, client_id: int, seq: int, index: int, response: bytes) -> None:
        session = self._sessions.pop(client_id)
        assert seq > session.seq and index > session.index
        self._sessions[client_id] = ClientSession(seq, index, response)

    def dump(self) -> list[Any]:
        return [[c, s.seq, s.index, s.response] for c, s in self._sessions.items()]

    @classmethod
    def load(cls, raw: Any, max_sessions: int) -> SessionTable:
        table = cls(max_sessions)
        if not isinstance(raw, list) or len(raw) > max_sessions:
            raise CorruptSnapshot("sessions: expected an array within max_sessions")
        last_index = 0
        for row in raw:
            ok = isinstance(row, list) and len(row) == 4
            client_id, seq, index, response = row if ok else (0, 0, 0, b"")
            ok = ok and all(type(x) is int for x in (client_id, seq, index))
            ok = ok and client_id > 0 and seq >= 0 and index > last_index
            ok = ok and type(response) is bytes and client_id not in table._sessions
            if not ok:
                raise CorruptSnapshot(f"sessions: bad session {row!r}")
            last_index = index
            table._sessions[client_id] = ClientSession(seq, index, response)
        return table
