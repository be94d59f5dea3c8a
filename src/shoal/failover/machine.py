"""The user's state machine, and two examples (a key-value map and a counter).

A state machine is what the service replicates. The primary applies each write to it and logs
it; every backup applies the same operations in the same order, so it must be deterministic:

    apply(op) -> result     a write; op and result are msgpack values (None, bool, int,
                            float, str, bytes, lists, maps). Raise ValueError/TypeError/KeyError
                            *before* changing anything to refuse an op: it is then not logged
                            and the client gets the message.
    query(q) -> result      a read; must not change anything
    snapshot() -> bytes     the whole state
    restore(data)           replace the whole state with a snapshot() of another instance

`APPS` names the examples for `shoal failover run --app`."""

from __future__ import annotations

from typing import Any, Protocol

import msgpack


class StateMachine(Protocol):
    def apply(self, op: Any) -> Any: ...

    def query(self, q: Any) -> Any: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


MAX_KEY = 1024
MAX_VALUE = 256 * 1024


class KVMap:
    """A string-keyed map of msgpack values.

    writes: {"put": key, "value": v} -> previous value or None; {"del": key} -> True if it
    existed. reads: {"get": key} -> the value or None; {"keys": prefix} -> sorted keys with
    that prefix (at most 10,000); {"len": true} -> how many keys."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def apply(self, op: Any) -> Any:
        if not isinstance(op, dict):
            raise TypeError(f"a kv write is a map like {{'put': key, 'value': v}}, not {op!r:.60}")
        if "put" in op:
            key = _key(op["put"])
            if "value" not in op:
                raise ValueError("a put needs a 'value'")
            if len(msgpack.packb(op["value"], use_bin_type=True)) > MAX_VALUE:
                raise ValueError(f"value larger than {MAX_VALUE} bytes")
            prev = self.data.get(key)
            self.data[key] = op["value"]
            return prev
        if "del" in op:
            return self.data.pop(_key(op["del"]), None) is not None
        raise ValueError(f"unknown kv write {sorted(op)!r:.80}: use put or del")

    def query(self, q: Any) -> Any:
        if not isinstance(q, dict):
            raise TypeError(f"a kv read is a map like {{'get': key}}, not {q!r:.60}")
        if "get" in q:
            return self.data.get(_key(q["get"]))
        if "keys" in q:
            prefix = str(q["keys"])
            return sorted(k for k in self.data if k.startswith(prefix))[:10_000]
        if "len" in q:
            return len(self.data)
        raise ValueError(f"unknown kv read {sorted(q)!r:.80}: use get, keys or len")

    def snapshot(self) -> bytes:
        return msgpack.packb(self.data, use_bin_type=True)

    def restore(self, data: bytes) -> None:
        restored = msgpack.unpackb(data, raw=False) if data else {}
        if not isinstance(restored, dict):
            raise ValueError("a kv snapshot is a map")
        self.data = restored


def _key(k: Any) -> str:
    if not isinstance(k, str) or not 0 < len(k) <= MAX_KEY:
        raise ValueError(f"a key is a string of 1 to {MAX_KEY} characters, not {k!r:.60}")
    return k


class Counter:
    """One integer. writes: {"add": n} -> the new value. reads: anything -> the value."""

    def __init__(self) -> None:
        self.value = 0

    def apply(self, op: Any) -> Any:
        n = op.get("add") if isinstance(op, dict) else None
        if type(n) is not int:
            raise ValueError(f"a counter write is {{'add': n}} with an integer n, not {op!r:.60}")
        self.value += n
        return self.value

    def query(self, q: Any) -> Any:
        return self.value

    def snapshot(self) -> bytes:
        return msgpack.packb(self.value)

    def restore(self, data: bytes) -> None:
        self.value = int(msgpack.unpackb(data)) if data else 0


APPS: dict[str, type[KVMap] | type[Counter]] = {"kv": KVMap, "counter": Counter}
