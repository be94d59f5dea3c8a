"""Gateway counters kept as plain ints, turned into Prometheus metrics only when scraped.

A prometheus-client Counter or Histogram takes a lock on every update; the proxy's hot path
instead bumps ints and a bucket array, and `GatewayCollector` reads them at scrape time."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ..caller import Caller
    from .pool import Pools

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayStats:
    def __init__(self) -> None:
        self.responses: dict[int, int] = {}  # status → count, errors made by the gateway included
        self.connections = 0  # client connections open
        self.accepted = 0
        self.bucket_counts = [0] * (len(BUCKETS) + 1)
        self.latency_sum = 0.0

    def response(self, status: int, latency_s: float) -> None:
        self.responses[status] = self.responses.get(status, 0) + 1
        self.bucket_counts[bisect_left(BUCKETS, latency_s)] += 1
        self.latency_sum += latency_s


class GatewayCollector(Collector):
    def __init__(self, service: str, stats: GatewayStats, caller: Caller, pools: Pools):
        self.service, self.stats, self.caller, self.pools = service, stats, caller, pools

    def collect(self) -> Iterator[Metric]:
        s, c, svc = self.stats, self.caller, self.service
        responses = CounterMetricFamily("shoal_gateway_responses", "responses sent, by status",
                                        labels=["service", "status"])
        for status, n in sorted(s.responses.items()):
            responses.add_metric([svc, str(status)], n)
        yield responses
        cum, buckets = 0, []
        for bound, n in zip((*BUCKETS, float("inf")), s.bucket_counts, strict=True):
            cum += n
            buckets.append((str(bound) if bound != float("inf") else "+Inf", cum))
        latency = HistogramMetricFamily("shoal_gateway_request_seconds",
                                        "time to the response head", labels=["service"])
        latency.add_metric([svc], buckets, s.latency_sum)
        yield latency
        yield CounterMetricFamily("shoal_gateway_connections_accepted", "client connections",
                                  value=s.accepted)
        yield GaugeMetricFamily("shoal_gateway_connections_open", "client connections open",
                                value=s.connections)
        yield CounterMetricFamily("shoal_gateway_retries", "attempts beyond the first",
                                  value=c.retries)
        yield CounterMetricFamily("shoal_gateway_retry_budget_refused",
                                  "retries the budget refused", value=c.budget.refused)
        yield CounterMetricFamily("shoal_gateway_ejections", "outlier ejections",
                                  value=c.outlier.ejections)
        yield GaugeMetricFamily("shoal_gateway_panic", "1 if every backend is unhealthy",
                                value=int(c.panic))
        now = c.clock()
        ejected = c.outlier.ejected()
        state = GaugeMetricFamily("shoal_gateway_backend_up",
                                  "1 if routable (healthy, not ejected, breaker not open)",
                                  labels=["service", "backend", "address"])
        breaker = GaugeMetricFamily("shoal_gateway_backend_breaker_open",
                                    "1 if the circuit breaker is open", labels=["backend"])
        inflight = GaugeMetricFamily("shoal_gateway_backend_inflight", "requests in flight",
                                     labels=["backend"])
        for bid, b in sorted(c.backends.items()):
            is_open = c.breakers[bid].state(now).value == "open"
            up = bid not in ejected and bid not in c.unhealthy and not is_open
            state.add_metric([svc, bid, b.address], int(up))
            breaker.add_metric([bid], int(is_open))
            inflight.add_metric([bid], c.inflight(bid))
        yield state
        yield breaker
        yield inflight
        yield CounterMetricFamily("shoal_gateway_backend_connects", "backend connections opened",
                                  value=self.pools.opened())
