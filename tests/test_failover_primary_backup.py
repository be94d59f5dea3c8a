"""Primary-backup replication with fenced promotion (shoal.failover), with real processes: a
3-node Shoal cluster and 3 `shoal failover run` member processes per service. Every wait is on
a condition, polled under a deadline."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.client import Client
from shoal.failover import FencedOut, MemberConn, ServiceClient, ServiceError, Token, fenced_put
from shoal.local.cluster import LocalProcessCluster, free_ports

TTL = 2


def wait_for(pred: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    end = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalProcessCluster]:
    with LocalProcessCluster(3, tmp_path_factory.mktemp("store"),
                             node_args=["--tick-ms", "20"]) as c:
        c.start()
        yield c


class Service:
    """Three member processes of one service, and ways to look at them."""

    def __init__(self, cluster: LocalProcessCluster, root: Path, name: str, mode: str,
                 snapshot_every: int = 10_000):
        self.cluster, self.root, self.name, self.mode = cluster, root, name, mode
        self.snapshot_every = snapshot_every
        self.ports = dict(zip((1, 2, 3), free_ports(3), strict=True))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def addr(self, i: int) -> str:
        return f"127.0.0.1:{self.ports[i]}"

    def start(self, i: int) -> None:
        cmd = [sys.executable, "-m", "shoal", "failover", "run", "--service", self.name,
               "--id", str(i), "--mode", self.mode, "--dir", str(self.root / f"m{i}"),
               "--listen", self.addr(i), "--ttl", str(TTL), "--allow-faults",
               "--snapshot-every", str(self.snapshot_every),
               "--endpoints", ",".join(self.cluster.endpoints)]
        log = open(self.root / f"m{i}.log", "ab")  # noqa: SIM115 - the child holds it
        self.procs[i] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log,
                                         stdin=subprocess.DEVNULL)
        log.close()

    def start_all(self) -> None:
        for i in (1, 2, 3):
            self.start(i)

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        self.procs[i].send_signal(sig)
        if sig == signal.SIGKILL:
            self.procs[i].wait()

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()

    def run(self, fn: Callable[[ServiceClient], Any]) -> Any:
        async def go() -> Any:
            async with Client(self.cluster.endpoints, timeout=10) as store:
                svc = ServiceClient(store, self.name, timeout=15)
                try:
                    return await fn(svc)
                finally:
                    await svc.close()

        return asyncio.run(go())

    def status(self, i: int) -> dict[str, Any] | None:
        async def go() -> dict[str, Any] | None:
            try:
                c = await MemberConn.open(self.addr(i), self.name, timeout=1.0)
            except (OSError, TimeoutError):
                return None
            try:
                answer: dict[str, Any] = await c.call("status", timeout=1.0)
                return answer
            except (OSError, TimeoutError, ServiceError):
                return None
            finally:
                await c.close()

        return asyncio.run(go())

    def primary(self, alive: tuple[int, ...] = (1, 2, 3)) -> tuple[int, dict[str, Any]] | None:
        for i in alive:
            st = self.status(i)
            if st and st["role"] == "primary" and st["syncset"] is not None:
                return i, st
        return None

    def synced(self, members: tuple[int, ...] = (1, 2, 3)) -> tuple[int, dict[str, Any]] | None:
        """The primary once every member is in its sync set and has applied all it has."""
        found = self.primary(members)
        if not found:
            return None
        i, st = found
        if sorted(st["syncset"]) != sorted(members):
            return None
        if any((self.status(j) or {}).get("applied") != st["applied"] for j in members):
            return None
        return found

    def logs(self) -> str:
        return "\n".join(f"--- m{i}\n" + (self.root / f"m{i}.log").read_text()[-3000:]
                         for i in self.procs)


@pytest.fixture
def service(cluster: LocalProcessCluster, tmp_path: Path,
            request: pytest.FixtureRequest) -> Iterator[Callable[..., Service]]:
    made: list[Service] = []

    def make(mode: str, snapshot_every: int = 10_000) -> Service:
        s = Service(cluster, tmp_path, request.node.name.replace("[", "-").strip("]")[:60],
                    mode, snapshot_every)
        made.append(s)
        s.start_all()
        return s

    yield make
    for s in made:
        s.stop()
        print(s.logs())  # pytest shows it only when the test failed


async def _write_many(svc: ServiceClient, keys: range) -> list[dict[str, Any]]:
    return [await svc.write({"put": f"k{n}", "value": n}) for n in keys]


def test_writes_replicate_and_backups_say_how_stale_they_are(service: Callable[..., Service],
                                                             cluster: LocalProcessCluster) -> None:
    s = service("sync")
    p, _ = wait_for(s.synced, "a primary with both backups in its sync set")
    acks = s.run(lambda svc: _write_many(svc, range(20)))
    assert [a["result"] for a in acks] == [None] * 20
    assert len({a["token"] for a in acks}) == 1
    last = acks[-1]["index"]
    backups = [i for i in (1, 2, 3) if i != p]
    wait_for(lambda: all((s.status(i) or {}).get("applied") == last for i in backups),
             "both backups to apply every write")

    async def read_backup(svc: ServiceClient) -> dict[str, Any]:
        return await svc.read({"get": "k7"}, member=s.addr(backups[0]))

    r = s.run(read_backup)
    assert r["result"] == 7 and r["role"] == "backup" and r["index"] == last
    assert r["token"] == acks[-1]["token"] and r["lag"] == 0
    assert r["heard_s"] is not None and r["heard_s"] < TTL  # it hears the primary's beats

    out = subprocess.run([sys.executable, "-m", "shoal", "failover", "status", "--service",
                          s.name, "-o", "json", "--endpoints", ",".join(cluster.endpoints)],
                         capture_output=True, text=True, timeout=30, check=True)
    report = json.loads(out.stdout)
    assert report["primary"]["id"] == p and report["primary"]["token"] == acks[-1]["token"]
    assert sorted(report["syncset"]["members"]) == [1, 2, 3]
    roles = {m["id"]: (m["role"], m["applied"], m["lag"]) for m in report["members"]}
    assert roles == {i: ("primary" if i == p else "backup", last, 0) for i in (1, 2, 3)}


def test_kill_9_of_the_primary_promotes_the_most_caught_up_backup_and_loses_no_acked_write(
        service: Callable[..., Service]) -> None:
    s = service("sync")
    old, st = wait_for(s.synced, "a primary with both backups in its sync set")
    ahead, behind = [i for i in (1, 2, 3) if i != old]

    async def scenario(svc: ServiceClient) -> tuple[list[int], dict[str, Any]]:
        # Cut `behind` off for a moment: the primary drops it from the sync set and goes on
        # with `ahead` alone, so `ahead` is the one that has everything when the primary dies.
        cut = await MemberConn.open(s.addr(behind), s.name)
        await cut.call("fault", {"isolate": True})
        acked: list[int] = []
        n = 0
        while len(acked) < 30:
            try:
                await svc.write({"put": f"k{n}", "value": n}, timeout=5)
                acked.append(n)
            except ServiceError:
                pass
            n += 1
        s.kill(old)
        await cut.call("fault", {"isolate": False})
        await cut.close()
        # Keep writing through the failover until the new primary has acknowledged 10.
        after = 0
        while after < 10:
            try:
                await svc.write({"put": f"k{n}", "value": n}, timeout=15)
                acked.append(n)
                after += 1
            except ServiceError:
                pass
            n += 1
        found = await svc.primary()
        assert found is not None
        return acked, found

    acked, found = s.run(scenario)
    assert found["id"] == ahead and found["token"] > st["token"]
    new = s.status(ahead)
    assert new is not None and new["role"] == "primary"

    async def read_all(svc: ServiceClient) -> list[Any]:
        return [(await svc.read({"get": f"k{n}"}))["result"] for n in acked]

    assert s.run(read_all) == acked  # every acknowledged write survived the failover
    wait_for(lambda: (s.status(behind) or {}).get("applied") == (s.status(ahead) or {}).get(
        "applied"), "the other backup to follow the new primary")


def test_a_paused_primary_is_fenced_out_when_it_resumes(service: Callable[..., Service]) -> None:
    s = service("semi")
    old, st = wait_for(s.synced, "a primary with both backups in its sync set")
    old_token = st["token"]
    s.run(lambda svc: _write_many(svc, range(5)))

    async def scenario(svc: ServiceClient) -> tuple[Any, dict[str, Any]]:
        conn = await MemberConn.open(s.addr(old), s.name)
        s.kill(old, signal.SIGSTOP)
        # Sent while it is paused: it reads this only when it resumes.
        pending = asyncio.ensure_future(conn.call("write", {"put": "stale", "value": 1},
                                                  timeout=30))
        deadline = time.monotonic() + 20
        while True:
            found = await svc.primary()
            if found is not None and found["token"] > old_token:
                break
            assert time.monotonic() < deadline, "no new primary while the old one is paused"
            await asyncio.sleep(0.05)
        await _write_many(svc, range(100, 105))
        s.kill(old, signal.SIGCONT)
        try:
            outcome: Any = await pending
        except (ServiceError, OSError) as exc:
            outcome = exc
        await conn.close()
        with pytest.raises(FencedOut):  # the old token is refused by the store itself
            await fenced_put(svc.store, b"/test/fenced", b"x", Token(s.name, old_token))
        return outcome, found

    outcome, found = s.run(scenario)
    assert isinstance(outcome, ServiceError | OSError), f"the stale write was acknowledged: {outcome}"
    new = found["id"]
    assert new != old
    st_old = wait_for(lambda: (x := s.status(old)) and x["role"] == "backup" and x,
                      "the old primary to step down")
    # Its replication was refused by the backups that had retired its token, and the fenced
    # write it made first thing after resuming was refused by the store.
    assert st_old["counters"]["refusals_received"] >= 1
    assert st_old["counters"]["fenced_refused"] >= 1
    assert st_old["retired"] >= old_token
    assert sum((s.status(i) or {"counters": {"refusals_sent": 0}})["counters"]["refusals_sent"]
               for i in (1, 2, 3) if i != old) >= 1
    wait_for(lambda: all((s.status(i) or {}).get("applied") == (s.status(new) or {}).get("applied")
                         for i in (1, 2, 3)), "the old primary to catch up as a backup")

    async def reads(svc: ServiceClient) -> list[Any]:
        return [(await svc.read({"get": key}, member=s.addr(i)))["result"]
                for i in (1, 2, 3) for key in ("stale", "k104")]

    assert s.run(reads) == [None, 104] * 3  # nobody has the old primary's late write


def test_a_wiped_backup_catches_up_from_a_snapshot_and_the_log(
        service: Callable[..., Service]) -> None:
    s = service("async", snapshot_every=50)
    p, _ = wait_for(s.synced, "a primary with both backups in its sync set")
    victim = next(i for i in (1, 2, 3) if i != p)
    s.kill(victim)
    acks = s.run(lambda svc: _write_many(svc, range(180)))
    primary_st = s.status(p)
    assert primary_st is not None and primary_st["snapshot_index"] >= 100
    assert primary_st["log_first"] > 1  # the log is bounded: the start is gone
    import shutil

    shutil.rmtree(s.root / f"m{victim}")
    s.start(victim)
    last = acks[-1]["index"]
    st = wait_for(lambda: (x := s.status(victim)) and x["applied"] >= last and x,
                  "the wiped backup to catch up", timeout=30)
    assert st["counters"]["snapshots_installed"] >= 1
    assert st["snapshot_index"] >= 100

    async def check(svc: ServiceClient) -> list[Any]:
        return [(await svc.read({"get": f"k{n}"}, member=s.addr(victim)))["result"]
                for n in (0, 99, 179)]

    assert s.run(check) == [0, 99, 179]
    assert os.path.exists(s.root / f"m{victim}" / "snapshot")


def test_the_member_port_refuses_strangers_and_oversized_frames(tmp_path: Path) -> None:
    """In one process: a member with a shared secret (its store unreachable, which its port
    does not need) denies dialers without it or with another, and hangs up on a frame over
    its bound or of the wrong shape."""
    from shoal.failover import Denied, KVMap, Member, MemberConfig, Secret

    (tmp_path / "secret").write_text("s3cret\n")
    (tmp_path / "other").write_text("other")
    secret = Secret.from_file(tmp_path / "secret")

    async def go() -> None:
        async with Client(["127.0.0.1:1"], timeout=1) as store:
            m = Member(MemberConfig("port", 1, "sync", tmp_path / "m", secret=secret,
                                    max_frame=64 * 1024), store, KVMap())
            await m.start()
            try:
                with pytest.raises(Denied, match="requires the shared secret"):
                    await MemberConn.open(m.addr, "port")
                with pytest.raises(Denied, match="did not prove"):
                    await MemberConn.open(m.addr, "port", Secret.from_file(tmp_path / "other"))
                with pytest.raises(Denied, match="serves 'port', not 'else'"):
                    await MemberConn.open(m.addr, "else", secret)
                c = await MemberConn.open(m.addr, "port", secret)
                assert (await c.call("status"))["role"] == "backup"
                with pytest.raises(ServiceError, match="not the primary"):
                    await c.call("write", {"put": "a", "value": 1})
                await c.close()
                for payload in (b"\x00\xa0\x00\x00",  # a 10 MiB length: refused unread
                                b"\x00\x00\x00\x02\x91\x01"):  # [1]: not [id, op, body]
                    c = await MemberConn.open(m.addr, "port", secret)
                    c.writer.write(payload)
                    with pytest.raises((ConnectionError, OSError)):
                        await c.call("status", timeout=5)
                    await c.close()
            finally:
                await m.stop()

    asyncio.run(go())
