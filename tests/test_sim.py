"""The simulator itself: determinism, the CI campaign, and proof that it has teeth."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from shoal.cli import app
from shoal.sim import SimConfig, World
from shoal.sim.bugs import PLANTED, REPLICA_TEETH
from shoal.sim.campaign import run_seed


def first_violation(cfg: SimConfig, seeds: range) -> tuple[int, str] | None:
    for seed in seeds:
        res = run_seed(seed, cfg)
        if not res.ok:
            return seed, res.violation or ""
    return None


def test_same_seed_same_trace_byte_for_byte(tmp_path):
    runner = CliRunner()
    a, b = tmp_path / "a.trace", tmp_path / "b.trace"
    for out in (a, b):
        result = runner.invoke(app, ["sim", "--nodes", "5", "--steps", "3000", "--seed", "7",
                                     "--trace", str(out)])
        assert result.exit_code == 0, result.output
    assert a.read_bytes() == b.read_bytes()
    assert a.read_text().count("\n") > 1000  # the trace really holds the run
    other = World(8, SimConfig(steps=3000, full_trace=True))
    other.run()
    assert other.trace_text() + "\n" != a.read_text()  # and a different seed differs


# The CI campaign of the whole replica (300 seeds, every fault, churn, leases) is in
# tests/test_replica.py.


# Every planted engine bug is caught within its bound by its own profile (shoal.sim.bugs; the
# replica's bugs are held to theirs in tests/test_replica.py).
@pytest.mark.parametrize("bug", [b for b in PLANTED.values() if b.profile is not REPLICA_TEETH],
                         ids=lambda b: b.name)
def test_broken_core_is_caught(bug):
    found = first_violation(bug.config(), range(bug.seeds))
    assert found is not None, f"{bug.name} went unnoticed for {bug.seeds} seeds"


@pytest.mark.parametrize("chunk", range(2))
def test_ci_campaign_paxos_no_violation(chunk):
    """The same world, invariants and checker, driving Multi-Paxos instead of Raft."""
    cfg = SimConfig(nodes=5, steps=3000, engine="paxos")
    bad = [r for s in range(chunk * 50, chunk * 50 + 50) if not (r := run_seed(s, cfg)).ok]
    assert not bad, f"seed {bad[0].seed}: {bad[0].violation}\nreplay: {cfg.replay_command(bad[0].seed)}"


def test_sim_bug_demonstrates_the_bug_and_names_the_known_ones():
    result = CliRunner().invoke(app, ["sim", "--bug", "forget-vote", "--workers", "1"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "violated safety" in result.output and "one vote per term" in result.output
    assert "->" in result.output  # the readable trace of the last events
    replay = next(line for line in result.output.splitlines() if line.startswith("replay: "))
    again = CliRunner().invoke(app, replay.removeprefix("replay: shoal ").split())
    assert again.exit_code == 1 and "one vote per term" in again.output
    unknown = CliRunner().invoke(app, ["sim", "--bug", "forget-everything"])
    assert unknown.exit_code == 2
    assert unknown.output.strip().count("\n") == 0 and "forget-vote" in unknown.output
