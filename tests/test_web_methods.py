"""shoal.web.methods: per-method figures from two scrapes of each instance's /metrics."""

from __future__ import annotations

from shoal.app.observe import LATENCY_BUCKETS_S, Observer
from shoal.web import methods


def _calls(o: Observer, ok: int, failed: int) -> None:
    for _ in range(ok):
        with o.server_call("Orders", "checkout", {}):
            pass
    for _ in range(failed):
        try:
            with o.server_call("Orders", "checkout", {}):
                raise ValueError("out of stock")
        except ValueError:
            pass


def test_figures_sum_instances_and_spread_them() -> None:
    a, b = Observer("a", exporter="none"), Observer("b", exporter="none")
    _calls(a, 5, 0)
    before = {"a": methods.scrape(a.metrics_text().decode())[0],
              "b": methods.scrape(b.metrics_text().decode())[0]}
    _calls(a, 30, 0)  # since the last scrape: 30 at a, 8 ok and 2 failed at b
    _calls(b, 8, 2)
    after = {"a": methods.scrape(a.metrics_text().decode())[0],
             "b": methods.scrape(b.metrics_text().decode())[0]}
    [row] = methods.figures({i: (before[i], after[i], 2.0) for i in ("a", "b")})
    assert (row["component"], row["method"]) == ("Orders", "checkout")
    assert row["rps"] == 20.0 and row["per_instance"] == {"a": 15.0, "b": 5.0}
    assert row["error_rate"] == 0.05  # 2 of the 40 calls in the interval
    assert row["p99_ms"] in {b * 1000 for b in LATENCY_BUCKETS_S} | {"inf"}  # a bucket's bound


def test_no_calls_in_the_interval_has_no_p99() -> None:
    o = Observer("a", exporter="none")
    _calls(o, 3, 0)
    same = methods.scrape(o.metrics_text().decode())[0]
    [row] = methods.figures({"a": (same, same, 1.0)})
    assert row["rps"] == 0.0 and row["error_rate"] == 0.0 and row["p99_ms"] is None
