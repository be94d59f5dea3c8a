"""A small discrete-event simulation of a cluster with one slow backend, used by the report to
compare dynamic pickers on tail latency. Deterministic for a seed: arrivals and each request's
base service time are drawn in arrival order, so every picker faces the same workload."""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass

from .base import Backend, Request
from .registry import make_picker, options


@dataclass(frozen=True, slots=True)
class Cluster:
    backends: int = 10
    workers: int = 4  # requests a backend serves at once; the rest wait in its FIFO queue
    service_s: float = 0.010  # mean service time (exponential) of a healthy backend
    slow_factor: float = 4.0  # the slow backend (the first) takes this many times longer
    rate: float = 800.0  # Poisson arrivals per second: ~80% of the slow backend's capacity
    requests: int = 100_000
    seed: int = 7


@dataclass(frozen=True, slots=True)
class Outcome:
    latencies: list[float]  # seconds, in completion order
    slow_share: float  # fraction of requests sent to the slow backend


def simulate(picker_name: str, cluster: Cluster) -> Outcome:
    backends = [Backend(f"b{i}", f"10.0.0.{i}") for i in range(cluster.backends)]
    opts = {"rng": random.Random(cluster.seed + 1)} if "rng" in options(picker_name) else {}
    picker = make_picker(picker_name, backends, **opts)
    index = {b.id: i for i, b in enumerate(backends)}
    workload = random.Random(cluster.seed)

    busy = [0] * cluster.backends
    queues: list[deque[tuple[float, float]]] = [deque() for _ in backends]  # (arrival, service)
    events: list[tuple[float, int, int, float]] = []  # (completion time, seq, backend, arrival)
    latencies: list[float] = []
    to_slow = 0
    seq = 0

    def start(i: int, now: float, arrival: float, service: float) -> None:
        nonlocal seq
        busy[i] += 1
        seq += 1
        heapq.heappush(events, (now + service, seq, i, arrival))

    def complete_until(t: float) -> None:
        while events and events[0][0] <= t:
            done, _, i, arrival = heapq.heappop(events)
            busy[i] -= 1
            picker.on_finish(backends[i].id)
            picker.on_result(backends[i].id, done - arrival, True, done)
            latencies.append(done - arrival)
            if queues[i]:
                start(i, done, *queues[i].popleft())

    now = 0.0
    for _ in range(cluster.requests):
        now += workload.expovariate(cluster.rate)
        service = workload.expovariate(1.0 / cluster.service_s)
        complete_until(now)
        i = index[picker.pick(Request(now=now)).id]
        picker.on_start(backends[i].id)
        if i == 0:
            to_slow += 1
            service *= cluster.slow_factor
        if busy[i] < cluster.workers:
            start(i, now, now, service)
        else:
            queues[i].append((now, service))
    complete_until(float("inf"))
    return Outcome(latencies, to_slow / cluster.requests)
