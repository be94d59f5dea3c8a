"""Debian's etcdctl (etcd-client 3.4, ETCDCTL_API=3) against a 3-node Shoal cluster serving
the etcd v3 API. One cluster for the module; each test uses its own keys."""

from __future__ import annotations

import json
import os
import subprocess
import time

import msgpack
import pytest

from etcd_cluster import BackgroundCluster
from shoal.etcdapi.api import unframe_snapshot
from shoal.kv import KVStore
from shoal_bench.debian import MissingTool, ensure


def ensure_etcdctl() -> str:
    try:
        return ensure({"etcdctl": "etcd-client"})["etcdctl"]
    except MissingTool as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def etcdctl_bin() -> str:
    return ensure_etcdctl()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = BackgroundCluster(tmp_path_factory.mktemp("etcdctl"), fsync=False).start()
    yield c
    c.stop()


@pytest.fixture
def ctl(cluster, etcdctl_bin):
    env = dict(os.environ, ETCDCTL_API="3")

    def run(*args: str, input: str | None = None, endpoints: list[str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        eps = ",".join(endpoints or cluster.endpoints)
        p = subprocess.run([etcdctl_bin, f"--endpoints={eps}", "--command-timeout=10s", *args],
                           input=input, capture_output=True, text=True, env=env, timeout=30)
        if check:
            assert p.returncode == 0, f"etcdctl {' '.join(args)} failed: {p.stderr}"
        return p

    run.env = env  # type: ignore[attr-defined]
    run.bin = etcdctl_bin  # type: ignore[attr-defined]
    return run


def lines(p: subprocess.CompletedProcess[str]) -> list[str]:
    return p.stdout.splitlines()


def test_put_get_prefix_revision_and_delete(ctl):
    assert lines(ctl("put", "kv/a", "1")) == ["OK"]
    rev_a = json.loads(ctl("get", "kv/a", "-w", "json").stdout)["header"]["revision"]
    ctl("put", "kv/a", "2")
    ctl("put", "kv/b", "3")
    assert lines(ctl("get", "kv/", "--prefix")) == ["kv/a", "2", "kv/b", "3"]
    assert lines(ctl("get", "kv/a", f"--rev={rev_a}")) == ["kv/a", "1"]
    assert lines(ctl("get", "kv/", "--prefix", "--keys-only")) == ["kv/a", "", "kv/b", ""]
    out = json.loads(ctl("get", "kv/", "--prefix", "--limit=1", "-w", "json").stdout)
    assert out["count"] == 2 and out["more"] is True and len(out["kvs"]) == 1
    h = out["header"]
    assert h["cluster_id"] and h["member_id"] in (1, 2, 3) and h["raft_term"] >= 1
    assert lines(ctl("del", "kv/", "--prefix")) == ["2"]
    assert lines(ctl("get", "kv/", "--prefix")) == []


def test_writes_through_every_member(cluster, ctl):
    for i, ep in enumerate(cluster.endpoints):
        assert lines(ctl("put", f"each/{i}", ep, endpoints=[ep])) == ["OK"]
    got = lines(ctl("get", "each/", "--prefix", endpoints=[cluster.endpoints[0]]))
    assert got[1::2] == cluster.endpoints


def test_compacted_revision_is_etcds_error(ctl):
    ctl("put", "cmp/k", "1")
    rev = json.loads(ctl("get", "cmp/k", "-w", "json").stdout)["header"]["revision"]
    ctl("put", "cmp/k", "2")
    ctl("compaction", str(rev + 1))
    p = ctl("get", "cmp/k", f"--rev={rev}", check=False)
    assert p.returncode != 0
    assert "etcdserver: mvcc: required revision has been compacted" in p.stderr


def test_txn_interactive(ctl):
    ctl("put", "txn/k", "v1")
    script = 'value("txn/k") = "v1"\n\nput txn/k v2\nput txn/other yes\n\nput txn/k failed\n\n'
    out = lines(ctl("txn", "-i", input=script))
    assert "SUCCESS" in out
    assert lines(ctl("get", "txn/k")) == ["txn/k", "v2"]
    out = lines(ctl("txn", "-i", input=script))
    assert "FAILURE" in out
    assert lines(ctl("get", "txn/k")) == ["txn/k", "failed"]


def test_watch_prints_events(ctl, cluster):
    proc = subprocess.Popen([ctl.bin, f"--endpoints={cluster.endpoints[1]}", "watch", "w/",
                             "--prefix"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ctl.env)
    try:
        time.sleep(0.7)  # let the watch be created
        ctl("put", "w/x", "hello")
        ctl("del", "w/x")
        got = [proc.stdout.readline().strip() for _ in range(5)]
        assert got == ["PUT", "w/x", "hello", "DELETE", "w/x"]
    finally:
        proc.kill()
        proc.wait()


def test_watch_from_a_past_revision(ctl, cluster):
    ctl("put", "wr/a", "1")
    rev = json.loads(ctl("get", "wr/a", "-w", "json").stdout)["header"]["revision"]
    ctl("put", "wr/a", "2")
    proc = subprocess.Popen([ctl.bin, f"--endpoints={cluster.endpoints[0]}", "watch", "wr/a",
                             f"--rev={rev}", "--prev-kv"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ctl.env)
    try:
        got = [proc.stdout.readline().strip() for _ in range(7)]
        assert got == ["PUT", "wr/a", "1", "PUT", "wr/a", "1", "wr/a"] or got[:3] == ["PUT", "wr/a", "1"]
    finally:
        proc.kill()
        proc.wait()


def test_lease_grant_attach_keepalive_revoke(ctl):
    out = lines(ctl("lease", "grant", "30"))
    lease = out[0].split()[1]
    ctl("put", "lease/k", "v", f"--lease={lease}")
    ka = lines(ctl("lease", "keep-alive", "--once", lease))
    assert ka == [f"lease {lease} keepalived with TTL(30)"]
    ttl = " ".join(lines(ctl("lease", "timetolive", lease, "--keys")))
    assert "granted with TTL(30s)" in ttl and "lease/k" in ttl
    assert lease in lines(ctl("lease", "list"))[1:]
    assert lines(ctl("lease", "revoke", lease)) == [f"lease {lease} revoked"]
    assert lines(ctl("get", "lease/k")) == []
    p = ctl("lease", "revoke", lease, check=False)
    assert p.returncode != 0 and "etcdserver: requested lease not found" in p.stderr
    p = ctl("lease", "keep-alive", "--once", lease, check=False)
    assert p.returncode != 0 and "requested lease not found" in p.stderr


def test_lock_is_exclusive(ctl, cluster):
    holder = subprocess.Popen([ctl.bin, f"--endpoints={cluster.endpoints[0]}", "lock", "mylock"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=ctl.env)
    try:
        key = holder.stdout.readline().strip()
        assert key.startswith("mylock/")
        # a second locker with a command waits until the first lets go
        waiter = subprocess.Popen([ctl.bin, f"--endpoints={cluster.endpoints[1]}", "lock",
                                   "mylock", "echo", "got it"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=ctl.env)
        time.sleep(1.0)
        assert waiter.poll() is None
        holder.terminate()  # etcdctl releases the lock on SIGTERM
        out, err = waiter.communicate(timeout=20)
        assert "got it" in out, err
    finally:
        holder.kill()
        holder.wait()


def test_elect_and_observe(ctl, cluster):
    leader = subprocess.Popen([ctl.bin, f"--endpoints={cluster.endpoints[2]}", "elect", "myelection",
                               "alice"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=ctl.env)
    try:
        key = leader.stdout.readline().strip()
        assert key.startswith("myelection/")
        assert leader.stdout.readline().strip() == "alice"
        obs = subprocess.Popen([ctl.bin, f"--endpoints={cluster.endpoints[0]}", "elect", "-l",
                                "myelection"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=ctl.env)
        try:
            assert obs.stdout.readline().strip().startswith("myelection/")
            assert obs.stdout.readline().strip() == "alice"
        finally:
            obs.kill()
            obs.wait()
    finally:
        leader.kill()
        leader.wait()


def test_member_list_add_learner_and_remove(ctl):
    before = lines(ctl("member", "list"))
    assert len(before) == 3 and all(", started, shoal-" in ln for ln in before)
    out = ctl("member", "add", "newbie", "--learner", "--peer-urls=http://127.0.0.1:1").stdout
    assert "added to cluster" in out
    new_id = out.split("Member")[1].split()[0]
    rows = lines(ctl("member", "list"))
    assert len(rows) == 4 and any(r.startswith(new_id + ",") and r.endswith("true") for r in rows)
    out = ctl("member", "remove", new_id).stdout
    assert "removed from cluster" in out
    assert len(lines(ctl("member", "list"))) == 3
    p = ctl("member", "remove", new_id, check=False)
    assert p.returncode != 0 and "member not found" in p.stderr


def test_endpoint_status_and_health(ctl, cluster):
    rows = json.loads(ctl("endpoint", "status", "-w", "json").stdout)
    assert len(rows) == 3
    leader = cluster.leader()
    for r in rows:
        st = r["Status"]
        assert st["leader"] == leader and st["raftTerm"] >= 1 and st["version"]
        assert st["header"]["member_id"] in (1, 2, 3)
    p = ctl("endpoint", "health")
    assert p.stdout.count("is healthy") + p.stderr.count("is healthy") == 3


def test_snapshot_save(ctl, cluster, tmp_path):
    ctl("put", "snap/k", "v")
    path = tmp_path / "snap.db"
    out = ctl("snapshot", "save", str(path), endpoints=[cluster.endpoints[0]]).stdout
    assert "Snapshot saved" in out
    kv_bytes, members, *_ = msgpack.unpackb(unframe_snapshot(path.read_bytes()), strict_map_key=False)
    assert KVStore.restore(kv_bytes).mvcc.get(b"snap/k").value == b"v"
    assert sorted(int(n) for n in members) == [1, 2, 3]
