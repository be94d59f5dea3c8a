"""`shoal bench --txn`: bank transfers as transactions, on a 3-node Shoal whose accounts are
spread over 3 shards, beside etcd's own Txn on the same keys, driven by the same multi-process
load generator (procs.py) in the same run, interleaved, medians of repeats.

A transfer reads its accounts and writes them back, committed atomically; each side retries
a conflicting one until it commits, and the latency counts the retries:
- Shoal: `client.run_transaction` (one-phase commit in one shard, two-phase across shards);
- etcd: get each account, then one Txn whose compares are each account's mod_revision as read
  (etcd's STM, the way etcd's own clientv3/concurrency does it); etcd is one group, so its row
  is what the same keys cost without crossing shards.

Spans: `1` (two accounts in one shard), `2` (in two shards), `3` (one account pays two others,
one per shard), `hot` (two of ten accounts, across shards: contention)."""

from __future__ import annotations

import asyncio
import json
import random
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from shoal.local.cluster import LocalProcessCluster, free_ports
from shoal.server.config import Member

from .etcd import EtcdCluster
from .kv import _cluster_pids, console, progress
from .loadgen import LoadResult, median_result
from .procs import DriverSpec, run_load_procs

SPANS = ("1", "2", "3", "hot")
PER_SHARD = 100  # accounts per shard (hot: 10 in all)
MAX_RETRIES = 50


def account(shard: int, i: int) -> bytes:
    return b"acct/%d/%03d" % (shard, i)


def pick(span: str, rng: random.Random) -> list[bytes]:
    """The accounts of one transfer: the first pays the others."""
    if span == "hot":
        a, b = rng.sample(range(10), 2)
        return [account(a % 3, a), account(b % 3, b)]
    s = rng.randrange(3)
    if span == "1":
        i, j = rng.sample(range(PER_SHARD), 2)
        return [account(s, i), account(s, j)]
    shards = [s, (s + 1) % 3] if span == "2" else [s, (s + 1) % 3, (s + 2) % 3]
    return [account(x, rng.randrange(PER_SHARD)) for x in shards]


class TxnDriver:
    """A Driver whose `put` is one transfer (the key and value it is given are not used)."""

    def __init__(self, system: str, kind: str, endpoints: list[str], span: str, seed: int):
        self.name, self.kind, self.span = system, kind, span
        self.rng = random.Random(seed)
        if kind == "shoal":
            from shoal.client import Client

            self.shoal = Client(endpoints, timeout=30)
        else:
            import aetcd

            host, _, port = endpoints[0].rpartition(":")
            self.etcd: Any = aetcd.Client(host, int(port), timeout=30)

    async def put(self, key: bytes, value: bytes) -> None:
        accounts = pick(self.span, self.rng)
        if self.kind == "shoal":
            await self._shoal(accounts)
        else:
            await self._etcd(accounts)

    async def _shoal(self, accounts: list[bytes]) -> None:
        async def transfer(tx: Any) -> None:
            balances = [int(await tx.get(a) or b"0") for a in accounts]
            tx.put(accounts[0], b"%d" % (balances[0] - len(accounts) + 1))
            for a, b in zip(accounts[1:], balances[1:], strict=True):
                tx.put(a, b"%d" % (b + 1))

        await self.shoal.run_transaction(transfer, attempts=MAX_RETRIES)

    async def _etcd(self, accounts: list[bytes]) -> None:
        c = self.etcd
        for _ in range(MAX_RETRIES):
            got = [await c.get(a) for a in accounts]
            revs = [g.mod_revision if g is not None else 0 for g in got]
            vals = [int(g.value) if g is not None else 0 for g in got]
            ok, _ = await c.transaction(
                compare=[c.transactions.mod(a) == r for a, r in zip(accounts, revs, strict=True)],
                success=[c.transactions.put(accounts[0], b"%d" % (vals[0] - len(accounts) + 1)),
                         *(c.transactions.put(a, b"%d" % (v + 1))
                           for a, v in zip(accounts[1:], vals[1:], strict=True))], failure=[])
            if ok:
                return
            await asyncio.sleep(self.rng.random() * 0.005)
        raise RuntimeError("etcd transfer: too many conflicts")

    async def get(self, key: bytes) -> None:
        raise NotImplementedError("transfers only")

    async def close(self) -> None:
        if self.kind == "shoal":
            await self.shoal.close()
        else:
            await self.etcd.close()


