"""The dependency graph between transactions, and the search for its cycles.

Nodes are transaction ids. An edge u -> v carries a bit mask of the kinds of dependency that
order u before v: ww (v overwrote u's write), wr (v read u's write), rw (v overwrote what u
read), process (u came before v on one process) and realtime (u completed before v was
invoked). For each kind the graph remembers one key that gave the edge, as evidence.

Cycles are found as Elle does. A search is a pass over the graph restricted to a set of allowed
kinds: Tarjan's algorithm splits it into strongly connected components (a cycle lies inside
one), and within each component we look for a cycle of the wanted shape through a chosen edge
u -> v, by a shortest-path search from v back to u that never leaves the component:

- any cycle: breadth-first search;
- a cycle with exactly one rw edge (G-single): the rw edge u -> v closes one iff v reaches u
  by ww and wr edges alone. Which rw edges do is read off reachability sets of the ww+wr
  components, kept as bit sets (Python integers), so one search finds the whole answer, and a
  breadth-first search over ww and wr edges then recovers the shortest such cycle;
- a cycle with as few rw edges as possible (G2, and the realtime and process variants):
  Dijkstra, with rw edges so dear that one costs more than any path of other edges.

A few candidate edges per component are tried, within a work budget, and the shortest cycle
kept, so a cycle is short but not always the shortest of the component. Each pass reports at
most one cycle per component.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from .txn_history import Key

WW, WR, RW, PROCESS, REALTIME = 1, 2, 4, 8, 16
DATA = WW | WR | RW
ORDER = PROCESS | REALTIME
KIND_NAMES = {WW: "ww", WR: "wr", RW: "rw", PROCESS: "process", REALTIME: "realtime"}
_LABEL_ORDER = (WW, WR, PROCESS, REALTIME, RW)  # a step shows the first of these it has
_MAX_TRIES = 8  # candidate edges per component
_WORK = 400_000  # edge visits per component and pass, shared by the candidates

Adjacency = dict[int, list[tuple[int, int]]]  # node -> [(successor, kinds mask)]


@dataclass(frozen=True, slots=True)
class Step:
    """One edge of a cycle: `source` -> `target` by dependency `kind` (one bit), on `key`."""

    source: int
    target: int
    kind: int
    key: Key | None

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]

    def arrow(self) -> str:
        """`-wr(x)->`, or `-realtime->` for an edge with no key."""
        key = f"({self.key})" if self.key is not None else ""
        return f"-{self.kind_name}{key}->"


class TxnGraph:
    """Edges between transactions, each with the kinds that make it and a key per kind."""

    def __init__(self) -> None:
        self.out: dict[int, dict[int, int]] = {}
        self.why: dict[tuple[int, int, int], Key] = {}

    def add(self, u: int, v: int, kind: int, key: Key | None = None) -> None:
        if u == v:
            return  # a transaction's dependence on itself orders nothing
        targets = self.out.setdefault(u, {})
        targets[v] = targets.get(v, 0) | kind
        if key is not None:
            self.why.setdefault((u, v, kind), key)

    def mask(self, u: int, v: int) -> int:
        return self.out.get(u, {}).get(v, 0)

    def edge_count(self) -> int:
        return sum(len(targets) for targets in self.out.values())

    def restricted(self, allowed: int) -> Adjacency:
        """The edges that have one of the `allowed` kinds, with masks cut down to them."""
        adj: Adjacency = {}
        for u, targets in self.out.items():
            kept = [(v, m & allowed) for v, m in targets.items() if m & allowed]
            if kept:
                adj[u] = kept
        return adj

    def step(self, u: int, v: int, kind: int) -> Step:
        assert self.mask(u, v) & kind, (u, v, kind)
        return Step(u, v, kind, self.why.get((u, v, kind)))


def strongly_connected(adj: Adjacency) -> list[list[int]]:
    """Tarjan's strongly connected components of `adj`, iteratively (histories are deeper than
    Python's stack). Every node appears in one component, and a component comes after every
    component it reaches (reverse topological order)."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    components: list[list[int]] = []
    nodes = set(adj)
    for targets in adj.values():
        nodes.update(v for v, _ in targets)
    for root in sorted(nodes):
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(adj.get(root, ())))]
        while work:
            node, successors = work[-1]
            descended = False
            for nxt, _ in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(adj.get(nxt, ()))))
                    descended = True
                    break
                if nxt in on_stack and index[nxt] < low[node]:
                    low[node] = index[nxt]
            if descended:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components


