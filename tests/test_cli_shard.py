"""`shoal shard list|split|resume|autosplit` and the key commands over shards, through the real
`shoal` command against real nodes: a split moves keys, put/get/del find them by the shard map,
and `shoal txn` commits across shards atomically."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from shoal.cli import app
from shoal.local.cluster import LocalProcessCluster

runner = CliRunner()


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with LocalProcessCluster(3, tmp_path_factory.mktemp("cluster")) as cluster:
        cluster.start()
        yield ",".join(cluster.endpoints)


def shoal(endpoints: str, *args: str, input: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "--endpoints", endpoints], input=input)
    return result.exit_code, result.stdout, result.stderr


def test_split_then_keys_and_txns_follow_the_map(endpoints: str) -> None:
    for key in ("apple", "kiwi", "mango", "zucchini"):
        assert shoal(endpoints, "put", key, key.upper())[0] == 0
    code, out, err = shoal(endpoints, "shard", "split", "m")
    assert code == 0, err
    assert "group 1" in out and "version 1" in out
    code, out, _ = shoal(endpoints, "shard", "list", "-o", "json", "--interval", "0")
    shards = json.loads(out)["shards"]
    assert [(s["start"], s["end"], s["group"]) for s in shards] == [("", "m", 0), ("m", "", 1)]
    assert all(s["leader"] for s in shards)
    assert shoal(endpoints, "get", "zucchini")[1].split() == ["zucchini", "ZUCCHINI"]
    code, out, _ = shoal(endpoints, "get", "", "--prefix", "--keys-only")
    assert out.split() == ["apple", "kiwi", "mango", "zucchini"]  # across both shards, in order
    # One txn over both shards: the compare holds, both writes land.
    code, out, err = shoal(endpoints, "txn", input='value("apple") = "APPLE"\n\nput apple A2\n'
                                                   'put zucchini Z2\nget mango\n\nget apple\n')
    assert code == 0, err
    assert out.split() == ["SUCCESS", "OK", "OK", "mango", "MANGO"]
    assert shoal(endpoints, "get", "zucchini")[1].split() == ["zucchini", "Z2"]
    code, out, _ = shoal(endpoints, "txn", input='value("apple") = "nope"\n\nput zucchini Z3\n\n'
                                                 'get zucchini\n')
    assert out.split() == ["FAILURE", "zucchini", "Z2"]
    assert shoal(endpoints, "del", "zucchini")[1].strip() == "1"
    code, _, err = shoal(endpoints, "shard", "split", "m")
    assert code == 1 and "already" in err
    code, out, _ = shoal(endpoints, "shard", "resume")
    assert code == 0 and "2 shards" in out


def test_autosplit_splits_a_shard_past_its_size(endpoints: str) -> None:
    for i in range(20):
        assert shoal(endpoints, "put", f"user/{i:02d}", "x" * 200)[0] == 0
    code, out, err = shoal(endpoints, "shard", "autosplit", "--max-bytes", "4000", "--once",
                           "--interval", "0.1")
    assert code == 0, err
    assert "split group" in out
    code, out, _ = shoal(endpoints, "shard", "list", "-o", "json", "--interval", "0")
    assert len(json.loads(out)["shards"]) >= 3
    code, out, _ = shoal(endpoints, "get", "user/", "--prefix", "--count-only")
    assert out.strip() == "20"  # nothing lost or doubled by the split
