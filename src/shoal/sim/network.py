"""A simulated network: per-message latency drawn from a distribution, loss, duplication,
reordering (latencies overlap), and partitions described by which links are cut."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..consensus.messages import NodeId


@dataclass
class LinkFaults:
    drop: float = 0.0
    duplicate: float = 0.0
    min_latency_us: int = 200
    mean_latency_us: int = 1500
    tail: float = 0.02  # probability of a slow outlier (10-50x the mean)


class Network:
    def __init__(self, nodes: list[NodeId], rng: random.Random):
        self.nodes = nodes
        self.rng = rng
        self.faults = LinkFaults()
        self.cut: set[tuple[NodeId, NodeId]] = set()  # directed links that drop everything
        self.partition_name = "none"

    def latencies(self, src: NodeId, dst: NodeId) -> list[int]:
        """Delivery delays (µs) for one message: [] if lost, two if duplicated."""
        f = self.faults
        if (src, dst) in self.cut or self.rng.random() < f.drop:
            return []
        copies = 2 if self.rng.random() < f.duplicate else 1
        out = []
        for _ in range(copies):
            lat = f.min_latency_us + int(self.rng.expovariate(1.0 / f.mean_latency_us))
            if self.rng.random() < f.tail:
                lat *= self.rng.randint(10, 50)
            out.append(lat)
        return out

    def heal(self) -> None:
        self.cut.clear()
        self.partition_name = "none"

    def partition(self, groups: list[set[NodeId]], name: str) -> None:
        """Only nodes that share a group can talk."""
        self.cut = {
            (a, b) for a in self.nodes for b in self.nodes
            if a != b and not any(a in g and b in g for g in groups)
        }
        self.partition_name = name

    def random_partition(self) -> None:
        nodes = list(self.nodes)
        self.rng.shuffle(nodes)
        n = len(nodes)
        kind = self.rng.choice(["halves", "isolated", "majorities-ring", "bridge"])
        if kind == "halves":
            k = self.rng.randint(1, n // 2)
            self.partition([set(nodes[:k]), set(nodes[k:])], f"halves {sorted(nodes[:k])}|{sorted(nodes[k:])}")
        elif kind == "isolated":
            self.partition([{nodes[0]}, set(nodes[1:])], f"isolated {nodes[0]}")
        elif kind == "bridge" and n >= 3:
            mid = n // 2
            a, b = set(nodes[:mid]), set(nodes[mid + 1 :])
            self.partition([a | {nodes[mid]}, b | {nodes[mid]}], f"bridge via {nodes[mid]}")
        else:
            # Each node sees its ring neighbours: every node sees a majority, no two the same one.
            k = (n // 2 + 1) // 2
            pos = {node: i for i, node in enumerate(nodes)}

            def far(a: NodeId, b: NodeId) -> bool:
                d = abs(pos[a] - pos[b])
                return min(d, n - d) > k

            self.cut = {(a, b) for a in nodes for b in nodes if a != b and far(a, b)}
            self.partition_name = "majorities-ring"
