"""`shoal cluster up` as a person runs it, a real process with its output in pipes: the
printed table and command lines, one node stopped, killed, started and restarted through
`shoal cluster stop|kill|start|restart`, and --keep leaving data and logs behind."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shoal.local.cluster import STATE_FILE

ENV = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "SHOAL_ENDPOINTS")}


def shoal(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True, text=True,
                          timeout=60, env={**ENV, **(env or {})})


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except OSError:
        return False
    return state != "Z"


def _node_pids(root: Path) -> dict[int, int | None]:
    state = json.loads((root / STATE_FILE).read_text())
    return {n["id"]: n["pid"] for n in state["nodes"]}


def _status(endpoints: str) -> dict[int, dict[str, object]]:
    done = shoal("status", "-o", "json", "--endpoints", endpoints)
    return {m["id"]: m for m in json.loads(done.stdout)["members"]}


@pytest.fixture
def cluster_up(tmp_path: Path):
    """A running `shoal cluster up --keep` on a temporary directory of its own making."""
    proc = subprocess.Popen([sys.executable, "-m", "shoal", "cluster", "up", "--keep",
                             "--base-port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**ENV, "TMPDIR": str(tmp_path)})
    try:
        yield proc
    finally:  # on a failure, leave no node behind (they run in sessions of their own)
        proc.kill()
        proc.wait()
        for root in tmp_path.glob("shoal-cluster-*"):
            for pid in _node_pids(root).values() if (root / STATE_FILE).exists() else ():
                if pid and _alive(pid):
                    os.kill(pid, signal.SIGKILL)


def test_cluster_up_operate_one_node_and_keep(cluster_up: subprocess.Popen[str],
                                              tmp_path: Path) -> None:
    assert cluster_up.stdout is not None and cluster_up.stderr is not None
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = cluster_up.stdout.readline()
        assert line, f"cluster up ended early: {''.join(lines)} {cluster_up.stderr.read()}"
        lines.append(line)
        if line.startswith("SHOAL_ENDPOINTS="):
            break
    out = "".join(lines)
    endpoints = lines[-1].split("=", 1)[1].strip()
    (root,) = tmp_path.glob("shoal-cluster-*")
    state = json.loads((root / STATE_FILE).read_text())
    assert "leader" in out and "…" not in out  # a pipe: the table is not cut to 80 columns
    for node in state["nodes"]:  # the printed command line is the one that runs
        assert f"node {node['id']}: {shlex.join(node['command'])}\n" in lines
        assert node["client"] in out and node["http"] in out and _alive(node["pid"])
    assert state["endpoints"] == endpoints.split(",")

    on = {"env": {"SHOAL_CLUSTER_DIR": str(root)}}
    before = _node_pids(root)
    done = shoal("cluster", "kill", "2", **on)
    assert (done.returncode, done.stdout) == (0, "node 2 killed (SIGKILL)\n"), done.stderr
    assert not _alive(before[2]) and _node_pids(root)[2] is None
    assert _status(endpoints)[2]["reachable"] is False

    done = shoal("cluster", "kill", "2", "--dir", str(root))
    assert done.returncode == 1 and done.stderr == "error: node 2 is not running\n"
    done = shoal("cluster", "start", "2", "--dir", str(root))
    assert done.returncode == 0 and done.stdout.startswith("node 2 started (pid "), done.stderr
    new = _node_pids(root)[2]
    assert new is not None and new != before[2] and _alive(new)

    done = shoal("cluster", "restart", "1", "--dir", str(root))
    assert done.returncode == 0 and done.stdout.startswith("node 1 restarted"), done.stderr
    assert not _alive(before[1]) and _alive(_node_pids(root)[1] or 0)
    done = shoal("cluster", "stop", "3", "--dir", str(root))
    assert (done.returncode, done.stdout) == (0, "node 3 stopped (exit code 0)\n"), done.stderr
    assert not _alive(before[3])
    deadline = time.monotonic() + 20
    while not all(m["healthy"] for i, m in _status(endpoints).items() if i != 3):
        assert time.monotonic() < deadline, "nodes 1 and 2 did not elect"
    assert shoal("put", "kept", "yes", "--endpoints", endpoints).returncode == 0

    cluster_up.send_signal(signal.SIGINT)
    rest, err = cluster_up.communicate(timeout=30)
    assert cluster_up.returncode == 0, err
    assert "node 2 killed (SIGKILL)" in err and "node 2 exited (code" not in err  # asked for: no news
    assert "stopped cleanly" in err and f"kept in {root}" in err
    assert (root / "n1.log").stat().st_size > 0 and (root / "n1").is_dir()  # --keep
    assert json.loads((root / STATE_FILE).read_text())["control"] is None
    done = shoal("cluster", "start", "3", "--dir", str(root))
    assert done.returncode == 1 and "is not running" in done.stderr


def test_one_node_commands_need_a_cluster_directory(tmp_path: Path) -> None:
    done = shoal("cluster", "stop", "1", "--dir", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr == f"error: {tmp_path} holds no {STATE_FILE}: not a `shoal cluster up` directory\n"
    done = shoal("cluster", "stop", "1", env={"TMPDIR": str(tmp_path)})
    assert (done.returncode, done.stderr) == (1, "error: no running `shoal cluster up` found; pass --dir\n")
