"""`shoal cap --time 6s`: the same partition (one node of 3 cut off, clients on both sides)
against Shoal's store and the CRDT store, through the CLI. CP: the minority side acknowledges
no write while cut off, the majority goes on, and every phase's history is linearizable. AP:
both sides acknowledge every write, the replicas converge after the heal with no increment
lost, and the checker finds a linearizability violation during the partition."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from shoal.cli import app


def test_cap_shows_cp_refusing_and_ap_diverging(tmp_path: Path) -> None:
    png = tmp_path / "cap.png"
    result = CliRunner().invoke(app, ["cap", "--time", "6s", "--json", "--out", str(png)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["as_predicted"], report["unexpected"]
    cp, ap = report["systems"]["cp"], report["systems"]["ap"]

    minority, majority = cp["sides"]["minority"]["partition"], cp["sides"]["majority"]["partition"]
    assert minority["refused"] > 0 and minority["acknowledged"] == 0, cp["sides"]
    assert majority["acknowledged"] > 0, cp["sides"]
    assert cp["linearizable"] is True, cp["checker"]["explanation"]
    assert all(p["linearizable"] for p in cp["phases"].values())
    assert cp["converged"]

    for side in ("minority", "majority"):
        counts = ap["sides"][side]["partition"]
        assert counts["acknowledged"] == counts["attempted"] > 0, (side, counts)
    assert ap["converged"] and ap["converge_seconds"] < 5.0, ap["converge_seconds"]
    during = ap["phases"]["partition"]
    assert during["linearizable"] is False
    assert during["window"] and "no linearization allows it" in during["explanation"]
    assert ap["linearizable"] is False
    counter = ap["counter"]
    assert set(counter["final"].values()) == {counter["acknowledged"]}, counter  # none lost

    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
