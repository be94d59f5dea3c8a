"""Redis with Sentinel beside Shoal's primary-backup (shoal.failover), under the same faults.

    python -m shoal_bench.sentinel [--runs 5] [--json] [--modes async,semi,sync]
                                   [--faults kill,partition] [--systems redis,shoal]

Each run starts the system fresh, writes unique keys from one client in a closed loop, injects
one fault, keeps writing until the system acknowledges a write again and a little longer,
heals, and reads everything back. It reports, per system, mode and fault, the medians over
the runs of: the time from the fault to the next acknowledged write, and the acknowledged
writes that are not there at the end (lost).

The systems, on loopback:
- **Redis**: Debian's redis-server (installed if missing) as a primary with 2 replicas and 3
  redis-sentinel (quorum 2, down-after-milliseconds 1000, failover-timeout 5000); appendonly
  with everysec fsync. Its modes: async is a plain SET; semi is SET then WAIT 1 1000; sync is
  SET then WAIT 2 1000 (a write counts as acknowledged only if WAIT says enough replicas have
  it). The client finds the primary through the sentinels, as redis-py's Sentinel does.
- **Shoal**: a 3-node store (20 ms ticks) and 3 `shoal failover run` members of the kv example
  (`--ttl 1`, so a dead primary holds the role about a second, like down-after 1000 ms), in
  each mode. The client finds the primary through the store.

The faults:
- **kill**: kill -9 of the primary process.
- **partition**: the primary is cut off from everything but one client (the "isolated"
  client, which keeps writing to it), for as long as the failover takes and 1 s more. This
  machine has no iptables, so it is done in user space, and as alike as possible for both:
  for Redis, the replicas and the sentinels reach the primary only through a TCP forwarder (a
  process of its own, so the replication stream it carries does not compete with the
  workload for an interpreter), which on the partition silently drops every byte both ways and holds new
  connections (as a partition does: no reset, only silence), while the isolated client talks
  to the primary's own port; for Shoal, the member's `isolate` fault (--allow-faults) makes it
  fail every store call and drop every connection but the isolated client's. SIGSTOP or
  CLIENT PAUSE would not do: they stop the isolated client too. Writes the isolated client
  had acknowledged count as acknowledged; on the heal, Redis's sentinels turn the old primary
  into a replica (its writes go), and Shoal's old primary, fenced, is reset by a snapshot.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shoal.local.cluster import LocalProcessCluster, free_ports

from .debian import ensure

HOST = "127.0.0.1"
WARMUP_S = 1.0
AFTER_S = 1.0  # writing goes on this long after the first acknowledgement after the fault
FAILOVER_LIMIT_S = 20.0
MAX_PROXY_CONNS = 256


@dataclass
class RunResult:
    system: str
    mode: str
    fault: str
    run: int
    failover_s: float | None  # fault -> next acknowledged write (None: none came in time)
    acked: int  # writes acknowledged, both clients
    lost: int  # of those, missing at the end
    isolated_acked: int = 0  # acknowledged by the isolated primary during a partition
    isolated_lost: int = 0
    note: str = ""


# ---------------------------------------------------------------------- the forwarder
class Blackhole:
    """A TCP forwarder to `upstream` on the running loop. `cut()` drops every byte both ways
    and holds new connections; `heal()` closes what was held or cut (whose bytes are gone)
    so that its peers reconnect, and forwards again."""

    def __init__(self, upstream: int):
        self.upstream = upstream
        self._cut = False
        self._writers: set[asyncio.StreamWriter] = set()

    def cut(self) -> None:
        self._cut = True

    def heal(self) -> None:
        self._cut = False
        for w in list(self._writers):
            w.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= MAX_PROXY_CONNS:
            writer.close()
            return
        self._writers.add(writer)
        up_w: asyncio.StreamWriter | None = None
        try:
            while self._cut:  # a new connection during the partition: silence
                if not await reader.read(65536):
                    return
            up_r, up_w = await asyncio.open_connection(HOST, self.upstream)
            self._writers.add(up_w)
            await asyncio.gather(self._pump(reader, up_w), self._pump(up_r, writer))
        except OSError:
            pass
        finally:
            writer.close()
            self._writers.discard(writer)
            if up_w is not None:
                up_w.close()
                self._writers.discard(up_w)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                if not self._cut:
                    dst.write(data)
                    await dst.drain()
        finally:
            dst.close()


async def _forward(upstream: int) -> None:
    """`--forward UPSTREAM`: a Blackhole in a process of its own (so the replication stream
    it carries does not share an interpreter with the workload), printing its port, cut by
    SIGUSR1, healed by SIGUSR2, ended by SIGTERM."""
    hole = Blackhole(upstream)
    server = await asyncio.start_server(hole.handle, HOST, 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop, done = asyncio.get_running_loop(), asyncio.Event()
    def say(done: Callable[[], None], word: str) -> Callable[[], None]:
        def go() -> None:
            done()
            print(word, flush=True)  # the parent waits for this: the fault is in effect

        return go

    loop.add_signal_handler(signal.SIGUSR1, say(hole.cut, "cut"))
    loop.add_signal_handler(signal.SIGUSR2, say(hole.heal, "healed"))
    loop.add_signal_handler(signal.SIGTERM, done.set)
    await done.wait()


class Forwarder:
    """The parent's handle on a `--forward` process."""

    def __init__(self, upstream: int):
        self.upstream = upstream
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> int:
        self.proc = subprocess.Popen([sys.executable, "-m", "shoal_bench.sentinel", "--forward",
                                      str(self.upstream)], stdout=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"the forwarder did not start (it printed {line!r})")
        self.port = int(line)
        return self.port

    def cut(self) -> None:
        self._signal(signal.SIGUSR1, "cut")

    def heal(self) -> None:
        self._signal(signal.SIGUSR2, "healed")

    def _signal(self, sig: int, word: str) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        self.proc.send_signal(sig)
        got = self.proc.stdout.readline().strip()  # a few ms: the forwarder's confirmation
        if got != word:
            raise RuntimeError(f"the forwarder answered {got!r}, not {word!r}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------------- the workload
@dataclass
class Workload:
    """One closed-loop writer; `write(n)` returns True once key n is acknowledged."""

    acked: list[int] = field(default_factory=list)
    ack_times: list[float] = field(default_factory=list)
    sent_times: list[float] = field(default_factory=list)  # when each acked write was sent

    async def run(self, write: Callable[[int], Awaitable[bool]], stop: asyncio.Event,
                  start: int = 0) -> None:
        n = start
        while not stop.is_set():
            sent = time.monotonic()
            try:
                ok = await write(n)
            except Exception:  # noqa: BLE001 - any failure: this write is not acknowledged
                ok = False
                await asyncio.sleep(0.01)
            if ok:
                self.acked.append(n)
                self.ack_times.append(time.monotonic())
                self.sent_times.append(sent)
            n += 1

    def first_ack_after(self, t: float) -> float | None:
        """Seconds from `t` to the acknowledgement of the first write *sent* after `t` (one
        sent before, whose answer merely arrived after, says nothing about the failover)."""
        return next((a - t for a, s in zip(self.ack_times, self.sent_times, strict=True)
                     if s >= t), None)


async def drive(fault: Callable[[], Awaitable[None]], write: Callable[[int], Awaitable[bool]],
                isolated: Callable[[int], Awaitable[bool]] | None,
                heal: Callable[[], Awaitable[None]] | None) -> tuple[Workload, Workload, float | None]:
    """Warm up, fault, write until acknowledged again (+AFTER_S), heal. Both workloads and the
    failover time."""
    main, iso = Workload(), Workload()
    stop_main, stop_iso = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(main.run(write, stop_main))]
    if isolated is not None:
        tasks.append(asyncio.create_task(iso.run(isolated, stop_iso, start=1_000_000)))
    await asyncio.sleep(WARMUP_S)
    await fault()  # returns once the fault is in effect: the clock starts then
    t_fault = time.monotonic()
    deadline = t_fault + FAILOVER_LIMIT_S
    while main.first_ack_after(t_fault) is None and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    failover = main.first_ack_after(t_fault)
    await asyncio.sleep(AFTER_S)
    stop_main.set()
    stop_iso.set()
    # Each ends after its write in flight; one still stuck after 15 s is cancelled. (Not
    # wait_for under a suppress: that would swallow a cancel of this run itself, Ctrl-C.)
    _, stuck = await asyncio.wait(tasks, timeout=15)
    for t in stuck:
        t.cancel()
    await asyncio.gather(*stuck, return_exceptions=True)
    if heal is not None:
        await heal()
    return main, iso, failover


