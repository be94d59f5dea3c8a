"""The small replicated key-value state machine the simulated clients use: read, write and
compare-and-set on a few keys, with a dedup table so a command delivered twice (duplicated
message, re-forwarded proposal) is applied once."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Command:
    client: int
    seq: int
    f: str  # "write" | "cas"
    key: str
    value: object  # write: the value; cas: [expected, new]

    def encode(self) -> bytes:
        return json.dumps([self.client, self.seq, self.f, self.key, self.value]).encode()

    @classmethod
    def decode(cls, data: bytes) -> Command:
        c, s, f, k, v = json.loads(data)
        return cls(c, s, f, k, v)


class KVStateMachine:
    def __init__(self) -> None:
        self.data: dict[str, object] = {}
        self.sessions: dict[int, tuple[int, bool]] = {}  # client -> (last seq, its result)

    def apply(self, cmd: Command) -> bool:
        """Apply once; returns whether it took effect (cas may not)."""
        last = self.sessions.get(cmd.client)
        if last is not None and last[0] >= cmd.seq:
            return last[1] if last[0] == cmd.seq else False
        if cmd.f == "write":
            self.data[cmd.key] = cmd.value
            ok = True
        else:
            assert isinstance(cmd.value, list) and len(cmd.value) == 2
            expected, new = cmd.value
            ok = self.data.get(cmd.key) == expected
            if ok:
                self.data[cmd.key] = new
        self.sessions[cmd.client] = (cmd.seq, ok)
        return ok

    def snapshot(self) -> bytes:
        return json.dumps([self.data, sorted(self.sessions.items())], sort_keys=True).encode()

    @classmethod
    def restore(cls, data: bytes) -> KVStateMachine:
        sm = cls()
        if data:
            kv, sessions = json.loads(data)
            sm.data = kv
            sm.sessions = {c: (s, ok) for c, (s, ok) in sessions}
        return sm
