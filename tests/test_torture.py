"""The short real-process fault run: SIGKILL, SIGSTOP, link cuts and a replaced disk on a
3-node cluster while clients record a history, which must be linearizable."""

from __future__ import annotations

from shoal.check import load_history
from shoal.torture.run import torture


def test_short_torture_run_is_linearizable(tmp_path):
    history = tmp_path / "history.jsonl"
    r = torture(nodes=3, seconds=20, seed=7, root=tmp_path / "cluster", history=history)
    story = f"faults: {r.faults}; operations: {r.counts}"
    assert r.verdict.ok is True, r.verdict.explanation + "\n" + story
    assert r.converged, "nodes did not converge on the same state after healing; " + story
    assert r.counts["ok"] > 100, story  # the cluster really served traffic through the faults
    assert any(f.startswith("kill -9") for f in r.faults), story
    assert any("replace the disk" in f for f in r.faults), story
    assert len(load_history(history)) >= r.counts["ok"]  # the checked history was written out


def test_short_bank_torture_balances(tmp_path):
    """Transfers across three shards under kills, pauses and cuts: every audit sees the total,
    every acknowledged transfer is applied once, no aborted one is."""
    from shoal.torture.run import torture_bank

    result, faults = torture_bank(nodes=3, seconds=12, seed=3, root=tmp_path / "bank")
    story = f"faults: {faults}; counts: {result.counts}"
    assert result.ok, "; ".join(result.problems) + "\n" + story
    assert result.counts["committed"] > 10 and result.audits > 0, story
    assert any(f.startswith(("kill -9", "pause", "cut")) for f in faults), story


def test_short_log_torture_keeps_every_acknowledged_record_once(tmp_path):
    """Kafka's own producer (idempotent, acks=all) and a consumer group through SIGKILL,
    SIGSTOP and link cuts: every acknowledged record read back once, in order, at its offset;
    the group committed everything and its offsets never went back."""
    from shoal.torture.log import torture_log

    r = torture_log(nodes=3, seconds=8, seed=1, producers=2, consumers=2, partitions=3,
                    root=tmp_path / "log")
    story = f"faults: {r.faults}; counts: {r.counts}"
    assert r.ok, "; ".join(r.problems) + "\n" + story
    assert r.counts["acked"] > 500 and r.counts["consumed"] >= r.counts["acked"], story
    assert all(p["committed"] == p["records"] for p in r.partitions), r.partitions
    assert any(f.startswith(("kill -9", "pause", "cut")) for f in r.faults), story


def test_log_check_catches_lost_duplicated_and_misordered_records():
    """The torture log check itself, on a made-up history: each broken promise is named."""
    from shoal.torture.log import LogWorkload

    w = LogWorkload(["127.0.0.1:1"], 1, 1, 1, 0)
    s = w.seen
    s.sent |= {b"p0:0", b"p0:1", b"p0:2", b"p0:3"}
    s.acked |= {b"p0:0": (0, 0), b"p0:1": (0, 1), b"p0:3": (0, 3)}
    s.ack_order[("p0", 0)] += [0, 1, 3]
    s.consumed |= {(0, 0): b"p0:0", (0, 1): b"p0:1"}
    s.committed[0] = 3
    s.readings[0] += [1, 3, 2]
    log = {0: [(0, b"p0:0"), (1, b"p0:2"), (2, b"p0:2"), (4, b"p9:9")]}
    text = "\n".join(w.check(log))
    assert "b'p0:2' is in the log twice" in text and "never acknowledged" in text  # a retry again
    assert "b'p0:3' was acknowledged at partition 0 offset 3" in text  # an acknowledged loss
    assert "offsets are not dense" in text and "which no producer sent" in text
    assert "comes after p0's record 2" in text  # p0:2 then p0:2 again: out of order
    assert "consumed as b'p0:1'; the log holds b'p0:2'" in text
    assert "never consumed" in text  # offset 2 is below the committed 3, never consumed
    assert "moved back from 3 to 2" in text
    assert not LogWorkload(["127.0.0.1:1"], 1, 1, 1, 0).check({0: []})  # nothing: no problem
