"""A gateway's figures for the dashboard, from what its admin port already serves: GET /metrics
(Prometheus text: responses by status, the latency histogram, retries, ejections) and
GET /backends (the routing state: each backend's health, ejection, breaker, in-flight count,
and the picker in use).

Counters only grow, so the figures over an interval come from two scrapes: requests per
second, the share of 5xx responses, and the 99th percentile latency as the upper bound of the
histogram bucket that holds it (what a histogram can tell; `≤ 25 ms`). Pure but for the
parsing of text: no I/O here; shoal.web.aggregator fetches."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def scrape(text: str) -> dict[str, Any]:
    """The counters the dashboard uses, from one /metrics answer."""
    out: dict[str, Any] = {"responses": {}, "buckets": [], "retries": 0.0, "ejections": 0.0}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "shoal_gateway_responses_total":
                out["responses"][s.labels["status"]] = s.value
            elif s.name == "shoal_gateway_request_seconds_bucket":
                out["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name in ("shoal_gateway_retries_total", "shoal_gateway_ejections_total"):
                out[s.name[len("shoal_gateway_"):-len("_total")]] = s.value
    out["buckets"].sort()
    return out


def figures(prev: dict[str, Any], cur: dict[str, Any], dt: float) -> dict[str, Any]:
    """Requests per second, error rate (5xx share) and p99 (ms, a bucket's bound: None when no
    request came) between two scrapes `dt` seconds apart."""
    assert dt > 0, "two scrapes at the same instant"
    sent = {k: v - prev["responses"].get(k, 0.0) for k, v in cur["responses"].items()}
    total = sum(sent.values())
    errors = sum(v for k, v in sent.items() if k.startswith("5"))
    return {"rps": round(total / dt, 1), "error_rate": round(errors / total, 4) if total else 0.0,
            "p99_ms": p99_ms(prev["buckets"], cur["buckets"]),
            "retries_per_s": round((cur["retries"] - prev["retries"]) / dt, 1),
            "ejections": cur["ejections"]}


def p99_ms(prev: list[tuple[float, float]], cur: list[tuple[float, float]]) -> float | str | None:
    """The 99th percentile between two scrapes of a cumulative histogram's (bound, count)
    buckets, as the bound in ms of the bucket that holds it: None when nothing was counted,
    "inf" past the last bound."""
    before = dict(prev)
    deltas = [(le, n - before.get(le, 0.0)) for le, n in cur]  # cumulative
    count = deltas[-1][1] if deltas else 0.0
    if count <= 0:
        return None
    p99 = next(le for le, n in deltas if n >= 0.99 * count)
    return p99 * 1000 if p99 != float("inf") else "inf"
