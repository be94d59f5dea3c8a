"""Many consensus groups per process: the meta group's directory creates them, every node opens
its replicas, and a killed process loses nothing acknowledged in any group."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from shoal.client import Client
from shoal.local.cluster import LocalProcessCluster

GROUPS = 100


async def _all(coros: list, chunk: int = 25) -> list:  # type: ignore[type-arg]
    out = []
    for i in range(0, len(coros), chunk):
        out += await asyncio.gather(*coros[i:i + chunk])
    return out


def _wait(pred, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_a_hundred_groups_keep_every_acknowledged_write_through_a_kill(tmp_path: Path) -> None:
    with LocalProcessCluster(3, tmp_path, node_args=["--tick-ms", "20"]) as c:
        c.start()

        async def create_and_write() -> None:
            async with Client(c.endpoints, timeout=30) as cl:
                await _all([cl.create_group(g) for g in range(1, GROUPS + 1)])
                listed = await cl.groups()
                assert sorted(listed) == list(range(1, GROUPS + 1))
                assert all(m == [1, 2, 3] for m in listed.values())
                await _all([cl.group(g).put(b"k", b"first %d" % g) for g in range(1, GROUPS + 1)])

        asyncio.run(create_and_write())
        _wait(lambda: all(len((c.status(i) or {}).get("groups", {})) == GROUPS + 1 for i in c.ids),
              "every node to open every group")
        victim = 2
        c.kill(victim)

        async def write_again() -> None:
            async with Client(c.endpoints, timeout=30) as cl:
                await _all([cl.group(g).put(b"k", b"second %d" % g) for g in range(1, GROUPS + 1)])

        asyncio.run(write_again())
        c.start_node(victim)

        def caught_up() -> bool:
            st = c.status(victim)
            return bool(st) and len(st["groups"]) == GROUPS + 1 and all(
                g["leader"] and g["applied"] >= g["commit"] > 1 for g in st["groups"].values())

        _wait(caught_up, f"node {victim} to catch up in every group")

        async def read_back() -> None:
            async with Client(c.endpoints, timeout=30) as cl:
                got = await _all([cl.group(g).get(b"k") for g in range(1, GROUPS + 1)])
                assert [r.kvs[0].value for r in got] == [b"second %d" % g for g in range(1, GROUPS + 1)]
                # And from the restarted node alone, serializable: its own replicas hold them.
            async with Client([c.endpoints[victim - 1]], timeout=30) as solo:
                got = await _all([solo.group(g).get(b"k", serializable=True)
                                  for g in range(1, GROUPS + 1)])
                assert [r.kvs[0].value for r in got] == [b"second %d" % g for g in range(1, GROUPS + 1)]

        asyncio.run(read_back())


def test_a_removed_group_is_closed_everywhere_and_its_data_deleted(tmp_path: Path) -> None:
    with LocalProcessCluster(3, tmp_path, node_args=["--tick-ms", "20"]) as c:
        c.start()

        async def go() -> None:
            async with Client(c.endpoints, timeout=30) as cl:
                await cl.create_group(7)
                await cl.group(7).put(b"k", b"v")
                with pytest.raises(Exception, match="already exists"):
                    await cl.create_group(7)
                await cl.remove_group(7)
                assert await cl.groups() == {}

        asyncio.run(go())
        _wait(lambda: all("7" not in (c.status(i) or {}).get("groups", {"7": 0}) for i in c.ids),
              "group 7 to close everywhere")
        _wait(lambda: not any((c.data_dir(i) / "groups" / "7").exists() for i in c.ids),
              "group 7's files to be deleted")
