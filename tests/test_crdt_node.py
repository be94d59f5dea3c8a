"""Active-active over a real network: 3 CRDT node processes (shoal.crdt.node). One is cut off
from the others; both sides accept writes to a counter, a set and a register; the majority
side keeps replicating among itself while the cut node diverges; after the heal every node
holds the same state, the join of all the writes, within a bound. A node killed with SIGKILL
and restarted with empty memory is brought back by full state."""

from __future__ import annotations

import signal
import urllib.error
from collections.abc import Iterator
from typing import Any

import pytest

from shoal.crdt.node import CrdtProcessCluster

CONVERGE_BOUND = 5.0  # seconds after the heal; ticks are 0.1 s, so this is generous


@pytest.fixture
def crdt() -> Iterator[CrdtProcessCluster]:
    with CrdtProcessCluster(3, tick=0.1) as c:
        c.start()
        yield c


def values(state: dict[str, Any]) -> dict[str, Any]:
    return {name: o["value"] for name, o in state["objects"].items()}


def test_partitioned_replicas_accept_writes_and_converge_after_the_heal(
        crdt: CrdtProcessCluster) -> None:
    crdt.post(1, "/counter/hits", {"add": 1})
    crdt.post(1, "/set/tags", {"add": "a"})
    crdt.post(2, "/register/title", {"value": "draft"})
    crdt.wait_converged(CONVERGE_BOUND)

    crdt.isolate(3)
    # Both sides accept every write, locally.
    minority = crdt.post(3, "/register/title", {"value": "minority"})
    crdt.post(3, "/counter/hits", {"add": 10})
    crdt.post(3, "/set/tags", {"add": "c"})
    crdt.post(3, "/set/tags", {"remove": "a"})  # n3 saw a's add: this removes it
    majority = crdt.post(1, "/register/title", {"value": "majority"})
    crdt.post(1, "/counter/hits", {"add": 2})
    crdt.post(2, "/counter/hits", {"add": 3})
    crdt.post(2, "/set/tags", {"add": "b"})
    assert crdt.get(3, "/counter/hits")["value"] == 11
    assert crdt.get(1, "/counter/hits")["value"] in (3, 6)  # n2's may have arrived already

    # The majority side still replicates among itself; the cut node sees none of it.
    crdt.wait_converged(CONVERGE_BOUND, among=[1, 2],
                        until=lambda s: values(s[1])["hits"] == 6)
    assert values(crdt.get(1, "/state")) == {"hits": 6, "tags": ["a", "b"], "title": "majority"}
    assert values(crdt.get(3, "/state")) == {"hits": 11, "tags": ["c"], "title": "minority"}
    assert crdt.get(3, "/status")["peers"]["n1"]["fault_dropped"] > 0

    crdt.heal()
    took = crdt.wait_converged(CONVERGE_BOUND)
    final = {i: values(s) for i, s in crdt.states().items() if s is not None}
    # Last writer wins: the register holds the write with the larger HLC timestamp.
    later = max((minority, majority), key=lambda r: r["timestamp"])["value"]
    expected = {"hits": 16, "tags": ["b", "c"], "title": later}
    assert final == {1: expected, 2: expected, 3: expected}, f"after {took:.2f}s: {final}"

    # A node that loses its memory (SIGKILL, restart) gets the full state back.
    crdt.kill(2, signal.SIGKILL)
    crdt.post(1, "/counter/hits", {"add": 4})
    crdt.start_node(2)
    crdt.wait_serving(2)
    crdt.wait_converged(CONVERGE_BOUND, until=lambda s: values(s[2]).get("hits") == 20)
    assert values(crdt.get(2, "/state")) == {**expected, "hits": 20}


def test_client_api_refuses_what_it_cannot_apply(crdt: CrdtProcessCluster) -> None:
    crdt.post(1, "/counter/c", {"add": 1})

    def refused(path: str, body: dict[str, Any]) -> tuple[int, str]:
        with pytest.raises(urllib.error.HTTPError) as info:
            crdt.post(1, path, body)
        return info.value.code, info.value.read().decode()

    code, text = refused("/set/c", {"add": "x"})
    assert code == 409 and "'c' is a counter, not a set" in text
    code, text = refused("/counter/c", {"add": "one"})
    assert code == 400 and "counter takes" in text
    code, text = refused("/set/s", {"add": 1.5})
    assert code == 400 and "element" in text  # floats are not set elements
    code, text = refused("/register/r", {"value": 1, "extra": 2})
    assert code == 400 and "register takes" in text
    assert crdt.get(1, "/counter/c")["value"] == 1
    assert crdt.get(1, "/register/never")["value"] is None
