"""What a component process shows of its calls: a trace across every RPC hop, per-method rate,
errors and latency in Prometheus format, and the trace id on each log line.

One `Observer` per process. The RPC wraps each outgoing call in `client_call` and each
dispatch in `server_call`; both are context managers over a frame's `metadata: dict[str, str]`:

    with observer.client_call("Inventory", "reserve", frame.metadata):   # caller
        ...send the frame, await the reply...
    with observer.server_call("Inventory", "reserve", frame.metadata):   # callee
        ...run the method...

Traces are OpenTelemetry's, with W3C Trace Context as the wire format: `client_call` starts a
CLIENT span, a child of whatever span is current (a server span when the call is made inside a
method), and writes its `traceparent` into the metadata; `server_call` reads it back, starts the
SERVER span under it and makes it current for the method's body, so the next hop's client span
hangs under it. A request through three components is then one trace id with each span's parent
the span that called it. Each Observer has its own TracerProvider (not the global one), so two
"processes" can live in one test.

Where spans go is the exporter: "file" (the default) writes one JSON object per span per line to
`path` (bounded: past `max_file_bytes` the file is moved to `.1` and restarted), "console" the
same lines to stdout, "otlp" sends them to an OpenTelemetry collector (the exporter package is
imported only then; the endpoint comes from OTEL_EXPORTER_OTLP_ENDPOINT, as every OTel SDK reads
it). Spans leave through the SDK's BatchSpanProcessor, off the event loop, its queue bounded.
A span costs tens of microseconds in the Python SDK, so `sample_ratio` traces only that share
of the requests that start a trace (a sampled caller's decision holds for every later hop).
With "none" no span is recorded at all, but an incoming traceparent is still kept (in a
context variable, as it came) and passed on unchanged, so a process that does not export does not break the trace of those that
do; that path costs a few microseconds per call (tests/test_app_observe.py measures it).

Metrics are plain ints bumped on the hot path (a prometheus-client Counter takes a lock per
update) and turned into metric families only when scraped, as the gateway's are: per component
and method, requests, errors and a latency histogram with buckets from 50 us, for both sides.
`metrics_text()` is the exposition of this process's registry (`registry`, which components may
add their own metrics to).

`TraceIdFilter` puts `trace_id` and `span_id` on every log record (a dash outside any trace);
`LOG_FORMAT` shows them."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

Exporter = Literal["file", "console", "otlp", "none"]
EXPORTERS = ("file", "console", "otlp", "none")
# RPC latencies: tens of microseconds in one machine, seconds across a slow deployment.
LATENCY_BUCKETS_S = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [trace=%(trace_id)s span=%(span_id)s] %(message)s"
MAX_FILE_BYTES = 64 * 1024 * 1024
_PROPAGATOR = TraceContextTextMapPropagator()
# Without an exporter no span is made: the caller's traceparent (and tracestate) are kept as they
# came, for the calls this one makes and for the log lines, which is all they are needed for.
_PASSED_ON: ContextVar[tuple[str, str | None] | None] = ContextVar("shoal_trace", default=None)


class MethodStats:
    """One side's counts for one method; bumped without a lock (one event loop per process)."""

    __slots__ = ("requests", "errors", "bucket_counts", "latency_sum_s")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.bucket_counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.latency_sum_s = 0.0

    def record(self, latency_s: float, failed: bool) -> None:
        self.requests += 1
        self.errors += failed
        self.bucket_counts[bisect_left(LATENCY_BUCKETS_S, latency_s)] += 1
        self.latency_sum_s += latency_s


