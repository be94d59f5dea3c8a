"""`--repair` is safe: a node whose WAL was cut knows it may have lost what it acknowledged,
votes for no one until its leader has brought it back, and is brought back (finding 7 of
issue 10). The core's side is in test_raft_core.py; here are the storage and real processes."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from shoal.client.sync import SyncClient
from shoal.consensus.messages import Entry, HardState, Ready
from shoal.local.cluster import LocalProcessCluster
from shoal.storage import Storage
from shoal.storage.errors import CorruptWAL
from shoal.storage.wal import HEADER, scan


def flip_mid_record(dir: Path) -> None:
    """Damage a record in the middle of the largest WAL segment: a flipped payload byte with
    good records after it is damage (refused without --repair), never a torn tail."""
    seg = max(dir.glob("*.wal"), key=lambda p: p.stat().st_size)
    data = bytearray(seg.read_bytes())
    records = scan(bytes(data)).records
    assert len(records) > 10, f"{seg} holds only {len(records)} records"
    data[records[len(records) // 2].offset + HEADER.size + 1] ^= 0x40
    seg.write_bytes(bytes(data))


def test_repair_marks_the_hard_state_recovering_with_a_new_epoch_durably(tmp_path: Path) -> None:
    s, _ = Storage.open(tmp_path, cluster_id=1, node_id=1)
    for i in range(1, 61, 3):
        s.save(Ready(entries=[Entry(1, i + k, data=b"x" * 20) for k in range(3)],
                     hard_state=HardState(1, 1, i), must_sync=True))
    s.close()
    flip_mid_record(tmp_path)
    with pytest.raises(CorruptWAL):
        Storage.open(tmp_path)
    s, d = Storage.open(tmp_path, repair=True)
    s.close()
    assert s.dropped and 0 < len(d.entries) < 60
    assert (d.hard_state.epoch, d.hard_state.recovering) == (1, True)
    s, again = Storage.open(tmp_path)  # a crash now, and a start without --repair
    assert again.hard_state == d.hard_state and s.dropped == []
    s.save(Ready(entries=[Entry(1, len(d.entries) + k + 1, data=b"y" * 20) for k in range(20)],
                 must_sync=True))
    s.close()
    flip_mid_record(tmp_path)
    s, d = Storage.open(tmp_path, repair=True)  # a second repair is a second loss
    s.close()
    assert (d.hard_state.epoch, d.hard_state.recovering) == (2, True)


def health(c: LocalProcessCluster, i: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{c.http_ports[i]}/health", timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_for(what: str, pred: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def start_repaired(c: LocalProcessCluster, i: int) -> None:
    plain = c.node_args
    c.node_args = [*plain, "--repair"]
    try:
        c.start_node(i)
    finally:
        c.node_args = plain


def test_a_follower_repaired_mid_wal_votes_for_no_one_and_is_caught_up(tmp_path: Path) -> None:
    with LocalProcessCluster(3, tmp_path, node_args=["--tick-ms", "20"]) as c:
        lead = c.start()
        f, g = (i for i in c.ids if i != lead)
        with SyncClient(c.endpoints, timeout=20) as cl:
            for k in range(80):
                cl.put(b"k%03d" % k, b"a%d" % k)

            def caught_up(node: int) -> dict[str, Any] | None:
                st, top = c.status(node), c.status(c.leader() or 0)
                ok = st and top and not st["recovering"] and st["applied"] == top["applied"]
                return st if ok else None

            wait_for(f"node {f} to apply everything", lambda: caught_up(f))
            c.stop_node(f)
            flip_mid_record(c.data_dir(f))
            # Finding 7: repaired while the leader that recorded its old match stays up.
            start_repaired(c, f)
            for k in range(80, 120):
                cl.put(b"k%03d" % k, b"b%d" % k)
            st = wait_for(f"repaired node {f} to catch up", lambda: caught_up(f))
            assert st["leader"] == lead and health(c, f)[0] == 200

            # Again, now with the leader gone: the one node that could elect node g is f.
            c.stop_node(f)
            flip_mid_record(c.data_dir(f))
            c.kill(lead)
            start_repaired(c, f)
            wait_for(f"node {f} to answer", lambda: c.status(f))
            code, body = health(c, f)
            assert code == 503 and any("recovering" in r for r in body["reasons"]), body
            seen: set[str] = set()
            end = time.monotonic() + 3  # 7 to 15 election timeouts of 200-400 ms
            while time.monotonic() < end:
                sf, sg = c.status(f), c.status(g)
                assert sf is not None and sf["recovering"] and sf["leader"] == 0, sf
                assert sg is not None and sg["leader"] == 0, f"node {g} was elected: {sg}"
                seen.add(sg["role"])
                time.sleep(0.05)
            assert "pre-candidate" in seen, f"node {g} never campaigned: {seen}"

            c.start_node(lead)
            for k in range(120, 130):
                cl.put(b"k%03d" % k, b"c%d" % k)
            st = wait_for(f"node {f} to catch up again", lambda: caught_up(f))
            assert health(c, f)[0] == 200
        with SyncClient([f"127.0.0.1:{c.member(f).client[1]}"], timeout=10) as through_f:
            got = through_f.get(b"k", prefix=True)  # linearizable: ReadIndex through node f
            assert len(got.kvs) == 130 and got.kvs[-1].value == b"c129"
            assert got.header.revision == c.status(f)["revision"]