def cycles(adj: Adjacency) -> list[list[int]]:
    """The components of `adj` that hold a cycle (no self-loops: the graph has none)."""
    return [sorted(c) for c in strongly_connected(adj) if len(c) > 1]


def _inside(adj: Adjacency, members: Iterable[int]) -> Adjacency:
    keep = set(members)
    return {u: [(v, m) for v, m in adj.get(u, ()) if v in keep] for u in keep}


def _bfs(adj: Adjacency, src: int, dst: int, usable: int) -> list[int] | None:
    """The shortest path src ... dst over edges with a kind in `usable`."""
    prev: dict[int, int] = {src: src}
    queue = deque([src])
    while queue:
        node = queue.popleft()
        if node == dst:
            return _unwind(prev, src, dst)
        for nxt, m in adj.get(node, ()):
            if m & usable and nxt not in prev:
                prev[nxt] = node
                queue.append(nxt)
    return None


def _cheapest(adj: Adjacency, src: int, dst: int, cheap: int) -> list[int] | None:
    """The path src ... dst with the fewest edges lacking a `cheap` kind, then the fewest edges."""
    dear = len(adj) + 1  # costlier than any path of cheap edges
    dist = {src: 0}
    prev: dict[int, int] = {src: src}
    heap = [(0, src)]
    while heap:
        d, node = heapq.heappop(heap)
        if node == dst:
            return _unwind(prev, src, dst)
        if d > dist[node]:
            continue
        for nxt, m in adj.get(node, ()):
            nd = d + (1 if m & cheap else dear)
            if nd < dist.get(nxt, nd + 1):
                dist[nxt] = nd
                prev[nxt] = node
                heapq.heappush(heap, (nd, nxt))
    return None


def _unwind(prev: dict[int, int], src: int, dst: int) -> list[int]:
    path = [dst]
    while path[-1] != src:
        path.append(prev[path[-1]])
    path.reverse()
    return path


def _label(mask: int) -> int:
    return next(kind for kind in _LABEL_ORDER if mask & kind)


def _steps(graph: TxnGraph, adj: Adjacency, nodes: list[int], first: int) -> list[Step]:
    """The cycle nodes[0] -> nodes[1] -> ... -> nodes[0], its first edge labelled `first` and
    the others by their strongest allowed kind, rotated to start at its smallest id."""
    assert len(nodes) >= 2 and len(set(nodes)) == len(nodes), nodes
    masks = {(u, v): m for u in nodes for v, m in adj.get(u, ())}
    steps = []
    for i, u in enumerate(nodes):
        v = nodes[(i + 1) % len(nodes)]
        steps.append(graph.step(u, v, first if i == 0 else _label(masks[(u, v)])))
    start = min(range(len(steps)), key=lambda i: steps[i].source)
    return steps[start:] + steps[:start]


def _rw_count(steps: list[Step]) -> int:
    return sum(step.kind == RW for step in steps)


