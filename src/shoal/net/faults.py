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
        """Validate and apply changes; `seed=` restarts the generator. All or nothing."""
        allowed = {"drop", "delay", "jitter", "block_to", "block_from", "seed"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"unknown fault settings {sorted(unknown)}")
        drop = changes.get("drop", self.drop)
        if not (isinstance(drop, int | float) and 0.0 <= drop <= 1.0):
            raise ValueError(f"drop must be a probability in [0, 1], got {drop!r}")
        for name in ("delay", "jitter"):
            v = changes.get(name, getattr(self, name))
            if not (isinstance(v, int | float) and 0.0 <= v <= MAX_DELAY):
                raise ValueError(f"{name} must be in [0, {MAX_DELAY}] seconds, got {v!r}")
        blocks = {n: set(changes.get(n, getattr(self, n))) for n in ("block_to", "block_from")}
        for name, nodes in blocks.items():
            if not all(type(x) is int and x > 0 for x in nodes):
                raise ValueError(f"{name} must be node ids, got {sorted(nodes, key=repr)!r}")
        self.drop = float(drop)
        self.delay = float(changes.get("delay", self.delay))
        self.jitter = float(changes.get("jitter", self.jitter))
        self.block_to, self.block_from = blocks["block_to"], blocks["block_from"]
        if "seed" in changes:
            self.seed = int(changes["seed"])
            self._rng = random.Random(self.seed)

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
