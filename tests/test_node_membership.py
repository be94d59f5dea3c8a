"""Membership changes with real nodes (add a learner, promote, remove, remove the leader) and
the HTTP status and metrics endpoints."""

from __future__ import annotations

import re

import aiohttp

from cluster import LocalCluster, config, ep, eventually, free_ports, run
from shoal.client import Client
from shoal.server.config import Member
from shoal.server.main import Server


async def start_joiner(c: LocalCluster, n: int) -> tuple[Server, Member]:
    """A new node `n` for a running cluster: its own addresses, `join=True` (no bootstrap),
    and a members list that includes itself."""
    peer, client, http = free_ports(3)
    m = Member(n, ("127.0.0.1", peer), ("127.0.0.1", client))
    return Server(config(c.ms + (m,), [*c.http, http], n, c.root, join=True)), m


async def same_state(servers) -> set[int]:
    hashes = set()
    for s in servers:
        await s.node.read_barrier(5)
        hashes.add(s.node.kv.hash())
    return hashes


def test_add_a_learner_it_catches_up_promote_it_then_remove_another_member(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints) as cl:
            lead = await c.leader()
            for i in range(30):
                await cl.put(f"m/{i:02d}".encode(), b"before the join")
            joiner, m4 = await start_joiner(c, 4)
            st = await cl.member_add(4, f"127.0.0.1:{m4.peer[1]}", f"127.0.0.1:{m4.client[1]}",
                                     learner=True)
            assert st["learners"] == [4] and st["voters"] == [1, 2, 3]
            assert "4" in str(st["members"].get(4, st["members"].get("4", "")))
            await joiner.start()
            c.servers[4] = joiner  # so that the cluster's exit stops it
            leader = c.servers[lead].node
            await eventually(lambda: joiner.node.applied >= leader.applied, timeout=15,
                             what="the learner catching up")
            assert joiner.node.kv.mvcc.get(b"m/29").value == b"before the join"
            assert joiner.node.role == "follower" and joiner.node.leader == lead
            # a learner does not count towards the quorum but does replicate new writes
            await cl.put(b"m/learner", b"sees this")
            await eventually(lambda: joiner.node.kv.mvcc.get(b"m/learner") is not None)

            st = await cl.member_promote(4)
            await eventually(lambda: sorted(leader.core.conf.voters) == [1, 2, 3, 4]
                             and not leader.core.conf.joint, what="4 to become a voter")
            st = await cl.status(ep(c, lead))
            assert st["voters"] == [1, 2, 3, 4] and st["learners"] == []

            victim = min(i for i in (1, 2, 3) if i != lead)
            await cl.member_remove(victim)
            await eventually(lambda: sorted(leader.core.conf.voters) == sorted({1, 2, 3, 4} - {victim})
                             and not leader.core.conf.joint, what="the removal")
            await c.stop(victim)
            st = await cl.status(ep(c, lead))
            assert victim not in st["voters"] and victim not in st["members"] \
                and str(victim) not in st["members"]
            # the new configuration commits writes and node 4 has everything
            await cl.put(b"m/after", b"removal")
            survivors = [c.servers[i] for i in sorted(c.servers)]
            await eventually(lambda: all(s.node.applied >= leader.applied for s in survivors))
            assert len(await same_state(survivors)) == 1
            assert joiner.node.kv.mvcc.get(b"m/after").value == b"removal"
            # 4 now serves linearizable reads itself
            async with Client([f"127.0.0.1:{m4.client[1]}"]) as c4:
                assert (await c4.get(b"m/", prefix=True, count_only=True)).count == 32
    run(main())


