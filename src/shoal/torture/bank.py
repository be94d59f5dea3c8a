"""Jepsen's bank, across shards, on real processes: accounts spread over three shards, tellers
moving money between them in transactions, auditors reading the whole bank in transactions,
while the nemesis kills, pauses and cuts the nodes.

Each transfer also writes a marker key of its own (`xfer/ID`: from, to, amount) in the same
transaction, so afterwards the markers say exactly which transfers took effect, whatever their
clients heard. The checks, once the cluster is healed:
- every audit saw the bank's initial total;
- every acknowledged transfer has its marker, and no aborted one has;
- each final balance is its initial balance plus the transfers the markers list: nothing
  applied half, nothing acknowledged lost, nothing applied twice."""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import dataclass, field

from ..client import Client, ClientError
from ..shard.split import split
from ..txn.coordinator import Transaction, TxnAborted, TxnUnknownOutcome

ACCOUNTS = 9
INITIAL = 100
SPLITS = (b"acct/3", b"acct/6")  # three shards of accounts; markers land in the last


def account(i: int) -> bytes:
    return b"acct/%d" % i


@dataclass
class BankResult:
    ok: bool
    problems: list[str]
    counts: dict[str, int]
    audits: int
    final: dict[str, int]


@dataclass
class BankWorkload:
    endpoints: list[str]
    clients: int = 5
    seed: int = 0
    op_timeout: float = 5.0
    counts: dict[str, int] = field(default_factory=lambda: {
        "committed": 0, "aborted": 0, "unknown": 0, "audits": 0, "audit_failed": 0})
    acked: set[int] = field(default_factory=set)
    aborted: set[int] = field(default_factory=set)
    totals: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._ids = itertools.count(1)
        self._stop = asyncio.Event()

    async def setup(self) -> None:
        async with Client(self.endpoints, timeout=30) as c:
            s = c.sharded()
            for i in range(ACCOUNTS):
                await s.put(account(i), b"%d" % INITIAL)
            for at in SPLITS:
                await split(c, at)

    async def run(self, seconds: float) -> None:
        async with Client(self.endpoints, timeout=self.op_timeout) as client:
            tasks = [asyncio.create_task(self._teller(client)) for _ in range(self.clients)]
            tasks.append(asyncio.create_task(self._auditor(client)))
            await asyncio.sleep(seconds)
            self._stop.set()
            await asyncio.gather(*tasks)

    async def _teller(self, client: Client) -> None:
        while not self._stop.is_set():
            xid = next(self._ids)
            src, dst = self._rng.sample(range(ACCOUNTS), 2)
            amount = self._rng.randint(1, 10)

            async def transfer(tx: Transaction, src: int = src, dst: int = dst,
                               amount: int = amount, xid: int = xid) -> None:
                a = int(await tx.get(account(src)) or b"0")
                b = int(await tx.get(account(dst)) or b"0")
                tx.put(account(src), b"%d" % (a - amount))
                tx.put(account(dst), b"%d" % (b + amount))
                tx.put(b"xfer/%08d" % xid, b"%d %d %d" % (src, dst, amount))

            try:
                await client.run_transaction(transfer, attempts=5)
                self.acked.add(xid)
                self.counts["committed"] += 1
            except TxnAborted:
                self.aborted.add(xid)
                self.counts["aborted"] += 1
            except (TxnUnknownOutcome, ClientError, TimeoutError, OSError):
                self.counts["unknown"] += 1  # the markers will say
                await asyncio.sleep(0.05)

    async def _auditor(self, client: Client) -> None:
        while not self._stop.is_set():
            async def audit(tx: Transaction) -> int:
                held = await tx.lock_read(*(account(i) for i in range(ACCOUNTS)))
                return sum(int(v or b"0") for v in held.values())

            try:
                self.totals.append(await client.run_transaction(audit, attempts=5))
                self.counts["audits"] += 1
            except (TxnAborted, TxnUnknownOutcome, ClientError, TimeoutError, OSError):
                self.counts["audit_failed"] += 1
                await asyncio.sleep(0.05)

    async def check(self) -> BankResult:
        problems: list[str] = []
        expected_total = ACCOUNTS * INITIAL
        wrong = [t for t in self.totals if t != expected_total]
        if wrong:
            problems.append(f"{len(wrong)} audits saw a total other than {expected_total}: "
                            f"{sorted(set(wrong))[:5]}")
        async with Client(self.endpoints, timeout=30) as c:
            s = c.sharded()
            markers = {int(kv.key[5:]): kv.value for kv in await s.range(b"xfer/", b"xfer0")}
            final = {account(i): int((await s.get(account(i))).value)  # type: ignore[union-attr]
                     for i in range(ACCOUNTS)}
        lost = sorted(self.acked - set(markers))
        if lost:
            problems.append(f"{len(lost)} acknowledged transfers are missing: ids {lost[:10]}")
        ghosts = sorted(self.aborted & set(markers))
        if ghosts:
            problems.append(f"{len(ghosts)} aborted transfers took effect: ids {ghosts[:10]}")
        balance = {account(i): INITIAL for i in range(ACCOUNTS)}
        for value in markers.values():
            src, dst, amount = (int(x) for x in value.split())
            balance[account(src)] -= amount
            balance[account(dst)] += amount
        for key, want in balance.items():
            if final[key] != want:
                problems.append(f"{key.decode()} holds {final[key]}, but the applied transfers "
                                f"make it {want}")
        if sum(final.values()) != expected_total:
            problems.append(f"the final total is {sum(final.values())}, not {expected_total}")
        return BankResult(not problems, problems, dict(self.counts), len(self.totals),
                          {k.decode(): v for k, v in final.items()})
