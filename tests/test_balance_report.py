"""`shoal lb-report` on a small workload: it runs, prints its tables and writes a chart."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from shoal.balance import PICKERS
from shoal.balance.report import run_report
from shoal.balance.simulate import Cluster, simulate


def test_report_prints_tables_and_writes_png(tmp_path: Path) -> None:
    out = tmp_path / "lb.png"
    text = io.StringIO()
    report = run_report(out=out, keys=5000, requests=3000, picks=200,
                        console=Console(file=text, width=140))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = text.getvalue()
    assert all(name in printed for name in PICKERS)
    assert "p99 ms" in printed
    assert report.rows["ip-hash"].moved_remove > 0.8  # mod-N hashing reshuffles
    assert report.rows["rendezvous"].moved_remove < 0.15
    assert report.rows["round-robin"].balance[10] == 1.0
    assert set(report.sim) == {"random", "round-robin", "least-connections", "least-request",
                               "peak-ewma", "shortest-response"}


def test_simulation_is_deterministic_and_latency_aware_pickers_shun_the_slow_backend() -> None:
    cluster = Cluster(requests=4000)
    first = simulate("peak-ewma", cluster)
    assert first == simulate("peak-ewma", cluster)
    assert first.slow_share < simulate("random", cluster).slow_share / 2
