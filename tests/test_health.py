"""A member's health: the verdict (server/health.py) on status dicts, and /health on real nodes
that have a leader, lose it, or never learnt their configuration."""

from __future__ import annotations

import aiohttp

from cluster import LocalCluster, config, eventually, free_ports, run
from shoal.server.config import Member
from shoal.server.health import MAX_APPLY_LAG_ENTRIES, unhealthy_reasons
from shoal.server.main import Server

HEALTHY = {"leader": 2, "voters": [1, 2, 3], "commit": 120, "applied": 118}


# ---------------------------------------------------------------------- the verdict
def test_a_member_with_a_leader_voters_and_a_small_lag_is_healthy() -> None:
    assert unhealthy_reasons(HEALTHY) == []


def test_no_leader_and_no_voters_are_reasons() -> None:
    assert unhealthy_reasons({**HEALTHY, "leader": 0}) == ["no leader"]
    assert unhealthy_reasons({**HEALTHY, "voters": []}) == ["no voters in its configuration"]
    assert unhealthy_reasons({**HEALTHY, "leader": 0, "voters": []}) == [
        "no leader", "no voters in its configuration"]


def test_the_apply_lag_bound_is_exclusive() -> None:
    at_bound = {**HEALTHY, "commit": 100 + MAX_APPLY_LAG_ENTRIES, "applied": 100}
    assert unhealthy_reasons(at_bound) == []
    beyond = {**at_bound, "commit": at_bound["commit"] + 1}
    assert unhealthy_reasons(beyond) == [
        f"applied index 100 trails commit index {101 + MAX_APPLY_LAG_ENTRIES} by "
        f"{MAX_APPLY_LAG_ENTRIES + 1} entries (more than {MAX_APPLY_LAG_ENTRIES})"]
    assert unhealthy_reasons({**HEALTHY, "commit": 10, "applied": 0}, max_apply_lag_entries=9)


def test_every_reason_at_once() -> None:
    assert len(unhealthy_reasons({"leader": 0, "voters": [], "commit": 10**6, "applied": 0})) == 3


# ---------------------------------------------------------------------- /health on nodes
async def _health(port: int) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{port}/health") as r:
        return r.status, await r.json()


def test_health_is_200_with_a_leader_and_503_with_the_reason_once_it_is_lost(tmp_path) -> None:
    async def main() -> None:
        async with LocalCluster(tmp_path) as c:
            lead = await c.leader()
            for port in c.http:
                await eventually(lambda port=port: _healthy(port), what=f"{port} healthy")
                assert await _health(port) == (200, {"health": True, "leader": lead,
                                                     "reasons": []})
            survivor = min(i for i in c.servers if i != lead)
            for i in [i for i in c.servers if i != survivor]:
                await c.stop(i)
            port = c.http[survivor - 1]
            # a follower alone: its leader's silence starts elections it can never win
            await eventually(lambda: _unhealthy(port), what="the survivor to lose its leader")
            code, body = await _health(port)
            assert code == 503
            assert body == {"health": False, "leader": 0, "reasons": ["no leader"]}
            # one verdict: /health says what the node's own status() says
            assert unhealthy_reasons(c.servers[survivor].node.status()) == ["no leader"]

    run(main())


async def _unhealthy(port: int) -> bool:
    return (await _health(port))[0] == 503


async def _healthy(port: int) -> bool:
    return (await _health(port))[0] == 200


def test_a_member_that_joined_nothing_yet_has_no_voters(tmp_path) -> None:
    async def main() -> None:
        async with LocalCluster(tmp_path) as c:
            await c.leader()
            peer, client, http = free_ports(3)
            m = Member(4, ("127.0.0.1", peer), ("127.0.0.1", client))
            joiner = Server(config(c.ms + (m,), [*c.http, http], 4, c.root, join=True))
            await joiner.start()  # never added: it knows no configuration and no leader
            try:
                code, body = await _health(http)
                assert code == 503
                assert body["reasons"] == ["no leader", "no voters in its configuration"]
            finally:
                await joiner.stop()

    run(main())