# ---------------------------------------------------------------------- Redis
class RedisSetup:
    def __init__(self, root: Path, binaries: dict[str, str]):
        self.root, self.bin = root, binaries
        self.ports = dict(zip(("primary", "r1", "r2", "s1", "s2", "s3"), free_ports(6),
                              strict=True))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.proxy = Forwarder(self.ports["primary"])

    def start(self) -> None:
        proxy = self.proxy.start()
        for name in ("primary", "r1", "r2"):
            d = self.root / name
            d.mkdir()
            conf = d / "redis.conf"
            conf.write_text("")
            args = [self.bin["redis-server"], str(conf), "--port", str(self.ports[name]),
                    "--bind", HOST, "--dir", str(d), "--save", "", "--appendonly", "yes",
                    "--appendfsync", "everysec", "--protected-mode", "no"]
            if name != "primary":
                args += ["--replicaof", HOST, str(proxy)]
            self._spawn(name, args)
        for name in ("s1", "s2", "s3"):
            conf = self.root / f"{name}.conf"
            conf.write_text(f"port {self.ports[name]}\nbind {HOST}\nprotected-mode no\n"
                            f"dir {self.root}\n"
                            f"sentinel monitor m {HOST} {proxy} 2\n"
                            "sentinel down-after-milliseconds m 1000\n"
                            "sentinel failover-timeout m 5000\n"
                            "sentinel parallel-syncs m 2\n")
            self._spawn(name, [self.bin["redis-sentinel"], str(conf)])

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - the child holds it
        self.procs[name] = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()
        self.proxy.stop()


