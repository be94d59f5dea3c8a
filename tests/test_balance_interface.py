"""The picker interface: validation, the registry, membership changes, in-flight counting."""

from __future__ import annotations

import random

import pytest

from shoal.balance import PICKERS, Backend, Request, make_picker, options


def cluster(n: int, weight: int = 100) -> list[Backend]:
    return [Backend(f"b{i}", f"10.0.0.{i}", weight) for i in range(n)]


def build(name: str, backends: list[Backend], **opts: object):
    if "rng" in options(name):
        opts.setdefault("rng", random.Random(3))
    if name == "maglev":
        opts.setdefault("table_size", 1009)  # small prime keeps the tests fast
    return make_picker(name, backends, **opts)


def request(i: int, now: float = 0.0) -> Request:
    return Request(key=f"k{i}", client=f"10.{i % 256}.{i // 256 % 256}.1", now=now)


def test_registry_names_every_picker() -> None:
    assert set(PICKERS) == {
        "random", "weighted-random", "round-robin", "smooth-wrr", "least-connections",
        "least-request", "peak-ewma", "shortest-response", "ip-hash", "ring-hash", "maglev",
        "rendezvous", "jump", "bounded-load",
    }


def test_unknown_picker_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown picker 'fastest'.*ring-hash.*bounded-load"):
        make_picker("fastest", cluster(3))


def test_unknown_or_missing_option_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"ring-hash.*options are: replicas"):
        make_picker("ring-hash", cluster(3), eps=0.1)
    with pytest.raises(ValueError, match="rng"):
        make_picker("least-request", cluster(3))


@pytest.mark.parametrize("name", sorted(PICKERS))
def test_empty_backend_list_is_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="no backends"):
        build(name, [])


def test_bad_backends_are_rejected_with_the_reason() -> None:
    with pytest.raises(ValueError, match="weight must be an int >= 0"):
        Backend("a", "x", -1)
    with pytest.raises(ValueError, match="non-empty"):
        Backend("", "x")
    with pytest.raises(ValueError, match="duplicate backend id 'a'"):
        make_picker("round-robin", [Backend("a", "x"), Backend("a", "y")])
    with pytest.raises(ValueError, match="weight 0"):
        make_picker("round-robin", [Backend("a", "x", 0)])


def test_bad_options_are_rejected_with_the_reason() -> None:
    rng = random.Random(1)
    with pytest.raises(ValueError, match="prime"):
        make_picker("maglev", cluster(3), table_size=1000)
    with pytest.raises(ValueError, match="smaller than 5 backends"):
        make_picker("maglev", cluster(5), table_size=3)
    with pytest.raises(ValueError, match="cannot weight"):
        make_picker("jump", [Backend("a", "x", 1), Backend("b", "x", 2)])
    with pytest.raises(ValueError, match="eps"):
        make_picker("bounded-load", cluster(3), eps=0)
    with pytest.raises(ValueError, match="warmup_s"):
        make_picker("weighted-random", cluster(3), rng=rng, warmup_s=-1)
    with pytest.raises(ValueError, match="replicas"):
        make_picker("ring-hash", cluster(3), replicas=0)


def test_hashing_pickers_need_a_key() -> None:
    with pytest.raises(ValueError, match="ring-hash needs Request.key"):
        make_picker("ring-hash", cluster(3)).pick(Request())
    with pytest.raises(ValueError, match="ip-hash needs Request.client"):
        make_picker("ip-hash", cluster(3)).pick(Request(key="k"))
    with pytest.raises(ValueError, match="not an IP address: 'nope'"):
        make_picker("ip-hash", cluster(3)).pick(Request(client="nope"))


@pytest.mark.parametrize("name", sorted(PICKERS))
def test_update_removes_and_adds_backends(name: str) -> None:
    picker = build(name, cluster(4))
    picker.update(cluster(3))  # b3 leaves
    picked = {picker.pick(request(i, now=i)).id for i in range(300)}
    assert picked == {"b0", "b1", "b2"}
    picker.update([*cluster(3), Backend("b9", "10.0.0.9")])  # b9 joins
    picked = {picker.pick(request(i, now=i)).id for i in range(300)}
    assert "b9" in picked and "b3" not in picked


def test_rejected_update_leaves_the_picker_as_it_was() -> None:
    picker = make_picker("jump", cluster(3))
    with pytest.raises(ValueError, match="cannot weight"):
        picker.update([*cluster(3), Backend("heavy", "x", 500)])
    assert [b.id for b in picker.backends] == ["b0", "b1", "b2"]
    assert picker.pick(request(1)).id in {"b0", "b1", "b2"}


@pytest.mark.parametrize("name", sorted(PICKERS))
def test_drained_backend_is_never_picked(name: str) -> None:
    backends = [*cluster(3), Backend("drained", "x", 0)]
    picker = build(name, backends)
    assert all(picker.pick(request(i)).id != "drained" for i in range(200))


def test_inflight_counts_survive_updates_and_ignore_strangers() -> None:
    picker = make_picker("least-connections", cluster(3))
    picker.on_start("b1")
    picker.on_start("b1")
    picker.on_start("gone")  # a backend removed meanwhile: not counted, no error
    picker.update(cluster(2))
    assert picker.inflight("b1") == 2
    picker.on_finish("b1")
    picker.on_finish("gone")
    assert picker.inflight("b1") == 1
    picker.on_finish("b1")
    picker.on_finish("b1")  # never below zero
    assert picker.inflight("b1") == 0
