"""Random, round-robin, weighted and load-aware pickers: each keeps the promise it is named for."""

from __future__ import annotations

import random
from collections import Counter

from shoal.balance import Backend, Request, make_picker
from shoal.balance.slowstart import effective_weight


def weighted(**weights: int) -> list[Backend]:
    return [Backend(name, f"{name}.example", w) for name, w in weights.items()]


def picks(picker, count: int, now: float = 0.0) -> list[str]:
    return [picker.pick(Request(now=now)).id for _ in range(count)]


def test_smooth_wrr_gives_nginx_sequence() -> None:
    picker = make_picker("smooth-wrr", weighted(a=5, b=1, c=1))
    assert picks(picker, 14) == list("aabacaa") * 2


def test_smooth_wrr_is_exactly_proportional_per_cycle() -> None:
    picker = make_picker("smooth-wrr", weighted(a=3, b=7, c=2, d=8))
    assert Counter(picks(picker, 20 * 50)) == {"a": 150, "b": 350, "c": 100, "d": 400}


def test_smooth_wrr_update_keeps_credit_of_survivors() -> None:
    picker = make_picker("smooth-wrr", weighted(a=5, b=1, c=1))
    picks(picker, 3)
    picker.update(weighted(a=5, b=1))
    assert Counter(picks(picker, 60)) == {"a": 50, "b": 10}


def test_weighted_random_is_proportional() -> None:
    picker = make_picker("weighted-random", weighted(a=10, b=20, c=70), rng=random.Random(5))
    counts = Counter(picks(picker, 20_000))
    for name, share in {"a": 0.1, "b": 0.2, "c": 0.7}.items():
        assert abs(counts[name] / 20_000 - share) < 0.015


def test_random_is_uniform_and_ignores_weight() -> None:
    picker = make_picker("random", weighted(a=1, b=100, c=1, d=1), rng=random.Random(5))
    counts = Counter(picks(picker, 20_000))
    assert all(abs(c / 20_000 - 0.25) < 0.015 for c in counts.values())


def test_random_is_reproducible_from_the_seed() -> None:
    def run() -> list[str]:
        return picks(make_picker("random", weighted(a=1, b=1, c=1), rng=random.Random(9)), 50)

    assert run() == run()


def test_round_robin_cycles() -> None:
    picker = make_picker("round-robin", weighted(a=1, b=9, c=1))
    assert picks(picker, 7) == ["a", "b", "c", "a", "b", "c", "a"]
    picker.update(weighted(a=1, b=1))
    assert set(picks(picker, 4)) == {"a", "b"}


def test_least_connections_picks_least_loaded_per_weight() -> None:
    picker = make_picker("least-connections", weighted(a=100, b=100, c=200))
    for backend_id, n in {"a": 3, "b": 1, "c": 4}.items():
        for _ in range(n):
            picker.on_start(backend_id)
    assert picker.pick(Request()).id == "b"  # (1+1)/100 beats (4+1)/200 and (3+1)/100
    picker.on_start("b")
    picker.on_start("b")
    assert picker.pick(Request()).id == "c"  # (4+1)/200 beats (3+1)/100 and (3+1)/100


def test_least_connections_spreads_ties_round_robin() -> None:
    picker = make_picker("least-connections", weighted(a=1, b=1, c=1))
    assert picks(picker, 6) == ["a", "b", "c", "a", "b", "c"]


def test_p2c_never_picks_the_most_loaded() -> None:
    backends = weighted(a=1, b=1, c=1, d=1)
    picker = make_picker("least-request", backends, rng=random.Random(2))
    for backend_id, load in {"a": 1, "b": 2, "c": 3, "d": 50}.items():
        for _ in range(load):
            picker.on_start(backend_id)
    counts = Counter(picks(picker, 3000))
    assert "d" not in counts
    assert counts["a"] > counts["b"] > counts["c"] > 0  # yet not always the least loaded