async def redis_run(root: Path, binaries: dict[str, str], mode: str, fault: str,
                    run: int) -> RunResult:
    import redis.asyncio as aredis
    from redis.asyncio.retry import Retry
    from redis.asyncio.sentinel import Sentinel
    from redis.backoff import NoBackoff

    setup = RedisSetup(root, binaries)
    setup.start()
    # redis-py retries a timed-out command 10 times by default: our loop retries instead,
    # finding the primary again through the sentinels each time, as Shoal's client does.
    once: dict[str, Any] = {"retry": Retry(NoBackoff(), 0)}
    sentinels = [(HOST, setup.ports[s]) for s in ("s1", "s2", "s3")]
    sentinel = Sentinel(sentinels, socket_timeout=0.5, socket_connect_timeout=0.5,
                        sentinel_kwargs={"socket_timeout": 0.5, **once}, **once)
    direct = aredis.Redis(host=HOST, port=setup.ports["primary"], socket_timeout=2, **once)
    need = {"async": 0, "semi": 1, "sync": 2}[mode]
    try:
        await _until(lambda: _redis_ready(sentinels, direct), "Redis and its sentinels", 30)
        current: dict[str, Any] = {}

        async def master() -> Any:
            if "r" not in current:
                host, port = await sentinel.discover_master("m")
                current["r"] = aredis.Redis(host=host, port=port, socket_timeout=0.5,
                                            socket_connect_timeout=0.5, **once)
            return current["r"]

        async def acked(r: Any, key: str, n: int) -> bool:
            await r.set(key, n)
            if need:
                return bool(await r.execute_command("WAIT", need, 1000) >= need)
            return True

        async def write(n: int) -> bool:
            r = await master()
            try:
                return await acked(r, f"m:{n}", n)
            except Exception:
                current.pop("r", None)
                await r.aclose()
                raise

        async def isolated(n: int) -> bool:
            return await acked(direct, f"i:{n}", n)

        async def do_fault() -> None:
            if fault == "kill":
                setup.procs["primary"].kill()
                setup.procs["primary"].wait()
            else:
                setup.proxy.cut()

        async def heal() -> None:
            setup.proxy.heal()

            async def demoted() -> bool:
                info = await direct.info("replication")
                return bool(info.get("role") == "slave" and info.get("master_link_status") == "up")

            with contextlib.suppress(TimeoutError):
                await _until(demoted, "the old Redis primary to become a replica", 20)

        main, iso, failover = await drive(do_fault, write,
                                          isolated if fault == "partition" else None,
                                          heal if fault == "partition" else None)
        async def everything() -> set[str]:
            # Sentinel may still be reconfiguring (it closes clients as it does): retried.
            current.pop("r", None)
            r = await master()
            try:
                return {k.decode() for k in await r.keys("*")}
            finally:
                current.pop("r", None)
                await r.aclose()

        present = await _until(everything, "a read of every key from the Redis primary", 20)
        lost = [n for n in main.acked if f"m:{n}" not in present]
        iso_lost = [n for n in iso.acked if f"i:{n}" not in present]
        return RunResult("redis", mode, fault, run, failover, len(main.acked) + len(iso.acked),
                         len(lost) + len(iso_lost), len(iso.acked), len(iso_lost))
    finally:
        with contextlib.suppress(Exception):
            await direct.aclose()
        setup.stop()


