"""`-o table|json|simple` on the commands that print data, through the real `shoal` command
against real nodes: the JSON shapes docs/cli.md promises, tables whole in a pipe (not cut at
80 columns) and drawn for a terminal, progress on stderr; lock, watch and snapshots too."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shoal.cli import app
from shoal.cli.common import BASE_PORT, DEFAULT_ENDPOINTS
from shoal.local.cluster import LocalProcessCluster, free_ports

runner = CliRunner()
ENV = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "SHOAL_ENDPOINTS")}


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with LocalProcessCluster(3, tmp_path_factory.mktemp("cluster")) as cluster:
        cluster.start()
        yield ",".join(cluster.endpoints)
        assert all(code == 0 for code in cluster.stop().values())


def shoal(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


def as_json(*args: str, input: str | None = None) -> dict:  # type: ignore[type-arg]
    code, out, err = shoal(*args, "-o", "json", input=input)
    assert code == 0, err
    assert out.count("\n") == 1  # one document, one line
    return json.loads(out)  # type: ignore[no-any-return]


def run(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    """The real command, stdout and stderr in pipes, no COLUMNS to lean on."""
    return subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True,
                          text=True, timeout=60, env=ENV, **kw)  # type: ignore[call-overload]


def test_the_default_endpoints_are_those_of_cluster_up(tmp_path: Path) -> None:
    up = LocalProcessCluster(3, tmp_path, base_port=BASE_PORT)  # what `cluster up` plans
    assert DEFAULT_ENDPOINTS == ",".join(up.endpoints) == "127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793"
    code, out, _ = shoal("cluster", "up", "--help")
    assert code == 0 and f"[default: {BASE_PORT}]" in out


def test_kv_json(endpoints: str) -> None:
    ep = ("--endpoints", endpoints)
    put = as_json("put", "j/a", "apple", *ep)
    assert set(put) == {"revision"}
    got = as_json("get", "j/a", *ep)
    assert got == {"revision": put["revision"], "count": 1, "more": False,
                   "kvs": [{"key": "j/a", "value": "apple", "create_revision": put["revision"],
                            "mod_revision": put["revision"], "version": 1, "lease": 0}]}
    as_json("put", "j/b", "banana", *ep)
    keys = as_json("get", "j/", "--prefix", "--keys-only", "--limit", "1", *ep)
    assert keys["count"] == 2 and keys["more"] is True and keys["kvs"][0].keys() == {
        "key", "create_revision", "mod_revision", "version", "lease"}
    code, out, _ = shoal("get", "j/", "--prefix", "-o", "table", *ep)
    assert code == 0 and "apple" in out and "banana" in out and "mod rev" in out
    assert shoal("get", "j/a", "-o", "simple", *ep)[1] == "j/a\napple\n"
    assert as_json("del", "j/", "--prefix", *ep)["deleted"] == 2


def test_txn_json(endpoints: str) -> None:
    ep = ("--endpoints", endpoints)
    rev = as_json("put", "jt", "v1", *ep)["revision"]
    script = 'value("jt") = "v1"\n\nput jt v2\nget jt\n\ndel jt\n'
    assert as_json("txn", *ep, input=script) == {
        "op": "txn", "succeeded": True, "revision": rev + 1, "responses": [
            {"op": "put", "revision": rev + 1},
            {"op": "get", "revision": rev + 1, "count": 1, "more": False,
             "kvs": [{"key": "jt", "value": "v2", "create_revision": rev, "mod_revision": rev + 1,
                      "version": 2, "lease": 0}]}]}
    failed = as_json("txn", *ep, input=script)
    assert failed["succeeded"] is False and failed["responses"] == [
        {"op": "del", "revision": rev + 2, "deleted": 1}]
    code, _, err = shoal("txn", "-o", "table", *ep, input=script)
    assert code == 2 and err == "error: txn prints -o simple or -o json\n"


def test_lease_json(endpoints: str) -> None:
    ep = ("--endpoints", endpoints)
    lease = as_json("lease", "grant", "60", *ep)
    assert lease.keys() == {"id", "ttl"} and lease["ttl"] == 60
    as_json("put", "jl", "x", "--lease", str(lease["id"]), *ep)
    ttl = as_json("lease", "ttl", str(lease["id"]), "--keys", *ep)
    assert ttl["id"] == lease["id"] and ttl["granted_ttl"] == 60 and 0 < ttl["ttl"] <= 60
    assert ttl["keys"] == ["jl"]
    assert lease["id"] in as_json("lease", "list", *ep)["leases"]
    assert as_json("get", "jl", *ep)["kvs"][0]["lease"] == lease["id"]


def test_cluster_json(endpoints: str) -> None:
    ep = ("--endpoints", endpoints)
    members = as_json("member", "list", *ep)
    assert [m["client"] for m in members["members"]] == endpoints.split(",")
    assert [m["id"] for m in members["members"] if m["leader"]] == [members["leader"]]
    assert {m["kind"] for m in members["members"]} == {"voter"}
    status = as_json("status", *ep)["members"]
    assert [m["endpoint"] for m in status] == endpoints.split(",")
    assert all(m["healthy"] and m["reachable"] and m["reasons"] == [] for m in status)
    assert sorted(m["role"] for m in status) == ["follower", "follower", "leader"]
    assert {m["leader"] for m in status} == {members["leader"]}
    code, out, _ = shoal("status", "-o", "simple", *ep)
    rows = [line.split("\t") for line in out.splitlines()]
    assert code == 0 and [r[1] for r in rows] == endpoints.split(",")
    assert all(len(r) == 11 and r[9] == "healthy" for r in rows)
    assert as_json("group", "list", *ep) == {"groups": []}


def test_tables_are_whole_in_a_pipe_and_drawn_on_a_terminal(endpoints: str) -> None:
    piped = run("status", "--endpoints", endpoints)
    assert piped.returncode == 0, piped.stderr
    for ep in endpoints.split(","):
        assert ep in piped.stdout  # not `127.0.…`: rich assumes 80 columns in a pipe
    assert "follower" in piped.stdout and "healthy" in piped.stdout
    assert "…" not in piped.stdout and "\x1b[" not in piped.stdout  # nor colours
    assert max(map(len, piped.stdout.splitlines())) > 80  # the rows are wider than that

    main, child = pty.openpty()  # a terminal 60 columns wide: rich folds, never cuts
    os.set_blocking(main, True)
    proc = subprocess.Popen([sys.executable, "-m", "shoal", "status", "--endpoints",
                             endpoints], stdout=child, stderr=subprocess.PIPE,
                            env={**ENV, "COLUMNS": "60", "TERM": "xterm"})
    os.close(child)
    seen = b""
    while chunk := _read(main):
        seen += chunk
    os.close(main)
    assert proc.wait(30) == 0
    screen = seen.decode()
    assert "┏" in screen and "\x1b[" in screen  # drawn, in colour
    assert max(len(_plain(line)) for line in screen.splitlines()) <= 60
    assert "…" not in screen


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the other end closed
        return b""


def _plain(line: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", line).rstrip("\r")


def test_watch_prints_json_lines(endpoints: str) -> None:
    ep = ("--endpoints", endpoints)
    first = as_json("put", "jw", "one", *ep)["revision"]
    as_json("put", "jw", "two", *ep)
    as_json("del", "jw", *ep)
    proc = subprocess.Popen([sys.executable, "-m", "shoal", "watch", "jw", "--rev", str(first),
                             "--prev-kv", "-o", "json", *ep], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        assert proc.stdout is not None
        events = [json.loads(proc.stdout.readline()) for _ in range(3)]  # replayed from --rev
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert [(e["type"], e.get("value"), e["mod_revision"]) for e in events] == [
        ("PUT", "one", first), ("PUT", "two", first + 1), ("DELETE", None, first + 2)]
    assert events[0]["prev_kv"] is None and events[1]["prev_kv"]["value"] == "one"
    assert events[2]["prev_kv"]["value"] == "two" and "value" not in events[2]


def test_lock_progress_is_on_stderr_and_names_the_holder(endpoints: str) -> None:
    shoal_cmd = [sys.executable, "-m", "shoal", "lock", "--endpoints", endpoints, "jobs"]
    holder = subprocess.Popen(shoal_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=ENV)
    waiter = None
    try:
        assert holder.stderr is not None
        acquired = holder.stderr.readline()
        assert acquired.startswith("acquired lock jobs, fencing token "), acquired
        token = int(acquired.split()[-1])
        waiter = subprocess.Popen([*shoal_cmd, "--", "echo", "the command's own output"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=ENV)
        assert waiter.stderr is not None
        waiting = waiter.stderr.readline()
        assert waiting.startswith("waiting for lock jobs held by lease "), waiting
        assert waiting.endswith(f"(fencing token {token})\n")
        holder.send_signal(signal.SIGINT)
        out, err = waiter.communicate(timeout=30)
        assert waiter.returncode == 0, err
        assert out == "the command's own output\n"  # nothing of ours mixed in
        assert "acquired lock jobs" in err and "released lock jobs" in err
    finally:
        for p in (holder, waiter):
            if p is not None:
                p.kill()
                p.wait()


def test_snapshot_status_and_restore_into_a_node_that_serves_it(endpoints: str,
                                                                tmp_path: Path) -> None:
    ep = ("--endpoints", endpoints)
    for i in range(5):
        as_json("put", f"snap/{i}", f"v{i}", *ep)
    file = tmp_path / "s.snap"
    code, _, err = shoal("snapshot", "save", str(file), *ep)
    assert code == 0, err
    live = as_json("get", "snap/", "--prefix", *ep)
    info = as_json("snapshot", "status", str(file))
    assert info["revision"] == live["revision"] and info["size"] == file.stat().st_size
    assert info["keys"] >= 5 and info["index"] > 0 and info["members"] == [1, 2, 3]
    assert isinstance(info["hash"], int)
    code, out, _ = shoal("snapshot", "status", str(file))
    assert code == 0 and f"{info['hash']:08x}" in out and "revision" in out

    peer, client, http = free_ports(3)
    spec = f"1=127.0.0.1:{peer}/127.0.0.1:{client}"
    data_dir = tmp_path / "restored"
    code, out, err = shoal("snapshot", "restore", str(file), "--data-dir", str(data_dir),
                           "--id", "1", "--members", spec, "--cluster-id", "again")
    assert code == 0 and out == "" and f"into {data_dir}" in err, err
    code, _, err = shoal("snapshot", "restore", str(file), "--data-dir", str(data_dir),
                         "--id", "1", "--members", spec)
    assert code == 2 and "already exists" in err
    node = subprocess.Popen([sys.executable, "-m", "shoal", "node", "--id", "1", "--data-dir",
                             str(data_dir), "--members", spec, "--http", f"127.0.0.1:{http}",
                             "--cluster-id", "again"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=ENV)
    try:
        one = ("--endpoints", f"127.0.0.1:{client}")
        deadline = time.monotonic() + 30
        while shoal("put", "after", "restore", *one)[0] != 0:  # once it has elected itself
            assert node.poll() is None and time.monotonic() < deadline
        got = as_json("get", "snap/", "--prefix", *one)
        assert [(kv["key"], kv["value"]) for kv in got["kvs"]] == [
            (kv["key"], kv["value"]) for kv in live["kvs"]]
        assert [m["id"] for m in as_json("member", "list", *one)["members"]] == [1]
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(20)


def test_snapshot_status_of_a_damaged_file(tmp_path: Path) -> None:
    file = tmp_path / "bad.snap"
    file.write_bytes(b"\x93\x01\x02\x03 not a snapshot")
    code, out, err = shoal("snapshot", "status", str(file))
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: {file} is not an intact Shoal snapshot")