def _best_cycle(
    graph: TxnGraph,
    adj: Adjacency,
    candidates: list[tuple[int, int]],
    label: int,
    search: str,
    usable: int,
) -> list[Step] | None:
    """The best cycle u -> v ... u over `candidates` (u, v), found by `search` ("bfs" over
    `usable` kinds, or "cheapest" counting edges without a `usable` kind), tried within the
    work budget; the first edge is labelled `label` (REALTIME|PROCESS: whichever it has)."""
    edges = sum(len(targets) for targets in adj.values())
    tries = max(1, min(_MAX_TRIES, _WORK // (edges + 1)))
    best: list[Step] | None = None
    for u, v in candidates[:tries]:
        path = _bfs(adj, v, u, usable) if search == "bfs" else _cheapest(adj, v, u, usable)
        if path is None:
            continue
        first = label
        if label == ORDER:
            first = REALTIME if graph.mask(u, v) & REALTIME else PROCESS
        steps = _steps(graph, adj, [u, *path[:-1]], first)
        if best is None or (_rw_count(steps), len(steps)) < (_rw_count(best), len(best)):
            best = steps
    return best


def _edges_with(adj: Adjacency, want: int, without: int = 0) -> list[tuple[int, int]]:
    """Edges (u, v) of `adj` having a kind in `want` and none in `without`."""
    return [
        (u, v)
        for u in sorted(adj)
        for v, m in adj[u]
        if m & want and not m & without
    ]


def ww_cycles(graph: TxnGraph) -> list[list[Step]]:
    """One cycle of ww edges per component of the ww graph (G0)."""
    adj = graph.restricted(WW)
    found = []
    for component in cycles(adj):
        inner = _inside(adj, component)
        cycle = _best_cycle(graph, inner, _edges_with(inner, WW), WW, "bfs", WW)
        assert cycle is not None, "a component with an edge has a cycle through it"
        found.append(cycle)
    return found


def wr_cycles(graph: TxnGraph) -> list[list[Step]]:
    """One cycle of ww and wr edges through a wr-only edge per component of the ww+wr graph
    (G1c)."""
    adj = graph.restricted(WW | WR)
    found = []
    for component in cycles(adj):
        inner = _inside(adj, component)
        # A wr edge that is also ww is not needed: the ww pass saw it already.
        cycle = _best_cycle(graph, inner, _edges_with(inner, WR, WW), WR, "bfs", WW | WR)
        if cycle is not None:
            found.append(cycle)
    return found


def rw_cycles(graph: TxnGraph) -> tuple[list[list[Step]], list[list[Step]]]:
    """Per component of the data graph that has rw-only edges: a cycle with exactly one rw edge
    if there is one (G-single), else one with as few rw edges as could be found (G2)."""
    adj = graph.restricted(DATA)
    singles, others = [], []
    for component in cycles(adj):
        inner = _inside(adj, component)
        rw_only = _edges_with(inner, RW, WW | WR)
        if not rw_only:
            continue  # its cycles are all ww and wr: G0 and G1c
        closing = _closed_by_free_path(inner, rw_only, WW | WR)
        if closing:
            cycle = _best_cycle(graph, inner, closing, RW, "bfs", WW | WR)
            assert cycle is not None and _rw_count(cycle) == 1, cycle
            singles.append(cycle)
            continue
        cycle = _best_cycle(graph, inner, rw_only, RW, "cheapest", WW | WR)
        if cycle is not None:
            others.append(cycle)
    return singles, others


def order_cycles(graph: TxnGraph, order: int) -> list[list[Step]]:
    """Per component of the whole graph with `order` (realtime and/or process) edges: a cycle
    through one of them, with as few rw edges as could be found."""
    adj = graph.restricted(DATA | order)
    found = []
    for component in cycles(adj):
        inner = _inside(adj, component)
        # An order edge that is also ww or wr is not needed: the data edge orders it already.
        candidates = _edges_with(inner, order, WW | WR)
        cycle = _best_cycle(graph, inner, candidates, ORDER, "cheapest", WW | WR | order)
        if cycle is not None:
            found.append(cycle)
    return found


def _closed_by_free_path(
    adj: Adjacency, edges: list[tuple[int, int]], free: int
) -> list[tuple[int, int]]:
    """The edges (u, v) such that v reaches u over `free` edges of `adj`.

    Reachability between the components of the free subgraph is a bit set per component,
    filled in reverse topological order (Tarjan's output order), so every query is a bit test.
    """
    free_adj: Adjacency = {u: [(v, m) for v, m in targets if m & free] for u, targets in
                           adj.items()}
    components = strongly_connected(free_adj)
    where = {node: i for i, component in enumerate(components) for node in component}
    reach: list[int] = []
    for i, component in enumerate(components):
        bits = 1 << i
        for node in component:
            for nxt, _ in free_adj.get(node, ()):
                j = where[nxt]
                if j != i:
                    assert j < i, "Tarjan emits a component after those it reaches"
                    bits |= reach[j]
        reach.append(bits)
    return [(u, v) for u, v in edges if reach[where[v]] >> where[u] & 1]