def test_removing_the_leader_makes_it_step_down_and_the_rest_elect_a_new_one(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints) as cl:
            old = await c.leader()
            await cl.put(b"a", b"1")
            await cl.member_remove(old)
            rest = {i: s for i, s in c.servers.items() if i != old}

            def new_leader():
                leaders = [i for i, s in rest.items() if s.node.role == "leader"]
                return leaders[0] if len(leaders) == 1 else None

            new = await eventually(new_leader, what="a new leader among the rest")
            assert new != old
            await eventually(lambda: c.servers[old].node.role != "leader",
                             what="the removed leader to step down")
            node = c.servers[new].node
            await eventually(lambda: sorted(node.core.conf.voters) == sorted(rest)
                             and not node.core.conf.joint, what="C(new) on the new leader")
            async with Client([ep(c, i) for i in sorted(rest)]) as cl2:
                await cl2.put(b"a", b"2")
                assert await cl2.get_value(b"a") == b"2"
                st = await cl2.status(ep(c, new))
                assert st["role"] == "leader" and st["leader"] == new
                assert st["voters"] == sorted(rest) and old not in st["voters"]
            await c.stop(old)
    run(main())


def test_status_reports_voters_learners_and_peers(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints) as cl:
            lead = await c.leader()
            for i in range(5):
                await cl.put(f"s/{i}".encode(), b"x")
            st = await cl.status(ep(c, lead))
            assert st["id"] == lead and st["role"] == "leader" and st["leader"] == lead
            assert st["voters"] == [1, 2, 3] and st["learners"] == []
            assert st["applied"] <= st["commit"] <= st["last_index"]
            assert st["revision"] == 6
            await eventually(lambda: all(p["match"] == c.servers[lead].node.core.log.last_index()
                                         for p in c.servers[lead].node.status()["peers"].values()),
                             what="every follower to match the leader")
            f = min(i for i in c.servers if i != lead)
            fst = await cl.status(ep(c, f))
            assert fst["id"] == f and fst["role"] == "follower" and fst["leader"] == lead
            assert fst["term"] == st["term"]
    run(main())


def test_http_status_and_metrics(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints) as cl:
            lead = await c.leader()
            for i in range(5):
                await cl.put(f"h/{i}".encode(), b"x")
            leader = c.servers[lead].node
            await eventually(lambda: all(s.node.applied == leader.applied
                                         for s in c.servers.values()))
            port = c.http[lead - 1]
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/status") as r:
                    assert r.status == 200
                    st = await r.json()
                for field in ("id", "role", "term", "leader", "commit", "applied", "peers"):
                    assert field in st, field
                assert st["id"] == lead and st["role"] == "leader" and st["leader"] == lead
                assert st["term"] == leader.core.term and st["term"] >= 2
                assert st["commit"] >= st["applied"] >= 7  # bootstrap + empty + session + 5 puts
                assert set(st["peers"]) == {"1", "2", "3"}
                assert all(isinstance(p["match"], int) and p["match"] > 0
                           for p in st["peers"].values())

                async with http.get(f"http://127.0.0.1:{port}/health") as r:
                    assert r.status == 200 and (await r.json())["leader"] == lead

                async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                    assert r.status == 200
                    text = await r.text()
                metrics = _parse_prometheus(text)
                node, label = f'node="{lead}"', f'group="0",node="{lead}"'
                assert metrics[f"shoal_term{{{label}}}"] == st["term"]
                assert metrics[f"shoal_is_leader{{{label}}}"] == 1
                assert metrics[f"shoal_applied_index{{{label}}}"] >= st["applied"]
                assert metrics[f"shoal_kv_revision{{{node}}}"] == 6
                assert metrics[f"shoal_proposals_total{{{label}}}"] >= 6
                assert "# TYPE shoal_term gauge" in text
                for peer in (1, 2, 3):
                    assert metrics[f'shoal_peer_match_index{{{label},peer="{peer}"}}'] > 0

                # a follower's view
                f = min(i for i in c.servers if i != lead)
                async with http.get(f"http://127.0.0.1:{c.http[f - 1]}/status") as r:
                    fst = await r.json()
                assert fst["role"] == "follower" and fst["leader"] == lead and fst["id"] == f
                async with http.get(f"http://127.0.0.1:{c.http[f - 1]}/metrics") as r:
                    fm = _parse_prometheus(await r.text())
                assert fm[f'shoal_is_leader{{group="0",node="{f}"}}'] == 0
    run(main())


def _parse_prometheus(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^(\S+?(?:\{[^}]*\})?)\s+(\S+)$", line)
        assert m, line
        out[m.group(1)] = float(m.group(2))
    return out
