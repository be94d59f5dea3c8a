"""Every planted bug and the simulation that catches it: what `shoal sim --bug NAME` runs, and
the bounds tests/test_sim.py and tests/test_replica.py hold the harness to.

A planted bug is a deliberately broken rule in an engine or the replica, switched on by name.
The default profile (five nodes, pre-vote, a nemesis every 250 ms) is tuned to explore, not to
break one rule fast; each bug here gets a harsher profile that reaches its unsafe schedule
within `seeds` seeds (bounds leave room over the first catching seed found when they were set).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .world import MS, SimConfig

# Three nodes, no pre-vote, slow links, a nemesis every 60 ms and one entry per append, so the
# rare schedules that expose a broken engine rule (a vote lost in a crash, an append accepted
# without its predecessor) come up within a few dozen seeds instead of tens of thousands. No
# membership churn and no lease client: they cost time per seed and do not reach the engine.
ENGINE_TEETH: dict[str, Any] = dict(
    nodes=3, pre_vote=False, mean_latency_us=8000, steps=5000, nemesis_mean_us=60_000,
    max_msg_bytes=1, churn=False, leases=False)
# The replica's rules (membership, leases) need churn and leases, and a nemesis every 60 ms:
# disk replacements, crashes and leader changes come often.
REPLICA_TEETH: dict[str, Any] = dict(nodes=3, steps=10_000, nemesis_mean_us=60 * MS)


@dataclass(frozen=True)
class PlantedBug:
    name: str
    breaks: str  # the rule it breaks, in a line
    engine: str
    seeds: int  # a violation comes up within this many seeds of `profile`
    profile: dict[str, Any] = field(default_factory=dict)

    def config(self, **overrides: Any) -> SimConfig:
        return SimConfig(**{"engine": self.engine, **self.profile, **overrides,
                            "bugs": frozenset([self.name])})


PLANTED = {b.name: b for b in (
    PlantedBug("skip-log-matching", "a follower accepts appends without checking the previous "
               "entry's term", "raft", 50, ENGINE_TEETH),
    PlantedBug("read-without-readindex", "the leader answers reads from its own state, without "
               "a quorum round", "raft", 50, ENGINE_TEETH),
    # a lost vote needs two candidates in one term and a crash between: fewer clients, a
    # busier nemesis (first caught at seed 29 when the bound was set)
    PlantedBug("forget-vote", "a node does not persist its vote, and votes twice after a crash",
               "raft", 60, {**ENGINE_TEETH, "clients": 4, "nemesis_mean_us": 40_000}),
    PlantedBug("skip-phase1", "a new Paxos leader goes straight to phase 2 with its own log",
               "paxos", 20, {**ENGINE_TEETH, "max_msg_bytes": 4096}),
    PlantedBug("forget-promise", "the promised ballot is not persisted across a restart",
               "paxos", 150, {**ENGINE_TEETH, "max_msg_bytes": 4096}),
    PlantedBug("apply-conf-twice", "a membership change is applied when its entry is appended "
               "and again when it commits", "raft", 20, REPLICA_TEETH),
    PlantedBug("forget-readd", "a member removed once is never added back", "raft", 20,
               REPLICA_TEETH),
    PlantedBug("expire-on-follower-clock", "a new leader expires leases without restarting "
               "their clocks, judging another node's stamps by its own clock", "raft", 40,
               REPLICA_TEETH),
)}
# Caught by scripted schedules instead (tests/test_raft_core.py's Figure 8, tests/test_paxos.py):
# random runs reach their unsafe window too rarely to demonstrate in a minute.
SCRIPTED = {
    "commit-old-terms": "tests/test_raft_core.py (the Raft paper's Figure 8, scripted)",
    "mix-ballots": "tests/test_paxos.py (a scripted five-node schedule)",
}


def planted(name: str) -> PlantedBug:
    """The bug called `name`, or a ValueError listing every name there is."""
    if name in PLANTED:
        return PLANTED[name]
    if name in SCRIPTED:
        raise ValueError(f"{name!r} is caught by a scripted schedule, not by random runs: "
                         f"see {SCRIPTED[name]}")
    raise ValueError(f"unknown bug {name!r}; planted bugs: {', '.join(sorted(PLANTED))}")
