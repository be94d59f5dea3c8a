"""The services panel's per-method figures: what each component's process already serves on
GET /metrics (shoal.app.observe: server-side calls, errors and a latency histogram per
component and method). The aggregator finds the processes through the registry (an
instance's `http=host:port` tag), scrapes each, and sums two scrapes' differences over a
component's instances: requests per second, error rate and p99 per method, and how the
requests spread over the instances (where the callers' pickers sent them). A process that
calls other components also says what its callers see of them (shoal.app.deployed): the
picker and strategy, and the replicas with an open breaker or ejected.

Pure but for the parsing of text, like shoal.web.gateways."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from .gateways import p99_ms

Counters = dict[tuple[str, str], dict[str, Any]]  # (component, method) -> counters


def scrape(text: str) -> tuple[Counters, list[dict[str, Any]]]:
    """From one answer: per (component, method) the requests, errors and latency buckets it
    served, and what its callers of other components see (per callee: the picker, the
    strategy, and the replicas whose breaker is open or that are ejected)."""
    out: Counters = {}
    seen: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("shoal_rpc_caller_"):
                c = seen.setdefault(s.labels.get("component", "?"), {
                    "callee": s.labels.get("component", "?"), "picker": None,
                    "strategy": None, "open_breakers": [], "ejected": []})
                if s.name == "shoal_rpc_caller_info":
                    c["picker"], c["strategy"] = s.labels["picker"], s.labels["strategy"]
                elif s.value and s.name == "shoal_rpc_caller_breaker_open":
                    c["open_breakers"].append(s.labels["replica"])
                elif s.value and s.name == "shoal_rpc_caller_ejected":
                    c["ejected"].append(s.labels["replica"])
                continue
            if not s.name.startswith("shoal_rpc_server_"):
                continue
            key = (s.labels.get("component", "?"), s.labels.get("method", "?"))
            entry = out.setdefault(key, {"requests": 0.0, "errors": 0.0, "buckets": []})
            if s.name == "shoal_rpc_server_requests_total":
                entry["requests"] = s.value
            elif s.name == "shoal_rpc_server_errors_total":
                entry["errors"] = s.value
            elif s.name == "shoal_rpc_server_latency_seconds_bucket":
                entry["buckets"].append((float(s.labels["le"]), s.value))
    for entry in out.values():
        entry["buckets"].sort()
    return out, [seen[k] for k in sorted(seen)]


def figures(scrapes: dict[str, tuple[Counters, Counters, float]]) -> list[dict[str, Any]]:
    """Rows of per-method figures from each instance's (previous, current, seconds between)
    scrapes: requests/s, error rate and p99 over all instances, and requests/s per instance."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for instance, (prev, cur, dt) in sorted(scrapes.items()):
        assert dt > 0, "two scrapes at the same instant"
        for key, now in cur.items():
            was = prev.get(key, {"requests": 0.0, "errors": 0.0, "buckets": []})
            row = rows.setdefault(key, {"component": key[0], "method": key[1], "requests": 0.0,
                                        "errors": 0.0, "prev": {}, "cur": {}, "per_instance": {}})
            sent = now["requests"] - was["requests"]
            row["requests"] += sent
            row["errors"] += now["errors"] - was["errors"]
            row["per_instance"][instance] = round(sent / dt, 1)
            for le, n in was["buckets"]:  # summed over instances: the buckets are shared
                row["prev"][le] = row["prev"].get(le, 0.0) + n
            for le, n in now["buckets"]:
                row["cur"][le] = row["cur"].get(le, 0.0) + n
    dts = [dt for _, _, dt in scrapes.values()]
    span = sum(dts) / len(dts) if dts else 1.0
    out = []
    for key in sorted(rows):
        r = rows[key]
        out.append({"component": r["component"], "method": r["method"],
                    "rps": round(r["requests"] / span, 1),
                    "error_rate": round(r["errors"] / r["requests"], 4) if r["requests"] else 0.0,
                    "p99_ms": p99_ms(sorted(r["prev"].items()), sorted(r["cur"].items())),
                    "per_instance": r["per_instance"]})
    return out
