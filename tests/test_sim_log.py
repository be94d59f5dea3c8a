"""The event log in the simulator: one partition's replicas under faults, idempotent producers
retrying batches, consumers fetching; and proof that the checks have teeth."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from shoal.cli import app
from shoal.sim import SimConfig
from shoal.sim.campaign import run_seed
from shoal.sim.log_bugs import LOG_PLANTED, LOG_PROFILE

# What the log workload checks (sim/log_workload.py), by the names its violations carry.
LOG_INVARIANTS = ("acknowledged records are kept", "acknowledged offsets", "exactly once",
                  "idempotence", "committed records never change", "fetched records are kept",
                  "dense offsets", "producer order", "no invented records")


def test_clean_campaign_keeps_every_acknowledged_record_once():
    cfg = SimConfig(**LOG_PROFILE)
    results = [run_seed(s, cfg) for s in range(6)]
    bad = [r for r in results if not r.ok]
    assert not bad, f"seed {bad[0].seed}: {bad[0].violation}\nreplay: {cfg.replay_command(bad[0].seed)}"
    total = {k: sum(r.stats[k] for r in results) for k in results[0].stats}
    # The run really produced through faults: batches acknowledged, retried, fetched; nodes
    # crashed and came back from snapshots.
    assert total["batches_acked"] > 500 and total["retries"] > 50, total
    assert total["records_fetched"] > 300 and total["crashes"] > 5, total
    assert total["snapshots"] > 20, total


@pytest.mark.parametrize("bug", LOG_PLANTED.values(), ids=lambda b: b.name)
def test_planted_log_bug_is_caught_within_its_bound(bug):
    cfg = bug.config()
    found = next((r for s in range(bug.seeds) if not (r := run_seed(s, cfg)).ok), None)
    assert found is not None, f"{bug.name} went unnoticed for {bug.seeds} seeds"
    assert found.violation and found.violation.startswith(LOG_INVARIANTS), found.violation
    # and the same seed without the bug is clean: the checks caught the bug, nothing else
    clean = run_seed(found.seed, SimConfig(**LOG_PROFILE))
    assert clean.ok, clean.violation


def test_ack_before_quorum_loses_acknowledged_records():
    """The planted bug's typical evidence: acknowledged records absent from the healed log."""
    cfg = LOG_PLANTED["ack-before-quorum"].config()
    violations = [run_seed(s, cfg).violation or "" for s in range(10)]
    assert any(v.startswith("acknowledged records are kept") for v in violations), violations


def test_cli_demonstrates_a_log_bug_and_replays_it():
    result = CliRunner().invoke(app, ["sim", "--bug", "ack-before-quorum", "--workers", "1"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "violated safety" in result.output
    replay = next(line for line in result.output.splitlines() if line.startswith("replay: "))
    assert "--workload log" in replay
    again = CliRunner().invoke(app, replay.removeprefix("replay: shoal ").split())
    assert again.exit_code == 1, again.output
    ok = CliRunner().invoke(app, ["sim", "--workload", "log", "--seeds", "2", "--workers", "1"])
    assert ok.exit_code == 0 and "every acknowledged record kept once" in ok.output, ok.output
    wrong = CliRunner().invoke(app, ["sim", "--workload", "register", "--bug", "lose-idempotence"])
    assert wrong.exit_code == 2 and "--workload log" in wrong.output
