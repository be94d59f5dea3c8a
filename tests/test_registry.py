"""The registry against a real cluster, through the client API only: register, list, watch,
deregister on shutdown, expiry when the registering process dies, and the stale cache."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from cluster import LocalCluster
from shoal.client import Client
from shoal.registry import Instance, Registration, ServiceWatcher, list_instances


def run(coro, timeout: float = 90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(cond, timeout: float, what: str) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def ids(watcher: ServiceWatcher) -> set[str]:
    return {i.id for i in watcher.snapshot().instances}


def test_instance_metadata_round_trips_and_bad_names_are_refused():
    inst = Instance("api", "i-1", "10.0.0.1:80", 50, "eu-1", "1.2.3", ("canary", "arm"))
    assert inst.key == b"/shoal/services/api/i-1"
    assert Instance.from_kv(inst.key, inst.to_json()) == inst
    with pytest.raises(ValueError, match="service name"):
        Instance("a/b", "i", "h:1")
    with pytest.raises(ValueError, match="HOST:PORT"):
        Instance("api", "i", "no-port")
    with pytest.raises(ValueError, match="bad instance metadata"):
        Instance.from_kv(inst.key, b"{not json")


def test_register_list_watch_update_and_deregister(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints) as cl:
            await c.leader()
            a = Instance("api", "a", "127.0.0.1:8001", zone="z1", tags=("x",))
            async with ServiceWatcher(cl, "api") as w:
                assert w.snapshot().instances == () and not w.snapshot().stale
                changes = w.changes()
                assert (await anext(changes)).instances == ()
                reg_a = Registration(cl, a, ttl=30)
                await reg_a.start()
                assert (await anext(changes)).instances == (a,)
                async with Registration(cl, Instance("api", "b", "127.0.0.1:8002"), ttl=30):
                    await until(lambda: ids(w) == {"a", "b"}, 20, "a and b")
                    assert [i.id for i in await list_instances(cl, "api")] == ["a", "b"]
                    assert await list_instances(cl, "other") == ()
                # graceful exit revokes the lease: gone at once, not after the 30 s TTL
                await until(lambda: ids(w) == {"a"}, 10, "b to deregister")
                await cl.put(a.key, Instance("api", "a", "127.0.0.1:9999").to_json(),
                             lease=reg_a.lease_id)
                await until(lambda: w.snapshot().instances[0].address == "127.0.0.1:9999", 10,
                            "a's new address")
                await reg_a.stop()
                await until(lambda: ids(w) == set(), 10, "a to deregister")
                await changes.aclose()

    run(main())


def test_a_killed_process_expires_and_an_interrupted_one_deregisters(tmp_path):
    def register(ident: str, ttl: int, endpoints: list[str]) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", "from shoal.cli.governance import app; app()", "service",
             "register", "svc", "--address", "127.0.0.1:7000", "--id", ident, "--ttl", str(ttl),
             "--zone", "z", "--tag", "t", "--endpoints", ",".join(endpoints)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints) as cl:
            await c.leader()
            killed, stopped = register("killed", 2, c.endpoints), register("stopped", 60, c.endpoints)
            try:
                async with ServiceWatcher(cl, "svc") as w:
                    await until(lambda: ids(w) == {"killed", "stopped"}, 60, "both to register")
                    listed = await asyncio.to_thread(subprocess.run, [
                        sys.executable, "-c", "from shoal.cli.governance import app; app()",
                        "service", "list", "svc", "--endpoints", ",".join(c.endpoints)],
                        capture_output=True, text=True, timeout=60, env={**os.environ,
                                                                         "COLUMNS": "120"})
                    assert listed.returncode == 0, listed.stderr
                    assert "killed" in listed.stdout and "127.0.0.1:7000" in listed.stdout
                    killed.send_signal(signal.SIGKILL)
                    loop = asyncio.get_running_loop()
                    t0 = loop.time()
                    await until(lambda: ids(w) == {"stopped"}, 30, "the lease to expire")
                    assert loop.time() - t0 >= 1.0  # it lived out (most of) its TTL
                    stopped.send_signal(signal.SIGINT)
                    await until(lambda: ids(w) == set(), 20, "the revoke")  # well before 60 s
                out, _ = await asyncio.to_thread(stopped.communicate, timeout=20)
                assert stopped.returncode == 0 and "deregistered /shoal/services/svc/stopped" in out
            finally:
                for p in (killed, stopped):
                    p.kill()
                    p.wait()

    run(main())


def test_the_cache_serves_the_last_known_set_while_the_store_is_unreachable(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints, timeout=2) as cl:
            await c.leader()
            await cl.put(b"/shoal/services/api/a", Instance("api", "a", "127.0.0.1:1").to_json())
            await cl.put(b"/shoal/services/api/junk", b"not json")  # skipped, not fatal
            async with ServiceWatcher(cl, "api", probe_interval=0.2, probe_timeout=0.5) as w:
                assert ids(w) == {"a"}
                for i in list(c.servers):
                    await c.stop(i)
                await until(lambda: w.snapshot().stale, 20, "staleness")
                snap = w.snapshot()
                assert ids(w) == {"a"} and snap.stale_since is not None
                for m in c.ms:
                    await c.start(m.id)
                await c.leader(30)
                await until(lambda: not w.snapshot().stale, 30, "fresh again")
                await cl.put(b"/shoal/services/api/b", Instance("api", "b", "127.0.0.1:2").to_json())
                await until(lambda: ids(w) == {"a", "b"}, 20, "the watch to resume")

    run(main())


def test_cli_refuses_bad_options_with_a_clear_message():
    from typer.testing import CliRunner

    from shoal.cli.governance import app

    r = CliRunner().invoke(app, ["gateway", "--service", "x", "--health", "icmp"])
    assert r.exit_code == 2 and "--health 'icmp'" in r.output
    r = CliRunner().invoke(app, ["gateway", "--service", "x", "--listen", "nowhere"])
    assert r.exit_code == 2 and "--listen" in r.output
    r = CliRunner().invoke(app, ["service", "register", "a/b", "--address", "h:1"])
    assert r.exit_code == 2 and "service name" in r.output
