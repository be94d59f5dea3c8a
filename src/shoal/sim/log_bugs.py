"""The event log's planted bugs and the simulation that catches each: what
`shoal sim --workload log --bug NAME` runs, and the bounds tests/test_sim_log.py holds the
harness to (as sim/bugs.py does for the engines and the replica).

Both are switches in the production replica (shoal.replica.replica.BUGS), off unless the
simulator turns them on, and both are caught by the log workload's checks (sim/log_workload.py):

- ack-before-quorum: the leader answers a LogAppend once the entry is in its own log. A leader
  cut off or killed before a quorum has it is replaced by one that never had it: acknowledged
  records go missing, or the offsets acknowledged are given to other records.
- lose-idempotence: a replica restored from a snapshot (a restart, a snapshot sent to a lagging
  follower) forgets its idempotent producers. A retried first batch is written again there,
  a retried later one refused (UNKNOWN_PRODUCER_ID), so its log parts from the others':
  duplicates, missing records, a refusal of a producer in good standing, or an offset that
  reads differently on two replicas."""

from __future__ import annotations

from typing import Any

from .bugs import PlantedBug
from .world import MS

# The log workload on three nodes under a busy nemesis (every 60 ms), with a snapshot every 20
# entries so restores from snapshots come often. No disk replacement: at snapshot intervals
# this short the world's membership check trips over it with the register workload as well
# (SimConfig(nodes=3, steps=5000, nemesis_mean_us=60_000, snapshot_every=20), seed 5), which
# is the replica's to answer, not the log's.
LOG_PROFILE: dict[str, Any] = dict(workload="log", nodes=3, steps=5000, leases=False,
                                   churn=False, nemesis_mean_us=60 * MS, snapshot_every=20)

# When the bounds were set: ack-before-quorum first caught at seed 0 (22 of 30 seeds),
# lose-idempotence at seed 0 (30 of 30).
LOG_PLANTED = {b.name: b for b in (
    PlantedBug("ack-before-quorum", "the leader answers a LogAppend when it is in its own log, "
               "before a quorum has it", "raft", 10, LOG_PROFILE),
    PlantedBug("lose-idempotence", "a replica restored from a snapshot forgets its idempotent "
               "producers, so a retried batch is written again", "raft", 5, LOG_PROFILE),
)}
