"""Concurrent clients doing read / write / compare-and-set on a few keys through the public
client, recording every operation as the checker's history (invoke, then ok / fail / info)."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass, field

from ..check import Event
from ..client import Client, ClientError
from ..kv.requests import Compare, CompareResult, CompareTarget, PutRequest


@dataclass
class Workload:
    endpoints: list[str]
    clients: int = 5
    keys: int = 3
    seed: int = 0
    op_timeout: float = 3.0
    history: list[Event] = field(default_factory=list)
    acked_writes: list[tuple[str, int]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"ok": 0, "fail": 0, "info": 0})

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._values = itertools.count(1)
        self._processes = itertools.count(0)
        self._last: dict[str, int | None] = {}
        self._stop = asyncio.Event()

    def _record(self, process: int, kind: str, f: str, key: str, value: object) -> None:
        self.history.append(Event(process, kind, f, key, value, time.monotonic_ns()))
        if kind != "invoke":
            self.counts[kind] += 1

    async def run(self, seconds: float) -> None:
        async with Client(self.endpoints, timeout=self.op_timeout) as client:
            tasks = [asyncio.create_task(self._worker(client)) for _ in range(self.clients)]
            await asyncio.sleep(seconds)
            self._stop.set()
            await asyncio.gather(*tasks)

    async def read_all(self, client: Client) -> dict[str, int | None]:
        """Read every key once more, into the history: what the healed cluster serves must be
        consistent with everything acknowledged before (a lost write shows up here)."""
        out: dict[str, int | None] = {}
        for k in range(self.keys):
            key = f"k{k}"
            if await self._read(client, next(self._processes), key) == "ok":
                out[key] = self._last.get(key)
        return out

    async def _worker(self, client: Client) -> None:
        process = next(self._processes)
        while not self._stop.is_set():
            key = f"k{self._rng.randrange(self.keys)}"
            roll = self._rng.random()
            if roll < 0.4:
                kind = await self._read(client, process, key)
            elif roll < 0.8:
                kind = await self._write(client, process, key, next(self._values))
            else:
                kind = await self._cas(client, process, key, self._last.get(key), next(self._values))
            if kind == "info":
                process = next(self._processes)  # an unknown outcome stays open: a new process id

    async def _read(self, client: Client, process: int, key: str) -> str:
        self._record(process, "invoke", "read", key, None)
        try:
            resp = await client.get(key.encode())
        except (ClientError, TimeoutError):
            self._record(process, "fail", "read", key, None)  # a read changes nothing
            return "fail"
        value = int(resp.kvs[0].value) if resp.kvs else None
        self._last[key] = value
        self._record(process, "ok", "read", key, value)
        return "ok"

    async def _write(self, client: Client, process: int, key: str, value: int) -> str:
        self._record(process, "invoke", "write", key, value)
        try:
            await client.put(key.encode(), str(value).encode())
        except (ClientError, TimeoutError):
            self._record(process, "info", "write", key, value)
            return "info"
        self._last[key] = value
        self.acked_writes.append((key, value))
        self._record(process, "ok", "write", key, value)
        return "ok"

    async def _cas(self, client: Client, process: int, key: str, expected: int | None, new: int) -> str:
        self._record(process, "invoke", "cas", key, [expected, new])
        k = key.encode()
        compare = (Compare(k, CompareTarget.CREATE, CompareResult.EQUAL, 0) if expected is None
                   else Compare(k, CompareTarget.VALUE, CompareResult.EQUAL, str(expected).encode()))
        try:
            resp = await client.txn([compare], [PutRequest(k, str(new).encode())])
        except (ClientError, TimeoutError):
            self._record(process, "info", "cas", key, [expected, new])
            return "info"
        kind = "ok" if resp.succeeded else "fail"
        if resp.succeeded:
            self._last[key] = new
            self.acked_writes.append((key, new))
        self._record(process, kind, "cas", key, [expected, new])
        return kind