def test_slow_start_ramps_linearly() -> None:
    backend = Backend("new", "x", 100, warmup_start=50.0)
    ramp = [effective_weight(backend, now, warmup_s=10.0) for now in (40, 50, 52.5, 55, 60, 99)]
    assert ramp == [1, 1, 25, 50, 100, 100]
    assert effective_weight(Backend("old", "x", 100), 0.0, 10.0) == 100


def test_slow_start_throttles_a_new_backend_in_weighted_pickers() -> None:
    backends = [Backend("old", "x"), Backend("new", "y", warmup_start=100.0)]
    for name in ("weighted-random", "smooth-wrr"):
        opts = {"rng": random.Random(4)} if name == "weighted-random" else {}
        picker = make_picker(name, backends, warmup_s=60.0, **opts)
        share = [picks(picker, 2000, now=100 + t).count("new") / 2000 for t in (6, 30, 60)]
        assert abs(share[0] - 10 / 110) < 0.03  # weight 10 of 100 after 6 s of 60
        assert abs(share[1] - 50 / 150) < 0.03
        assert abs(share[2] - 0.5) < 0.03


def test_slow_start_weighs_load_in_least_request() -> None:
    backends = [Backend("old", "x"), Backend("new", "y", warmup_start=0.0)]
    picker = make_picker("least-request", backends, rng=random.Random(4), warmup_s=60.0)
    for _ in range(3):
        picker.on_start("old")
    assert set(picks(picker, 50, now=6.0)) == {"old"}  # 4/100 beats 1/10 while warming
    assert set(picks(picker, 50, now=60.0)) == {"new"}  # 1/100 beats 4/100 once warm


def serve(picker, latency_of: dict[str, float], count: int) -> Counter[str]:
    """Sequential requests, two in flight at a time, each taking its backend's latency."""
    counts: Counter[str] = Counter()
    now = 0.0
    for _ in range(count):
        backend = picker.pick(Request(now=now)).id
        picker.on_start(backend)
        counts[backend] += 1
        now += 0.001
        picker.on_finish(backend)
        picker.on_result(backend, latency_of[backend], True, now)
    return counts


def test_peak_ewma_avoids_a_slow_backend() -> None:
    latency = {"fast1": 0.010, "fast2": 0.012, "slow": 0.200}
    picker = make_picker("peak-ewma", weighted(fast1=1, fast2=1, slow=1), rng=random.Random(1))
    counts = serve(picker, latency, 3000)
    assert counts["slow"] < 0.02 * 3000 and counts["fast1"] > 0.3 * 3000


def test_peak_ewma_reacts_to_a_latency_spike_at_once() -> None:
    picker = make_picker("peak-ewma", weighted(a=1, b=1), rng=random.Random(1))
    picker.on_result("a", 0.010, True, 0.0)
    picker.on_result("b", 0.010, True, 0.0)
    picker.on_result("a", 0.500, True, 0.1)  # the peak is taken whole, not averaged
    assert picker.cost("a", 0.1) > 0.49
    assert picker.cost("a", 10.1) < 0.5 * 0.500  # and decays while unobserved


def test_shortest_response_prefers_the_fast_backend() -> None:
    latency = {"fast": 0.010, "slow": 0.100}
    picker = make_picker("shortest-response", weighted(fast=1, slow=1), rng=random.Random(1))
    for b, lat in latency.items():
        picker.on_result(b, lat, True, 0.0)
        picker.on_start(b)  # one request in flight on each
    assert all(p == "fast" for p in picks(picker, 50))
    picker.on_result("fast", 10.0, False, 0.0)  # failures do not count toward the average
    assert picker.estimate("fast") == 0.010


def test_shortest_response_forgets_at_window_end() -> None:
    picker = make_picker(
        "shortest-response", weighted(a=1, b=1), rng=random.Random(1), window_s=30.0
    )
    picker.on_result("a", 1.0, True, 0.0)
    picker.on_start("a")
    assert picker.estimate("a") == 1.0
    picker.pick(Request(now=31.0))
    assert picker.estimate("a") == 0.0