class _Call:
    """One call being observed: a span (or none) and the clock; `fail` marks an error reply."""

    __slots__ = ("_stats", "_span", "_token", "_start_ns", "failed", "reason")

    def __init__(self, stats: MethodStats, span: trace.Span | None, token: object | None):
        self._stats, self._span, self._token = stats, span, token
        self.failed, self.reason = False, ""
        self._start_ns = time.perf_counter_ns()

    def fail(self, reason: str) -> None:
        """An error that arrived as a reply rather than as an exception."""
        self.failed, self.reason = True, reason

    def __enter__(self) -> _Call:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        latency_s = (time.perf_counter_ns() - self._start_ns) / 1e9
        failed = self.failed or error is not None
        self._stats.record(latency_s, failed)
        span = self._span
        if self._token is not None:
            if span is None:
                _PASSED_ON.reset(self._token)  # type: ignore[arg-type]
            else:
                otel_context.detach(self._token)  # type: ignore[arg-type]
        if span is not None:
            if error is not None:
                span.record_exception(error)
            if failed:  # a reason given before an exception (an abort) says more than it
                reason = self.reason or f"{type(error).__name__}: {error}"
                span.set_status(Status(StatusCode.ERROR, reason))
            span.end()


class Observer:
    """Traces and metrics of one process's RPC calls."""

    def __init__(
        self,
        process: str,
        exporter: Exporter = "file",
        path: Path | None = None,
        *,
        sample_ratio: float = 1.0,
        max_file_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        if exporter not in EXPORTERS:
            raise ValueError(f"Observer: exporter must be one of {', '.join(EXPORTERS)}, "
                             f"got {exporter!r}")
        if not 0.0 <= sample_ratio <= 1.0:
            raise ValueError(f"Observer: sample_ratio must be within [0, 1], got {sample_ratio!r}")
        self.process = process
        self.exporter = exporter
        self.path = path if path is not None or exporter != "file" else Path(
            "traces", f"{process}.jsonl")
        self._client: dict[tuple[str, str], MethodStats] = {}
        self._server: dict[tuple[str, str], MethodStats] = {}
        self.registry = CollectorRegistry()
        self.registry.register(_CallCollector(self))
        self._provider: TracerProvider | None = None
        self._tracer: trace.Tracer | None = None
        if exporter != "none":
            self._provider = TracerProvider(
                resource=Resource.create({"service.name": process}),
                # A caller's decision holds down the whole trace; roots sample at the ratio.
                sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
            )
            self._provider.add_span_processor(
                BatchSpanProcessor(_span_exporter(exporter, self.path, max_file_bytes, process))
            )
            self._tracer = self._provider.get_tracer("shoal.app")

    def client_call(self, component: str, method: str, metadata: dict[str, str]) -> _Call:
        """Observe an outgoing call; writes `traceparent` into `metadata`."""
        stats = self._client.get((component, method)) or self._stats(
            self._client, component, method)
        if self._tracer is None:
            passed = _PASSED_ON.get()
            if passed is not None:  # pass on the trace we are in, as it came
                metadata["traceparent"] = passed[0]
                if passed[1] is not None:
                    metadata["tracestate"] = passed[1]
            return _Call(stats, None, None)
        span = self._tracer.start_span(f"{component}/{method}", kind=SpanKind.CLIENT)
        _PROPAGATOR.inject(metadata, context=trace.set_span_in_context(span))
        return _Call(stats, span, None)

    def server_call(self, component: str, method: str, metadata: Mapping[str, str]) -> _Call:
        """Observe a dispatch; the caller's trace (from `traceparent`) is current inside."""
        stats = self._server.get((component, method)) or self._stats(
            self._server, component, method)
        if self._tracer is None:
            traceparent = metadata.get("traceparent")
            if traceparent is None:
                return _Call(stats, None, None)
            return _Call(stats, None, _PASSED_ON.set((traceparent, metadata.get("tracestate"))))
        parent = _PROPAGATOR.extract(metadata) if "traceparent" in metadata else None
        span = self._tracer.start_span(f"{component}/{method}", context=parent, kind=SpanKind.SERVER)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return _Call(stats, span, token)

    def metrics_text(self) -> bytes:
        """This process's metrics in Prometheus's text exposition format."""
        return generate_latest(self.registry)

    def flush(self, timeout_ms: int = 5000) -> bool:
        """Export every ended span now (tests, shutdown)."""
        return self._provider.force_flush(timeout_ms) if self._provider is not None else True

    def close(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()

    def _stats(
        self, table: dict[tuple[str, str], MethodStats], component: str, method: str
    ) -> MethodStats:
        stats = table[(component, method)] = MethodStats()
        return stats


class TraceIdFilter(logging.Filter):
    """Adds `trace_id` and `span_id` (hex, or "-") to every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        passed = _PASSED_ON.get()
        if ctx.is_valid:
            record.trace_id = format(ctx.trace_id, "032x")
            record.span_id = format(ctx.span_id, "016x")
        elif passed is not None and passed[0].count("-") >= 3:
            # version-trace_id-parent_id-flags: the caller's span, this process making none
            record.trace_id, record.span_id = passed[0].split("-")[1:3]
        else:
            record.trace_id = record.span_id = "-"
        return True


class _CallCollector(Collector):
    """The per-method counts as Prometheus families, read at scrape time."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer

    def collect(self) -> Iterator[Metric]:
        o = self.observer
        for side, table in (("client", o._client), ("server", o._server)):
            labels = ["process", "component", "method"]
            requests = CounterMetricFamily(
                f"shoal_rpc_{side}_requests", f"calls {side}-side, by method", labels=labels)
            errors = CounterMetricFamily(
                f"shoal_rpc_{side}_errors", f"calls that failed, {side}-side", labels=labels)
            latency = HistogramMetricFamily(
                f"shoal_rpc_{side}_latency_seconds", f"call latency, {side}-side", labels=labels)
            for (component, method), s in sorted(table.items()):
                values = [o.process, component, method]
                requests.add_metric(values, s.requests)
                errors.add_metric(values, s.errors)
                latency.add_metric(values, _cumulative(s.bucket_counts), s.latency_sum_s)
            yield from (requests, errors, latency)


def _cumulative(counts: Sequence[int]) -> list[tuple[str, float]]:
    total, buckets = 0, []  # type: tuple[int, list[tuple[str, float]]]
    for bound, n in zip((*LATENCY_BUCKETS_S, float("inf")), counts, strict=True):
        total += n
        buckets.append((floatToGoString(bound), total))
    return buckets


class JsonLinesExporter(SpanExporter):
    """One span per line, flat: what a person greps and what `jq` reads."""

    def __init__(self, out: IO[str] | Path, process: str, max_file_bytes: int) -> None:
        self._path = out if isinstance(out, Path) else None
        self._out: IO[str] | None = None if isinstance(out, Path) else out
        self._process = process
        self._max_file_bytes = max_file_bytes

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        out = self._open()
        for span in spans:
            out.write(json.dumps(span_record(span, self._process), separators=(",", ":")) + "\n")
        out.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        if self._path is not None and self._out is not None:
            self._out.close()
            self._out = None

    def _open(self) -> IO[str]:
        if self._path is None:
            assert self._out is not None
            return self._out
        if self._out is not None and self._out.tell() > self._max_file_bytes:
            self._out.close()
            os.replace(self._path, self._path.with_name(self._path.name + ".1"))
            self._out = None
        if self._out is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._out = self._path.open("a", encoding="utf-8")
        return self._out


def span_record(span: ReadableSpan, process: str) -> dict[str, Any]:
    ctx = span.get_span_context()
    assert ctx is not None
    return {
        "process": process,
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "error": span.status.description,
    }


def _span_exporter(
    exporter: Exporter, path: Path | None, max_file_bytes: int, process: str
) -> SpanExporter:
    if exporter == "file":
        assert path is not None
        return JsonLinesExporter(path, process, max_file_bytes)
    if exporter == "console":
        return JsonLinesExporter(sys.stdout, process, max_file_bytes)
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise RuntimeError(
            "Observer: exporter 'otlp' needs the opentelemetry-exporter-otlp-proto-grpc package"
        ) from None
    return OTLPSpanExporter()  # type: ignore[no-any-return]