@dataclass
class TxnPlan:
    clients: list[int]
    spans: list[str]
    seconds: float
    repeat: int
    procs: int = 2
    json: bool = False


def run_txn_bench(plan: TxnPlan) -> None:
    for span in plan.spans:
        if span not in SPANS:
            raise ValueError(f"unknown span {span!r}: one of {', '.join(SPANS)}")
    with ExitStack() as stack:
        shoal = stack.enter_context(LocalProcessCluster(3))
        with progress.status("starting a 3-node Shoal cluster, 3 shards..."):
            shoal.start()
            asyncio.run(_shard(shoal.endpoints))
        ports = free_ports(6)
        etcd = EtcdCluster(tuple(Member(i + 1, ("127.0.0.1", ports[2 * i]),
                                        ("127.0.0.1", ports[2 * i + 1])) for i in range(3)))
        stack.callback(etcd.stop)
        with progress.status("starting a 3-member etcd cluster..."):
            etcd.start()
            leader = asyncio.run(etcd.wait_leader())
        systems = {"shoal": (DriverSpec("shoal", "shoal", tuple(shoal.endpoints)),
                             lambda: _cluster_pids(shoal)),
                   "etcd": (DriverSpec("etcd", "etcd", (leader,)), etcd.pids)}
        results: dict[tuple[str, str, int], LoadResult] = {}
        total, done = len(plan.spans) * len(plan.clients) * plan.repeat * 2, 0
        for span in plan.spans:
            for clients in plan.clients:
                runs: dict[str, list[LoadResult]] = {n: [] for n in systems}
                for _ in range(plan.repeat):
                    for name, (spec, pids) in systems.items():  # interleaved: the same noise
                        done += 1
                        progress.print(f"[dim]run {done}/{total}: {name} span {span} "
                                       f"x{clients}[/]")
                        txn_spec = DriverSpec(spec.system, spec.kind, spec.endpoints, txn=span)
                        runs[name].append(run_load_procs(
                            txn_spec, clients=clients, seconds=plan.seconds, value_size=1,
                            mix="put", procs=plan.procs, server_pids=pids(), keys=1))
                for name, rs in runs.items():
                    results[(name, span, clients)] = median_result(rs)
        if plan.json:
            print(json.dumps({"plan": plan.__dict__, "medians": [
                {**r.as_dict(), "span": span} for (_, span, _), r in results.items()]}, indent=2))
        else:
            _table(plan, results)


async def _shard(endpoints: list[str]) -> None:
    from shoal.client import Client
    from shoal.shard.split import split

    async with Client(endpoints, timeout=30) as c:
        for at in (b"acct/1", b"acct/2"):
            await split(c, at)


def _table(plan: TxnPlan, results: dict[tuple[str, str, int], LoadResult]) -> None:
    t = Table(title="bank transfers: Shoal (3 shards) beside etcd's Txn (one group), medians of "
                    f"{plan.repeat}, {plan.seconds:.0f} s each")
    for col in ("span", "clients", "system", "txn/s", "p50 ms", "p99 ms", "server µs/txn",
                "errors", "vs etcd"):
        t.add_column(col, justify="left" if col in ("span", "system") else "right")
    for span in plan.spans:
        for clients in plan.clients:
            e = results[("etcd", span, clients)]
            for name in ("shoal", "etcd"):
                r = results[(name, span, clients)]
                ratio = f"{r.throughput / e.throughput:.2f}x" if name == "shoal" and \
                    e.throughput else ""
                t.add_row({"1": "1 shard", "2": "2 shards", "3": "3 shards",
                           "hot": "10 hot keys"}[span], str(clients), name,
                          f"{r.throughput:,.0f}", f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}",
                          f"{r.server_us_per_op:,.0f}", str(r.errors), ratio)
    console.print(t)
