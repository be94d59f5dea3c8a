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