async def _redis_ready(sentinels: list[tuple[str, int]], direct: Any) -> bool:
    import redis.asyncio as aredis

    info = await direct.info("replication")
    if info.get("connected_slaves") != 2:
        return False
    for host, port in sentinels:
        s = aredis.Redis(host=host, port=port, socket_timeout=1)
        try:
            replicas = await s.execute_command("SENTINEL", "REPLICAS", "m")
            others = await s.execute_command("SENTINEL", "SENTINELS", "m")
        finally:
            await s.aclose()
        if len(replicas) != 2 or len(others) != 2:
            return False
    return True


async def _until(probe: Callable[[], Awaitable[Any]], what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if got := await probe():
                return got
        except Exception as exc:  # noqa: BLE001 - not ready yet
            last = exc
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{what} not ready within {timeout:g} s" + (f": {last}" if last else ""))


# ---------------------------------------------------------------------- Shoal
SHOAL_TTL = 1


async def shoal_run(cluster: LocalProcessCluster, root: Path, mode: str, fault: str,
                    run: int) -> RunResult:
    from shoal.client import Client
    from shoal.failover import MemberConn, ServiceClient

    name = f"bench-{mode}-{fault}-{run}"
    ports = dict(zip((1, 2, 3), free_ports(3), strict=True))
    procs: dict[int, subprocess.Popen[bytes]] = {}
    for i in (1, 2, 3):
        log = open(root / f"{name}-m{i}.log", "wb")  # noqa: SIM115 - the child holds it
        procs[i] = subprocess.Popen(
            [sys.executable, "-m", "shoal", "failover", "run", "--service", name, "--id", str(i),
             "--mode", mode, "--dir", str(root / f"{name}-m{i}"), "--listen",
             f"{HOST}:{ports[i]}", "--ttl", str(SHOAL_TTL), "--allow-faults",
             "--endpoints", ",".join(cluster.endpoints)],
            stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
    try:
        async with Client(cluster.endpoints, timeout=5) as store:
            svc = ServiceClient(store, name, timeout=3)

            async def synced() -> int | None:
                sts = {}
                for i in (1, 2, 3):
                    c = await MemberConn.open(f"{HOST}:{ports[i]}", name, timeout=1)
                    try:
                        sts[i] = await c.call("status", timeout=1)
                    finally:
                        await c.close()
                p = [i for i, s in sts.items() if s["role"] == "primary"]
                if len(p) == 1 and sorted(sts[p[0]]["syncset"]) == [1, 2, 3]:
                    return p[0]
                return None

            primary = await _until(synced, f"{name}: a primary with both backups in sync", 30)
            iso_conn = await MemberConn.open(f"{HOST}:{ports[primary]}", name)

            async def write(n: int) -> bool:
                await svc.write({"put": f"m:{n}", "value": n}, timeout=2)
                return True

            async def isolated(n: int) -> bool:
                await iso_conn.call("write", {"put": f"i:{n}", "value": n}, timeout=6)
                return True

            async def do_fault() -> None:
                if fault == "kill":
                    procs[primary].kill()
                    procs[primary].wait()
                else:
                    await iso_conn.call("fault", {"isolate": True})

            async def heal() -> None:
                await iso_conn.call("fault", {"isolate": False})

                async def rejoined() -> bool:
                    st = await iso_conn.call("status")
                    return bool(st["role"] == "backup" and st["lag"] == 0 and st["heard_s"]
                                is not None and st["heard_s"] < 1)

                with contextlib.suppress(TimeoutError):
                    await _until(rejoined, "the old primary to rejoin as a backup", 20)

            main, iso, failover = await drive(do_fault, write,
                                              isolated if fault == "partition" else None,
                                              heal if fault == "partition" else None)
            await iso_conn.close()

            async def everything() -> set[str]:
                got = await svc.read({"keys": ""})
                return set(got["result"])

            present = await _until(everything, "a read of every key", 20)
            await svc.close()
        lost = [n for n in main.acked if f"m:{n}" not in present]
        iso_lost = [n for n in iso.acked if f"i:{n}" not in present]
        return RunResult("shoal", mode, fault, run, failover, len(main.acked) + len(iso.acked),
                         len(lost) + len(iso_lost), len(iso.acked), len(iso_lost))
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


# ---------------------------------------------------------------------- the report
def summarize(results: list[RunResult]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str], list[RunResult]] = {}
    errors: dict[tuple[str, str, str], int] = {}
    for r in results:
        key = (r.system, r.mode, r.fault)
        if r.note.startswith("error"):
            errors[key] = errors.get(key, 0) + 1
            continue
        groups.setdefault(key, []).append(r)
    out = []
    for (system, mode, fault), rs in groups.items():
        times = [r.failover_s for r in rs if r.failover_s is not None]
        out.append({
            "system": system, "mode": mode, "fault": fault, "runs": len(rs),
            "failover_s_median": round(statistics.median(times), 3) if times else None,
            "failover_s_max": round(max(times), 3) if times else None,
            "no_failover_runs": len(rs) - len(times),
            "acked_median": statistics.median(r.acked for r in rs),
            "lost_median": statistics.median(r.lost for r in rs),
            "lost_max": max(r.lost for r in rs),
            "isolated_acked_median": statistics.median(r.isolated_acked for r in rs),
            "errored_runs": errors.get((system, mode, fault), 0)})
    return out


def print_table(summary: list[dict[str, Any]]) -> None:
    head = ["system", "mode", "fault", "runs", "fault->ack s (median)", "max s", "acked (median)",
            "lost (median)", "lost (max)", "acked to the isolated client (median)",
            "no ack within 20 s / errored runs"]
    rows = [[s["system"], s["mode"], s["fault"], str(s["runs"]),
             "-" if s["failover_s_median"] is None else f"{s['failover_s_median']:.2f}",
             "-" if s["failover_s_max"] is None else f"{s['failover_s_max']:.2f}",
             f"{s['acked_median']:g}", f"{s['lost_median']:g}", str(s["lost_max"]),
             f"{s['isolated_acked_median']:g}" if s["fault"] == "partition" else "",
             f"{s['no_failover_runs']} / {s['errored_runs']}"]
            for s in summary]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shoal_bench.sentinel", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--modes", default="async,semi,sync")
    ap.add_argument("--faults", default="kill,partition")
    ap.add_argument("--systems", default="redis,shoal")
    ap.add_argument("--json", action="store_true", help="print the runs and summary as JSON")
    ap.add_argument("--forward", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.forward:
        asyncio.run(_forward(args.forward))
        return 0
    # SIGTERM is taken as Ctrl-C: asyncio.run cancels the run, and the finally blocks stop
    # every process it started.
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    modes, faults = args.modes.split(","), args.faults.split(",")
    systems = args.systems.split(",")
    for what, got, allowed in (("mode", modes, ("async", "semi", "sync")),
                               ("fault", faults, ("kill", "partition")),
                               ("system", systems, ("redis", "shoal"))):
        bad = [g for g in got if g not in allowed]
        if bad or not 1 <= args.runs <= 100:
            ap.error(f"--{what}s: {bad} not in {allowed} (or --runs not in 1..100)")
    binaries = ensure({"redis-server": "redis-server", "redis-sentinel": "redis-sentinel"}) \
        if "redis" in systems else {}
    root = Path(tempfile.mkdtemp(prefix="shoal-bench-sentinel-"))
    results: list[RunResult] = []
    cluster = None
    try:
        if "shoal" in systems:
            cluster = LocalProcessCluster(3, root / "store", node_args=["--tick-ms", "20"])
            cluster.start()
        for run in range(1, args.runs + 1):
            for system in systems:
                for mode in modes:
                    for fault in faults:
                        d = root / f"{system}-{mode}-{fault}-{run}"
                        d.mkdir()
                        try:
                            if system == "redis":
                                r = asyncio.run(redis_run(d, binaries, mode, fault, run))
                            else:
                                assert cluster is not None
                                r = asyncio.run(shoal_run(cluster, d, mode, fault, run))
                        except Exception as exc:  # noqa: BLE001 - one bad run is reported, not fatal
                            r = RunResult(system, mode, fault, run, None, 0, 0,
                                          note=f"error: {type(exc).__name__}: {exc}"[:300])
                        results.append(r)
                        print(json.dumps(asdict(r)), file=sys.stderr, flush=True)
                        shutil.rmtree(d, ignore_errors=True)
    finally:
        if cluster is not None:
            cluster.close()
        shutil.rmtree(root, ignore_errors=True)
    summary = summarize(results)
    if args.json:
        print(json.dumps({"params": {"runs": args.runs, "shoal_ttl_s": SHOAL_TTL,
                                     "redis_down_after_ms": 1000, "warmup_s": WARMUP_S,
                                     "after_s": AFTER_S},
                          "summary": summary, "runs": [asdict(r) for r in results]}))
    else:
        print_table(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
