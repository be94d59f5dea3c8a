"""The transaction layer's planted bugs and the simulation that catches each: what
`shoal sim --workload bank|list-append --bug NAME` runs, and the bounds tests/test_sim_txn.py
holds the harness to (as sim/bugs.py does for the engines and the replica).

Each bug is a switch in production code, off unless a simulator turns it on: the participant's
in `KVStore.bugs` (shoal.kv.intents.BUGS), the coordinator's in `TxnClient(bugs=...)`
(shoal.txn.coordinator.BUGS). `seeds` leaves room over the first catching seed found when the
bound was set (noted per bug, with how many of 12 seeds caught it), for either workload."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .txn_world import COORDINATOR_BUGS, STORE_BUGS, TxnSimConfig

# Shorter runs than the default (60 transactions): these bugs show within the first dozen.
QUICK: dict[str, Any] = dict(ops=60)
# Splits are what loses intents: three in the middle of the workload, each cut over while what
# it moves is locked (TxnSimConfig.cut_over_on_intent, on by default).
SPLIT_TEETH: dict[str, Any] = dict(QUICK, splits=3)


@dataclass(frozen=True)
class TxnPlantedBug:
    name: str
    breaks: str  # the rule it breaks, in a line
    workload: str  # the workload `--bug` runs by default
    seeds: int  # a violation comes up within this many seeds of `profile`, either workload
    profile: dict[str, Any] = field(default_factory=dict)

    def config(self, workload: str | None = None, **overrides: Any) -> TxnSimConfig:
        return TxnSimConfig(**{"workload": workload or self.workload, **self.profile,
                               **overrides, "bugs": frozenset([self.name])})


TXN_PLANTED = {b.name: b for b in (
    # First caught (of 12 seeds) when the bounds were set: bank seed 0 (12/12), list-append
    # seed 1 (11/12), as the bank's total, Elle's G2/G-single and lost appends.
    TxnPlantedBug("commit-without-every-vote", "the coordinator commits on the record group's "
                  "yes alone, without every shard's vote", "bank", 5, QUICK),
    # bank seed 0 (12/12), list-append seed 0 (12/12): the total, Elle's duplicate elements.
    TxnPlantedBug("apply-before-decision", "a shard applies a prepared write at once, before "
                  "the transaction is decided", "bank", 5, QUICK),
    # bank seed 0 (12/12), list-append seed 0 (12/12): the total; Elle's G2, G-single and
    # incompatible orders (lost updates).
    TxnPlantedBug("skip-read-validation", "a prepare neither checks nor locks the versions the "
                  "transaction read (lost updates, write skew)", "list-append", 5, QUICK),
    # bank seed 2 (9/12), list-append seed 1 (8/12): the total, lost appends.
    TxnPlantedBug("forget-intents-on-split", "a split copies the keys of the range it moves, but "
                  "not their intents", "bank", 10, SPLIT_TEETH),
)}
assert set(TXN_PLANTED) == STORE_BUGS | COORDINATOR_BUGS, "every planted bug has its simulation"


def txn_planted(name: str) -> TxnPlantedBug:
    """The transaction bug called `name`, or a ValueError listing them."""
    if name in TXN_PLANTED:
        return TXN_PLANTED[name]
    raise ValueError(f"unknown transaction bug {name!r}; planted: {', '.join(sorted(TXN_PLANTED))}")
