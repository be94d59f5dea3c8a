"""shoal.app.observe: one trace across RPC hops, per-method metrics, trace ids on log lines, and
what the no-exporter path costs."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shoal.app.observe import _PASSED_ON, LATENCY_BUCKETS_S, LOG_FORMAT, Observer, TraceIdFilter


def _spans(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_trace_across_two_hops_shares_one_trace_id_with_correct_parents(tmp_path: Path) -> None:
    front = Observer("front", path=tmp_path / "front.jsonl")
    back = Observer("back", path=tmp_path / "back.jsonl")
    store = Observer("store", path=tmp_path / "store.jsonl")

    async def run() -> None:
        first: dict[str, str] = {}
        with front.client_call("Orders", "place", first):  # front -> back
            assert first["traceparent"].startswith("00-")
            with back.server_call("Orders", "place", first):
                second: dict[str, str] = {}
                with back.client_call("Inventory", "reserve", second):  # back -> store
                    with store.server_call("Inventory", "reserve", second):
                        pass

    asyncio.run(run())
    for o in (front, back, store):
        assert o.flush()
        o.close()
    (client1,) = _spans(tmp_path / "front.jsonl")
    client2, server1 = sorted(_spans(tmp_path / "back.jsonl"), key=lambda s: s["kind"])
    (server2,) = _spans(tmp_path / "store.jsonl")
    spans = [client1, server1, client2, server2]
    assert len({s["trace_id"] for s in spans}) == 1
    assert len({s["span_id"] for s in spans}) == 4
    assert client1["parent_id"] is None and client1["kind"] == "CLIENT"
    assert server1["parent_id"] == client1["span_id"] and server1["kind"] == "SERVER"
    assert client2["parent_id"] == server1["span_id"] and client2["kind"] == "CLIENT"
    assert server2["parent_id"] == client2["span_id"]
    assert server2["name"] == "Inventory/reserve" and server2["process"] == "store"
    # The callee's span lies within the caller's, as the hops nest.
    assert client1["start_ns"] <= server1["start_ns"] <= server1["end_ns"] <= client1["end_ns"]


def test_a_process_without_exporter_passes_the_trace_on(tmp_path: Path) -> None:
    front = Observer("front", path=tmp_path / "front.jsonl")
    relay = Observer("relay", exporter="none")
    first: dict[str, str] = {}
    second: dict[str, str] = {}
    with front.client_call("A", "m", first):
        with relay.server_call("A", "m", first):
            with relay.client_call("B", "m", second):
                pass
    assert second["traceparent"] == first["traceparent"]
    assert _PASSED_ON.get() is None  # left where it was found
    # Outside any trace a non-exporting process starts none.
    third: dict[str, str] = {}
    with relay.client_call("B", "m", third):
        pass
    assert third == {}
    front.close()


def test_errors_mark_the_span_and_the_counters(tmp_path: Path) -> None:
    o = Observer("p", path=tmp_path / "p.jsonl")
    with pytest.raises(KeyError):
        with o.server_call("Cart", "add", {}):
            raise KeyError("sku")
    with o.client_call("Cart", "add", {}) as call:
        call.fail("UNAVAILABLE: no replica")
    o.flush()
    server, client = sorted(_spans(tmp_path / "p.jsonl"), key=lambda s: s["kind"], reverse=True)
    assert server["status"] == "ERROR" and server["error"] == "KeyError: 'sku'"
    assert client["status"] == "ERROR" and client["error"] == "UNAVAILABLE: no replica"
    samples = _samples(o.metrics_text())
    cart = frozenset({"process": "p", "component": "Cart", "method": "add"}.items())
    assert samples["shoal_rpc_server_errors_total", cart] == 1
    assert samples["shoal_rpc_client_errors_total", cart] == 1
    assert samples["shoal_rpc_client_requests_total", cart] == 1
    o.close()


def _samples(text: bytes) -> dict[tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def test_metrics_text_has_counters_and_histogram_buckets() -> None:
    o = Observer("back", exporter="none")
    for _ in range(3):
        with o.server_call("Inventory", "reserve", {}):
            pass
    with o.server_call("Inventory", "stock", {}):
        time.sleep(0.003)  # a slow call on purpose: it must land above the 2.5 ms bucket
    text = o.metrics_text()
    samples = _samples(text)
    reserve = frozenset({"process": "back", "component": "Inventory", "method": "reserve"}.items())
    stock = frozenset({"process": "back", "component": "Inventory", "method": "stock"}.items())
    assert samples["shoal_rpc_server_requests_total", reserve] == 3
    assert samples["shoal_rpc_server_errors_total", reserve] == 0
    assert samples["shoal_rpc_server_latency_seconds_count", reserve] == 3
    assert samples["shoal_rpc_server_latency_seconds_bucket", reserve | {("le", "+Inf")}] == 3
    assert samples["shoal_rpc_server_latency_seconds_bucket", stock | {("le", "0.0025")}] == 0
    # (how far above depends on the machine's load: buckets are cumulative, and all hold it)
    assert samples["shoal_rpc_server_latency_seconds_bucket", stock | {("le", "+Inf")}] == 1
    stock_counts = [samples["shoal_rpc_server_latency_seconds_bucket", stock | {("le", le)}]
                    for le in [*(repr(float(b)) for b in LATENCY_BUCKETS_S), "+Inf"]]
    assert stock_counts == sorted(stock_counts)
    assert samples["shoal_rpc_server_latency_seconds_sum", stock] >= 0.003
    buckets = [k for k in samples if k[0] == "shoal_rpc_server_latency_seconds_bucket"
               and k[1] >= reserve]
    assert len(buckets) == len(LATENCY_BUCKETS_S) + 1
    assert b"# TYPE shoal_rpc_client_requests_total counter" in text


def test_log_lines_carry_the_trace_id(tmp_path: Path) -> None:
    o = Observer("p", path=tmp_path / "p.jsonl")
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Collect()
    handler.addFilter(TraceIdFilter())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    log = logging.getLogger("test.observe")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        metadata = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
        with o.server_call("Cart", "add", metadata):
            log.info("inside")
        log.info("outside")
    finally:
        log.removeHandler(handler)
    o.flush()
    (span,) = _spans(tmp_path / "p.jsonl")
    assert "trace=0af7651916cd43dd8448eb211c80319c span=" + span["span_id"] in records[0]
    assert span["parent_id"] == "b7ad6b7169203331"
    assert "[trace=- span=-]" in records[1]
    o.close()


def test_log_lines_carry_the_callers_trace_id_without_an_exporter() -> None:
    o = Observer("p", exporter="none")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    metadata = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "tracestate": "vendor=1"}
    with o.server_call("Cart", "add", metadata):
        TraceIdFilter().filter(record)
        onward: dict[str, str] = {}
        with o.client_call("Stock", "take", onward):
            pass
    assert (record.trace_id, record.span_id) == ("0af7651916cd43dd8448eb211c80319c",
                                                 "b7ad6b7169203331")
    assert onward == metadata


def test_the_span_file_is_bounded(tmp_path: Path) -> None:
    o = Observer("p", path=tmp_path / "p.jsonl", max_file_bytes=2000)
    for _ in range(40):
        with o.client_call("A", "m", {}):
            pass
        o.flush()
    o.close()
    assert (tmp_path / "p.jsonl.1").exists()
    assert (tmp_path / "p.jsonl").stat().st_size < 2000 + 1000  # one batch past the bound


def test_bad_exporter_is_refused() -> None:
    with pytest.raises(ValueError, match="exporter must be one of file, console, otlp, none"):
        Observer("p", exporter="jaeger")  # type: ignore[arg-type]


def test_otlp_is_imported_only_when_asked_for() -> None:
    import shoal.app.observe  # noqa: F401

    assert not any(m.startswith("opentelemetry.exporter") for m in sys.modules)


def _per_call_us(o: Observer, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        metadata: dict[str, str] = {}
        with o.client_call("Inventory", "stock", metadata):
            with o.server_call("Inventory", "stock", metadata):
                pass
    return (time.perf_counter() - start) / n * 1e6


def test_overhead_of_the_no_exporter_path_is_small(tmp_path: Path) -> None:
    """Both sides of one call, measured; printed for docs (pytest -s). The bound is loose
    because the machine is shared; the figure in the docs is the measured one."""
    none = Observer("p", exporter="none")
    traced = Observer("q", path=tmp_path / "q.jsonl")
    _per_call_us(none, 1000)  # warm-up
    none_us = min(_per_call_us(none, 5000) for _ in range(3))
    traced_us = min(_per_call_us(traced, 300) for _ in range(3))
    traced.close()
    print(f"observe overhead per call (client+server): none {none_us:.2f} us, "
          f"file {traced_us:.2f} us")
    # Relative to recording spans on this machine at this moment, and a loose ceiling.
    assert none_us * 4 < traced_us
    assert none_us < 100


def test_an_unsampled_caller_keeps_the_whole_trace_unsampled(tmp_path: Path) -> None:
    front = Observer("front", path=tmp_path / "front.jsonl", sample_ratio=0.0)
    back = Observer("back", path=tmp_path / "back.jsonl")
    metadata: dict[str, str] = {}
    with front.client_call("A", "m", metadata):
        with back.server_call("A", "m", metadata):
            pass
    assert int(metadata["traceparent"].rsplit("-", 1)[1], 16) & 1 == 0  # W3C: not sampled
    for o in (front, back):
        o.flush()
        o.close()
    assert not (tmp_path / "front.jsonl").exists() and not (tmp_path / "back.jsonl").exists()
    with pytest.raises(ValueError, match="sample_ratio"):
        Observer("p", sample_ratio=2.0)
