"""Is a member healthy? One verdict, read from the node's `status()` dict alone, so that the
HTTP port's `/health` and `shoal status` (which gets the same dict over the client protocol)
can never disagree.

A member is unhealthy when

- it knows no leader (`leader` is 0): it can neither commit a write nor serve a linearizable
  read until an election ends;
- its configuration has no voters (`voters` is empty): it has not learnt the membership yet (a
  `--join` member whose addition is not applied here), so it takes no part in the cluster;
- its applied index trails its commit index by more than MAX_APPLY_LAG_ENTRIES: the entries are
  durable, but its state machine is so far behind that reads here wait, or, serializable, are
  stale;
- it cannot persist (`storage_error`: its disk is full or failing), so it takes no writes and
  acknowledges nothing until the disk takes its log again;
- an alarm is raised (`alarms`), as etcd's /health reports one: NOSPACE means the cluster
  refuses writes that add data until an operator frees space and clears it;
- it is `recovering`: `--repair` cut entries from its log that it may have acknowledged, so it
  votes for no one and counts for no quorum until its leader has brought it back.

The bound is etcd's (`maxGapBetweenApplyAndCommitIndex`, beyond which an etcd member refuses
proposals). A busy healthy node trails by at most the entries of one apply batch, hundreds
under the heaviest benchmark load; five thousand means its apply has stalled or cannot keep up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_APPLY_LAG_ENTRIES = 5_000


def unhealthy_reasons(status: Mapping[str, Any],
                      max_apply_lag_entries: int = MAX_APPLY_LAG_ENTRIES) -> list[str]:
    """Why the member whose `status()` this is is unhealthy, in plain words; [] = healthy.
    Reads only the keys leader, voters, commit, applied, storage_error, alarms and recovering."""
    assert max_apply_lag_entries >= 0, max_apply_lag_entries
    reasons = []
    if not status.get("leader"):
        reasons.append("no leader")
    if not status.get("voters"):
        reasons.append("no voters in its configuration")
    commit, applied = int(status.get("commit") or 0), int(status.get("applied") or 0)
    lag = commit - applied
    if lag > max_apply_lag_entries:
        reasons.append(f"applied index {applied} trails commit index {commit} by {lag} entries "
                       f"(more than {max_apply_lag_entries})")
    if status.get("storage_error"):
        reasons.append(str(status["storage_error"]))
    for member, alarm in status.get("alarms") or ():
        reasons.append(f"alarm {alarm} raised for member {member}")
    if status.get("recovering"):
        reasons.append("recovering from a repaired log: it votes and counts for no quorum "
                       "until it holds everything its leader had committed")
    return reasons
