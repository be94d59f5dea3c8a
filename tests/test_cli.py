"""The `shoal` command against real node processes: node configuration errors, the client
commands, and the demo's verdict. `-o` formats: test_cli_output.py; `cluster up` and its
one-node commands: test_cli_local_cluster.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shoal.cli import app
from shoal.local.cluster import LocalProcessCluster, free_ports
from shoal.server.node import cluster_number
from shoal.storage import Storage

runner = CliRunner()


def shoal(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), input=input, env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


# ---------------------------------------------------------------------- shoal node errors
def test_node_rejects_an_unknown_toml_key(tmp_path: Path) -> None:
    toml = tmp_path / "node.toml"
    toml.write_text('id = 1\ndata_dir = "d"\nmembers = "1=127.0.0.1:1/127.0.0.1:2"\nbogus = 3\n')
    code, _, err = shoal("node", "--config", str(toml))
    assert code == 2
    assert err.strip().splitlines() == [err.strip()]  # one line, no traceback
    assert "unknown config keys ['bogus']" in err


@pytest.mark.parametrize("line, message", [
    ('id = "one"', "id must be an integer, not 'one'"),
    ("members = 5", "members must be a string or a list of strings, not 5"),
    ("fsync = 1", "fsync must be true or false, not 1"),
    ("http = 5", "http must be HOST:PORT, not 5"),
    ("allow_faults = true", "allow_faults needs admin_token_file"),
])
def test_node_names_a_toml_value_of_the_wrong_type(tmp_path: Path, line: str, message: str) -> None:
    settings = {"id": "id = 1", "members": 'members = "1=127.0.0.1:1/127.0.0.1:2"'}
    settings[line.split(" ")[0]] = line
    toml = tmp_path / "node.toml"
    toml.write_text('data_dir = "d"\n' + "\n".join(settings.values()) + "\n")
    code, _, err = shoal("node", "--config", str(toml))
    assert code == 2
    assert err.strip().splitlines() == [err.strip()]  # one line, no traceback
    assert message in err


def test_node_rejects_a_bad_member_spec(tmp_path: Path) -> None:
    code, _, err = shoal("node", "--id", "1", "--data-dir", str(tmp_path),
                         "--members", "1=127.0.0.1:7001")
    assert code == 2
    assert "is not ID=HOST:PEER_PORT/HOST:CLIENT_PORT" in err


def test_node_rejects_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        client, http = free_ports(2)
        code, _, err = shoal("node", "--id", "1", "--data-dir", str(tmp_path / "d"),
                             "--members", f"1=127.0.0.1:{port}/127.0.0.1:{client}",
                             "--http", f"127.0.0.1:{http}")
    assert code == 2
    assert f"peer address 127.0.0.1:{port} is not available" in err


def test_node_refuses_a_data_dir_of_another_cluster(tmp_path: Path) -> None:
    storage, _ = Storage.open(tmp_path / "d", cluster_id=cluster_number("other"), node_id=1)
    storage.close()
    peer, client, http = free_ports(3)
    code, _, err = shoal("node", "--id", "1", "--data-dir", str(tmp_path / "d"),
                         "--members", f"1=127.0.0.1:{peer}/127.0.0.1:{client}",
                         "--http", f"127.0.0.1:{http}", "--cluster-id", "mine")
    assert code == 2
    assert "error: data dir:" in err and "belongs to cluster" in err
    assert "start it with the --cluster-id and --id it was created with" in err


def test_a_cluster_up_node_restarted_by_hand_is_told_its_cluster_id(tmp_path: Path) -> None:
    (tmp_path / "cluster-id").write_text("7796abc\n")  # as `shoal cluster up` leaves it
    storage, _ = Storage.open(tmp_path / "n1", cluster_id=cluster_number("7796abc"), node_id=1)
    storage.close()
    peer, client, http = free_ports(3)
    code, _, err = shoal("node", "--id", "1", "--data-dir", str(tmp_path / "n1"),
                         "--members", f"1=127.0.0.1:{peer}/127.0.0.1:{client}",
                         "--http", f"127.0.0.1:{http}")  # no --cluster-id: the default's
    assert code == 2 and err.count("\n") == 1
    assert f"start it with --cluster-id 7796abc (the name in {tmp_path / 'cluster-id'})" in err


# ---------------------------------------------------------------------- client commands
@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> str:
    with LocalProcessCluster(3, tmp_path_factory.mktemp("cluster")) as cluster:
        cluster.start()
        yield ",".join(cluster.endpoints)
        assert all(code == 0 for code in cluster.stop().values())


def test_put_get_delete(endpoints: str) -> None:
    ep = ("--endpoints", endpoints)
    assert shoal("put", "fruit/a", "apple", *ep)[:2] == (0, "OK\n")
    assert shoal("put", "fruit/b", "banana", *ep)[0] == 0
    assert shoal("get", "fruit/a", *ep)[1] == "fruit/a\napple\n"
    assert shoal("get", "fruit/", "--prefix", "--keys-only", *ep)[1] == "fruit/a\nfruit/b\n"
    assert shoal("get", "fruit/", "--prefix", "--count-only", *ep)[1] == "2\n"
    assert shoal("get", "fruit/", "--prefix", "--limit", "1", "--serializable", *ep)[1] \
        == "fruit/a\napple\n"
    assert shoal("del", "fruit/", "--prefix", *ep)[1] == "2\n"
    assert shoal("get", "fruit/a", *ep)[:2] == (0, "")


def test_groups_are_created_listed_shown_and_removed(endpoints: str) -> None:
    ep = ("--endpoints", endpoints)
    code, out, _ = shoal("group", "create", "42", *ep)
    assert code == 0 and out == "group 42 on nodes 1, 2, 3\n"
    assert shoal("group", "create", "42", *ep)[0] != 0  # an id is created once
    assert json.loads(shoal("group", "list", "-o", "json", *ep)[1]) \
        == {"groups": [{"group": 42, "members": [1, 2, 3]}]}
    assert shoal("group", "list", *ep)[1] == "42\t1,2,3\n"
    end = time.monotonic() + 20
    while True:  # the table shows the group once every replica has opened it and elected
        code, out, _ = shoal("status", *ep)
        row = next((line for line in out.splitlines() if line.strip("│ ").startswith("42")), "")
        if "none" not in row and row.count(":") == 3:
            break
        assert time.monotonic() < end, out
        time.sleep(0.2)
    assert code == 0 and "groups" in out
    assert shoal("group", "remove", "42", *ep)[:2] == (0, "group 42 removed\n")
    assert shoal("group", "list", *ep)[1] == ""


def test_get_at_a_past_revision(endpoints: str) -> None:
    ep = ("--endpoints", endpoints)
    shoal("put", "rev", "one", *ep)
    first = _revision(endpoints)
    shoal("put", "rev", "two", *ep)
    assert shoal("get", "rev", "--rev", str(first), *ep)[1] == "rev\none\n"
    assert shoal("get", "rev", *ep)[1] == "rev\ntwo\n"


def _revision(endpoints: str) -> int:
    from shoal.client import SyncClient

    with SyncClient(endpoints.split(",")) as c:
        return int(c.get(b"rev").header.revision)


def test_txn_compare_and_swap(endpoints: str) -> None:
    ep = ("--endpoints", endpoints)
    shoal("put", "cas", "v1", *ep)
    script = 'value("cas") = "v1"\n\nput cas v2\n\nget cas\n'
    assert shoal("txn", *ep, input=script)[:2] == (0, "SUCCESS\nOK\n")
    assert shoal("txn", *ep, input=script)[:2] == (0, "FAILURE\ncas\nv2\n")
    assert shoal("txn", *ep, input='version("cas") > 1\n\ndel cas\n\n')[1] == "SUCCESS\n1\n"


def test_txn_reports_a_bad_line(endpoints: str) -> None:
    code, _, err = shoal("txn", "--endpoints", endpoints, input='value(cas) == 1\n\n\n')
    assert code == 1
    assert err.startswith("error: txn: bad compare") and err.count("\n") == 1


def test_leases(endpoints: str) -> None:
    ep = ("--endpoints", endpoints)
    code, out, _ = shoal("lease", "grant", "30", *ep)
    assert code == 0 and out.startswith("lease ") and "granted with TTL(30s)" in out
    lease = out.split()[1]
    assert shoal("put", "leased", "x", "--lease", lease, *ep)[0] == 0
    ttl = shoal("lease", "ttl", lease, "--keys", *ep)[1]
    assert "granted with TTL(30s)" in ttl and "leased" in ttl
    assert shoal("lease", "revoke", lease, *ep)[:2] == (0, f"lease {lease} revoked\n")
    assert shoal("get", "leased", *ep)[1] == ""  # went with its lease
    code, _, err = shoal("lease", "revoke", lease, *ep)
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1


def test_lease_list(endpoints: str) -> None:
    ep = ("--endpoints", endpoints)
    lease = shoal("lease", "grant", "30", *ep)[1].split()[1]
    code, out, _ = shoal("lease", "list", *ep)
    assert code == 0 and lease in out.split()


def test_lock_runs_a_command_with_the_fencing_token(endpoints: str, tmp_path: Path) -> None:
    out_file = tmp_path / "token"
    code, out, err = shoal("lock", "--endpoints", endpoints, "job", "--",
                           "sh", "-c", f'echo "$SHOAL_LOCK_TOKEN" > {out_file}')
    assert code == 0 and out == ""  # progress is on stderr
    token = err.split("fencing token ")[1].split()[0]
    assert out_file.read_text().strip() == token


def test_member_list_and_status(endpoints: str) -> None:
    code, out, _ = shoal("member", "list", "--endpoints", endpoints)
    assert code == 0
    for ep in endpoints.split(","):
        assert ep in out
    assert out.count("voter") == 3 and "yes" in out
    code, out, _ = shoal("status", "--endpoints", endpoints)
    assert code == 0
    assert out.count("leader") >= 1 and out.count("follower") == 2
    for col in ("term", "commit", "applied", "revision", "db size"):
        assert col in out
    assert out.count("healthy") == 3 and "unhealthy" not in out and "unreachable" not in out


def test_status_names_unhealthy_and_unreachable_members_and_fails(tmp_path: Path) -> None:
    with LocalProcessCluster(3, tmp_path) as cluster:
        cluster.start_node(1)  # alone: one of three never elects a leader
        deadline = time.monotonic() + 20
        while cluster.status(1) is None:  # poll until it serves
            assert time.monotonic() < deadline, "node 1 did not come up"
            time.sleep(0.05)
        code, out, _ = shoal("status", "--endpoints", cluster.endpoints[0])
    assert code == 1
    lines = out.splitlines()
    one, two, three = cluster.endpoints
    assert any(line.startswith(f"member 1 ({one}) is unhealthy: no leader") for line in lines), out
    assert f"member 2 ({two}) is unreachable" in lines and f"member 3 ({three}) is unreachable" in lines


def test_snapshot_save(endpoints: str, tmp_path: Path) -> None:
    file = tmp_path / "snap.bin"
    code, out, err = shoal("snapshot", "save", str(file), "--endpoints", endpoints)
    assert code == 0 and out == "" and "saved to" in err and file.stat().st_size > 0


# ---------------------------------------------------------------------- demo
def test_demo_loses_no_acknowledged_write(tmp_path: Path) -> None:
    history = tmp_path / "history.jsonl"
    done = subprocess.run([sys.executable, "-m", "shoal", "demo", "--history", str(history)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no acknowledged write lost" in done.stdout
    assert "LINEARIZABLE" in done.stdout and "failover took" in done.stdout
    assert history.stat().st_size > 0
