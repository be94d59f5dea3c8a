"""The node's HTTP port as an attacker or a clumsy user meets it (issue 10, finding 2), on real
node processes: /faults is off unless enabled and then needs the admin token, a bad body is a
400 that changes nothing, /status needs the token, /health and /metrics stay open. Also what
`LocalProcessCluster` sets up for that: a random cluster id and 0600 secret files."""

from __future__ import annotations

import http.client
import json
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shoal.cli import app
from shoal.local.cluster import LocalProcessCluster, free_ports
from shoal.server.node import cluster_number

HOST = "127.0.0.1"


def request(port: int, method: str, path: str, body: bytes | None = None,
            token: str | None = None, auth: str | None = None) -> tuple[int, Any]:
    """(status, decoded JSON or text). `token` sends it as a bearer token; `auth` sends the
    Authorization header as given."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if auth is not None:
        headers["Authorization"] = auth
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, raw.decode(errors="replace")


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalProcessCluster]:
    """One node as local clusters run them: --allow-faults behind the admin token."""
    with LocalProcessCluster(1, tmp_path_factory.mktemp("secured"),
                             node_args=["--tick-ms", "20"]) as c:
        c.start()  # waits for a leader through /status, so status() sends the token
        yield c


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A node started with none of the security flags; its HTTP port."""
    root = tmp_path_factory.mktemp("plain")
    peer, client, port = free_ports(3)
    with open(root / "node.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shoal", "node", "--id", "1", "--data-dir", str(root / "d"),
             "--members", f"1={HOST}:{peer}/{HOST}:{client}", "--http", f"{HOST}:{port}",
             "--tick-ms", "20"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:  # until it serves /health
            assert proc.poll() is None, (root / "node.log").read_text()
            try:
                if request(port, "GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the plain node did not come up"
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def faults(c: LocalProcessCluster) -> Any:
    code, plan = request(c.http_ports[1], "GET", "/faults", token=c.admin_token)
    assert code == 200, plan
    return plan


# ---------------------------------------------------------------------- /faults off
def test_faults_are_404_on_a_node_without_allow_faults(plain: int) -> None:
    for method, body in (("GET", None), ("POST", b'{"block_to": [2], "block_from": [2]}')):
        code, answer = request(plain, method, "/faults", body)
        assert code == 404, answer
        assert "fault injection is off" in answer["error"] and "--allow-faults" in answer["error"]


def test_without_an_admin_token_configured_status_is_open(plain: int) -> None:
    code, st = request(plain, "GET", "/status")
    assert code == 200 and st["id"] == 1


# ---------------------------------------------------------------------- the admin token
def test_faults_need_the_admin_token_and_a_refusal_changes_nothing(
        secured: LocalProcessCluster) -> None:
    port, token = secured.http_ports[1], secured.admin_token
    before = faults(secured)
    cut = json.dumps({"block_to": [2, 3], "block_from": [2, 3], "drop": 1.0}).encode()
    wrong = [{}, {"token": "0" * len(token)}, {"token": token[:-1]}, {"token": token + "x"},
             {"auth": f"Basic {token}"}, {"auth": token}, {"token": ""}]
    for creds in wrong:
        for method, body in (("GET", None), ("POST", cut)):
            code, answer = request(port, method, "/faults", body, **creds)
            assert code == 401, (creds, method, answer)
            assert "admin token" in answer["error"]
    assert faults(secured) == before
    # the right token is all it takes, and the cluster's own helper (torture's) sends it
    plan = secured.faults(1, json.loads(cut))
    assert plan["block_to"] == [2, 3] and plan["drop"] == 1.0
    assert secured.faults(1, {"heal": True}) == before


def test_status_needs_the_token_and_health_and_metrics_do_not(
        secured: LocalProcessCluster) -> None:
    port = secured.http_ports[1]
    for creds in ({}, {"token": "wrong"}):
        code, answer = request(port, "GET", "/status", **creds)
        assert code == 401 and "admin token" in answer["error"]
    code, st = request(port, "GET", "/status", token=secured.admin_token)
    assert code == 200 and st["role"] == "leader"
    code, health = request(port, "GET", "/health")
    assert code == 200 and health["health"] is True
    code, metrics = request(port, "GET", "/metrics")
    assert code == 200 and "shoal_is_leader" in metrics


# ---------------------------------------------------------------------- bad bodies
BAD_BODIES = [  # (body, what the error must mention)
    (b'{"drop": 1.0, "seed": "x"}', "seed"),  # drop is fine: it must not apply alone
    (b'{"block_to": [5], "delay": -1}', "delay"),
    (b"[" * 30_000 + b"]" * 30_000, "deeper"),  # was a 500 (RecursionError)
    (b'{"a": ' * 20 + b"1" + b"}" * 20, "deeper"),
    (b"[1, 2]", "JSON object"),
    (b"5", "JSON object"),
    (b'"drop"', "JSON object"),
    (b"null", "JSON object"),
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "UTF-8"),
    (b'{"drops": 1.0}', "drops"),
    (b'{"drop": true}', "drop"),
    (b'{"drop": "0.5"}', "drop"),
    (b'{"drop": 1.5}', "drop"),
    (b'{"jitter": 61}', "jitter"),
    (b'{"block_to": "12"}', "block_to"),
    (b'{"block_to": 5}', "block_to"),
    (b'{"block_from": [0]}', "block_from"),
    (b'{"block_from": [1.0]}', "block_from"),
    (b'{"block_from": {"1": 1}}', "block_from"),
    (b'{"seed": 1.5}', "seed"),
    (b'{"heal": true, "drop": 1.0}', "heal"),
    (b'{"heal": "yes"}', "heal"),
]


def test_a_bad_body_is_400_names_the_problem_and_changes_nothing(
        secured: LocalProcessCluster) -> None:
    port, token = secured.http_ports[1], secured.admin_token
    # a plan of our own first, so "unchanged" cannot mean "still the default"
    code, plan = request(port, "POST", "/faults", b'{"block_to": [7], "jitter": 0.5, "seed": 3}',
                         token=token)
    assert code == 200, plan
    try:
        for body, named in BAD_BODIES:
            code, answer = request(port, "POST", "/faults", body, token=token)
            assert code == 400, (body[:40], answer)
            assert named in answer["error"], (body[:40], answer)
            assert faults(secured) == plan, body[:40]
    finally:
        request(port, "POST", "/faults", b'{"heal": true}', token=token)


# ---------------------------------------------------------------------- shoal node flags
@pytest.mark.parametrize("flags, message", [
    (["--allow-faults"], "allow_faults needs admin_token_file"),
    (["--admin-token-file", "no-such-file"], "admin_token_file no-such-file does not exist"),
    (["--peer-secret-file", "no-such-file"], "peer_secret_file no-such-file does not exist"),
    (["--quota-backend-bytes", "0"], "quota_backend_bytes must be positive"),
])
def test_node_flags_reach_the_config(tmp_path: Path, flags: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["node", "--id", "1", "--data-dir", str(tmp_path / "d"),
                                      "--members", "1=127.0.0.1:1/127.0.0.1:2", *flags])
    assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_an_empty_admin_token_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "token"
    empty.write_text("  \n")
    peer, client, port = free_ports(3)
    # a process of its own: were the token accepted, the node would serve until the timeout
    done = subprocess.run(
        [sys.executable, "-m", "shoal", "node", "--id", "1", "--data-dir", str(tmp_path / "d"),
         "--http", f"{HOST}:{port}", "--members", f"1={HOST}:{peer}/{HOST}:{client}",
         "--admin-token-file", str(empty)], capture_output=True, text=True, timeout=20)
    assert done.returncode == 2 and f"admin_token_file {empty} is empty" in done.stderr, done.stderr


# ---------------------------------------------------------------------- local clusters
def test_a_local_cluster_has_a_random_id_and_private_secrets_kept_in_its_root(
        secured: LocalProcessCluster, tmp_path: Path) -> None:
    st = secured.status(1)
    assert st is not None and st["cluster_id"] == cluster_number(secured.cluster_id)
    for f in (secured.admin_token_file, secured.peer_secret_file, secured.root / "cluster-id"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert secured.admin_token_file.read_text().strip() == secured.admin_token
    assert secured.peer_secret_file.read_text().strip() != secured.admin_token
    other = LocalProcessCluster(1, tmp_path)
    assert len({secured.cluster_id, other.cluster_id, "shoal", "shoal-local"}) == 4
    assert other.admin_token != secured.admin_token
    again = LocalProcessCluster(1, tmp_path)  # the same root is the same cluster
    assert (again.cluster_id, again.admin_token) == (other.cluster_id, other.admin_token)
