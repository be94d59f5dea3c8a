"""Fault injection on a real transport: drops, delays and partitions, decided per message.

The transport asks `outgoing(dst)` before queueing each message and `incoming(src)` before
delivering each one. Decisions come from one seeded generator, so a given sequence of messages
meets the same fate on every run. Change the plan at runtime with `update`, `partition` and
`heal` (the node's admin endpoint calls these); do so from the event loop's thread, which is
the only thread the transport runs on.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from shoal.consensus.messages import NodeId

MAX_DELAY = 60.0  # seconds; longer would pin queued messages in memory for no test's benefit
_SETTINGS = frozenset({"drop", "delay", "jitter", "block_to", "block_from", "seed"})


def _is_number(v: object) -> bool:
    return type(v) in (int, float)  # not bool: `"drop": true` is a mistake, not 1.0


class FaultPlan:
    def __init__(
        self,
        *,
        drop: float = 0.0,
        delay: float = 0.0,
        jitter: float = 0.0,
        block_to: Iterable[NodeId] = (),
        block_from: Iterable[NodeId] = (),
        seed: int = 0,
    ):
        self.drop = 0.0  # probability that an outgoing message is lost
        self.delay = 0.0  # seconds added to every outgoing message
        self.jitter = 0.0  # plus uniform [0, jitter) seconds, which reorders messages
        self.block_to: set[NodeId] = set()  # sends to these nodes are dropped
        self.block_from: set[NodeId] = set()  # messages from these nodes are dropped
        self.seed = seed
        self._rng = random.Random(seed)
        self.update(drop=drop, delay=delay, jitter=jitter, block_to=block_to,
                    block_from=block_from)

    def update(self, **changes: Any) -> None:
        """Validate every change, then apply them all; `seed=` restarts the generator. A bad
        value raises ValueError naming the setting, and nothing is applied."""
        new = self.check(changes)
        self.drop, self.delay, self.jitter = new["drop"], new["delay"], new["jitter"]
        self.block_to, self.block_from = new["block_to"], new["block_from"]
        if "seed" in new:
            self.seed = new["seed"]
            self._rng = random.Random(self.seed)

    def check(self, changes: dict[str, Any]) -> dict[str, Any]:
        """The plan `changes` would give, normalised; ValueError naming the first bad setting.
        Values may come from JSON, so bools are not numbers here and lists stand for sets."""
        unknown = set(changes) - _SETTINGS
        if unknown:
            raise ValueError(f"unknown fault settings {sorted(unknown)}; known: {sorted(_SETTINGS)}")
        new: dict[str, Any] = {}
        for name, bound, what in (("drop", 1.0, "a probability in [0, 1]"),
                                  ("delay", MAX_DELAY, f"in [0, {MAX_DELAY}] seconds"),
                                  ("jitter", MAX_DELAY, f"in [0, {MAX_DELAY}] seconds")):
            v = changes.get(name, getattr(self, name))
            if not (_is_number(v) and 0.0 <= v <= bound):
                raise ValueError(f"{name} must be {what}, got {v!r}")
            new[name] = float(v)
        for name in ("block_to", "block_from"):
            v = changes.get(name, getattr(self, name))
            if isinstance(v, str | bytes | dict) or not isinstance(v, Iterable):
                raise ValueError(f"{name} must be a list of node ids, got {v!r}")
            nodes = list(v)
            if not all(type(x) is int and x > 0 for x in nodes):
                raise ValueError(f"{name} must be node ids (positive integers), got {nodes!r}")
            new[name] = set(nodes)
        if "seed" in changes:
            seed = changes["seed"]
            if type(seed) is not int:
                raise ValueError(f"seed must be an integer, got {seed!r}")
            new["seed"] = seed
        return new

    def partition(self, nodes: Iterable[NodeId]) -> None:
        """Cut this node off from `nodes` in both directions."""
        ns = set(nodes)
        self.update(block_to=self.block_to | ns, block_from=self.block_from | ns)

    def heal(self) -> None:
        """Back to a perfect network; the generator keeps its position."""
        self.update(drop=0.0, delay=0.0, jitter=0.0, block_to=(), block_from=())

    def outgoing(self, dst: NodeId) -> float | None:
        """None: drop the message. Otherwise the seconds to hold it before queueing."""
        if dst in self.block_to:
            return None
        if self.drop and self._rng.random() < self.drop:
            return None
        return self.delay + (self._rng.uniform(0.0, self.jitter) if self.jitter else 0.0)

    def incoming(self, src: NodeId) -> bool:
        """Whether a message from `src` is delivered."""
        return src not in self.block_from

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for the admin endpoint."""
        return {
            "drop": self.drop, "delay": self.delay, "jitter": self.jitter,
            "block_to": sorted(self.block_to), "block_from": sorted(self.block_from),
            "seed": self.seed,
        }
