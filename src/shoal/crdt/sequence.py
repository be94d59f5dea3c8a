"""A sequence CRDT for ordering messages in a conversation: RGA (Roh et al. 2011), as a tree.

Why RGA and not Logoot/LSEQ: an RGA position is "right after element X", which is exactly
what a reply or an appended message means, and its identifiers stay one dot plus one counter
however many inserts land in one spot, where Logoot/LSEQ identifiers grow with the density of
inserts. And RGA does not interleave concurrent runs typed forward (Kleppmann et al.,
"Interleaving anomalies in collaborative text editors", 2019): two replicas that each append a
run of messages at the same point end up with one run after the other, never shuffled
together, while Logoot and LSEQ may interleave them item by item.

Every element is a node: its id is a dot (replica, n), its parent the element it was inserted
after (None: the head), and its timestamp a Lamport clock, one more than the largest the
inserting replica knew. The order is a depth-first walk of this tree from the head, visiting
each node's children by descending (timestamp, replica, n). A new element's timestamp is
larger than any sibling its replica had seen, so it lands right after its parent; elements
inserted concurrently after the same parent are ordered by timestamp then replica id, the same
on every replica; and a run appended by one replica is a chain of children, walked whole
before its concurrent sibling's run.

The nodes are a grow-only set: a deleted element stays as a skeleton node (id, parent,
timestamp) because a concurrent insert may be anchored to it. Its content is not kept: the
contents are a DotFun dot -> value with a causal context, so a delete is a delta with no
store and the element's dot in its context, and it sticks: a state that still holds the
element merged later cannot bring it back. Metadata: one skeleton node per element ever
inserted (no garbage collection: that would need to know every replica has seen the delete),
plus the compact causal context.

Deltas may arrive before their parent's (anti-entropy does not order them): such an element is
kept but not shown until its parent arrives. An RGA is not embeddable in an OR-Map: its
skeleton is state outside the dot store, which a map's remove could not reach."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple, Self

from . import wire
from .causal import Causal, CausalContext, Dot, DotFun, DotStore, dot_from_wire, dot_wire
from .errors import MergeError


class Node(NamedTuple):
    parent: Dot | None  # the element this one was inserted after; None: the head
    ts: int  # Lamport timestamp: orders siblings, latest first


class RGA(Causal):
    """A replicated growable array: insert after an element, delete an element."""

    TYPE = "rga"
    EMBEDDABLE = False
    __slots__ = ("_nodes", "_max_ts", "_order")
    _store: DotFun

    def __init__(self) -> None:
        super().__init__()
        self._nodes: dict[Dot, Node] = {}  # grow-only; replaced, never changed in place
        self._max_ts = 0
        self._order: list[Dot] | None = None  # every node in sequence order; a cache

    def _empty_store(self) -> DotFun:
        return DotFun()

    def _read_store(self, raw: Any, where: str) -> DotStore:
        return DotFun.from_wire(raw, where, wire.value)

    def _with(self, store: DotStore, ctx: CausalContext) -> Self:
        out = super()._with(store, ctx)
        out._nodes, out._max_ts, out._order = {}, 0, None  # a delta holds only its own nodes
        return out

    # Operations.

    def insert_after(self, replica: str, anchor: Dot | None, value: Any) -> RGA:
        """Insert `value` right after the element `anchor` (deleted or not; None: at the head)."""
        wire.replica_id(replica)
        value = wire.value(value)
        if anchor is not None and anchor not in self._nodes:
            raise ValueError(f"no element {anchor} to insert after")
        dot = self._ctx.next_dot(replica)
        node = Node(anchor, self._max_ts + 1)
        if node.ts > wire.MAX_INT:
            raise ValueError("Lamport timestamp would leave the 64-bit range")
        delta = self._with(DotFun({dot: value}), CausalContext.of([dot]))
        delta._nodes, delta._max_ts = {dot: node}, node.ts
        order = self._order
        self._apply(delta)
        assert self._store.get(dot, _MISSING) is not _MISSING and self._nodes[dot] == node
        if order is not None:
            # Its timestamp is the largest of all, so the new element is its anchor's first
            # child and comes right after it: patch the order instead of walking the tree.
            if anchor is None:
                self._order = [dot, *order]
            elif order and order[-1] == anchor:  # an append
                self._order = [*order, dot]
            elif anchor in order:  # else the anchor waits for its own parent: so does this
                at = order.index(anchor) + 1
                self._order = order[:at] + [dot] + order[at:]
        return delta

    def insert(self, replica: str, index: int, value: Any) -> RGA:
        """Insert `value` so that it is shown at `index` (0 <= index <= len)."""
        ids = self.ids()
        if type(index) is not int or not 0 <= index <= len(ids):
            raise ValueError(f"index {index!r} out of range 0..{len(ids)}")
        return self.insert_after(replica, ids[index - 1] if index else None, value)

    def append(self, replica: str, value: Any) -> RGA:
        """Insert `value` after the last element, shown or deleted: successive appends form a
        chain, which keeps a run of them together against concurrent appends."""
        order = self._ordered()
        return self.insert_after(replica, order[-1] if order else None, value)

    def delete(self, element: Dot) -> RGA:
        """Delete the element `element` (a no-op delta if it is already deleted)."""
        if element not in self._nodes:
            raise ValueError(f"no element {element} to delete")
        delta = self._with(DotFun(), CausalContext.of([element]))
        self._apply(delta)
        assert element not in self._store
        return delta

    def delete_at(self, index: int) -> RGA:
        ids = self.ids()
        if type(index) is not int or not 0 <= index < len(ids):
            raise ValueError(f"index {index!r} out of range 0..{len(ids) - 1}")
        return self.delete(ids[index])

    # Reading.

    def _ordered(self) -> list[Dot]:
        """Every reachable node, deleted or not, in sequence order."""
        if self._order is None:
            nodes = self._nodes
            children: dict[Dot | None, list[Dot]] = {}
            for d, n in nodes.items():
                children.setdefault(n.parent, []).append(d)
            for kids in children.values():
                kids.sort(key=lambda d: (nodes[d].ts, d))  # ascending: the stack pops largest
            order: list[Dot] = []
            stack = list(children.get(None, ()))
            while stack:
                d = stack.pop()
                order.append(d)
                stack.extend(children.get(d, ()))
            assert len(order) <= len(nodes)  # a node with an unknown parent is not reached
            self._order = order
        return self._order

    def items(self) -> list[tuple[Dot, Any]]:
        """(id, value) of each shown element, in order."""
        live = self._store
        return [(d, live.get(d)) for d in self._ordered() if d in live]

    def ids(self) -> list[Dot]:
        live = self._store
        return [d for d in self._ordered() if d in live]

    def value(self) -> list[Any]:
        return [v for _, v in self.items()]

    def __len__(self) -> int:
        return len(self.ids())

    def __iter__(self) -> Iterator[Any]:
        return iter(self.value())

    @property
    def nodes(self) -> int:
        """Skeleton nodes kept (elements ever inserted and received): the metadata cost."""
        return len(self._nodes)

    # Join and wire.

    def merge(self, other: Self) -> bool:
        self.check_mergeable(other)
        new: dict[Dot, Node] = {}
        for d, node in other._nodes.items():
            mine = self._nodes.get(d)
            if mine is None:
                parent = node.parent
                if parent is not None and parent in self._nodes and \
                        self._nodes[parent].ts >= node.ts:
                    raise MergeError(f"element {d} is not later than its parent {parent}")
                new[d] = node
            elif mine != node:
                raise MergeError(f"element {d} has two places: {mine} and {node}")
        changed = super().merge(other)  # raises before changing anything, too
        if new:
            self._nodes = {**self._nodes, **new}
            self._max_ts = max(self._max_ts, max(n.ts for n in new.values()))
            self._order = None
            changed = True
        return changed

    def __eq__(self, other: object) -> bool:
        return super().__eq__(other) and isinstance(other, RGA) and self._nodes == other._nodes

    def to_wire(self) -> dict[str, Any]:
        nodes = [[dot_wire(d), None if n.parent is None else dot_wire(n.parent), n.ts]
                 for d, n in sorted(self._nodes.items())]
        return {**super().to_wire(), "nodes": nodes}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = cls._fields(raw, "store", "ctx", "nodes")
        out = cls()._load(f)
        where = f"{cls.TYPE}.nodes"
        nodes: dict[Dot, Node] = {}
        for i, entry in enumerate(wire.items(f["nodes"], where)):
            d, p, ts = wire.items(entry, f"{where}[{i}]", 3)
            dot = dot_from_wire(d, f"{where}[{i}][0]")
            parent = None if p is None else dot_from_wire(p, f"{where}[{i}][1]")
            if dot in nodes:
                wire.fail(f"{where}[{i}][0]", f"element {dot} appears twice")
            if parent == dot:
                wire.fail(f"{where}[{i}][1]", f"element {dot} is its own parent")
            if dot not in out._ctx:
                wire.fail(f"{where}[{i}][0]", f"element {dot} is not in the causal context")
            nodes[dot] = Node(parent, wire.integer(ts, f"{where}[{i}][2]", 1))
        for i, (dot, node) in enumerate(nodes.items()):
            if node.parent in nodes and nodes[node.parent].ts >= node.ts:  # type: ignore[index]
                wire.fail(f"{where}[{i}]", f"element {dot} is not later than its parent")
        for dot in out._store.dots():
            if dot not in nodes:
                wire.fail(f"{cls.TYPE}.store", f"element {dot} has no node")
        out._nodes, out._max_ts = nodes, max((n.ts for n in nodes.values()), default=0)
        return out


_MISSING = object()
