"""A simulated run recorded for replay: what `shoal sim --seed N --timeline out.html` draws.

`TimelineWorld` is the `World` with a recorder attached where the world already acts: after
every event it notes each node whose role, term, leader, commit, applied or last index (or
up/paused/down) changed; it notes every message when sent and when first delivered (never
delivered: lost, or cut off by a partition); every change to the set of cut links; and every
line the world logs (nemesis actions, restarts, membership). A campaign's worlds are plain
`World`s, so recording costs a campaign nothing.

The record is plain JSON-ready lists (times in virtual microseconds), compact enough to embed
in one page: for 5 nodes and 20,000 steps it is a few megabytes. Past `MAX_RECORDS` rows of
one kind, recording of that kind stops and the record says it was truncated. Pure: no I/O."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ..consensus.messages import Message, NodeId
from .campaign import SeedResult, run_seed
from .host import Host, Input, Step
from .world import SimConfig, World

MAX_RECORDS = 400_000  # rows per kind; a longer run is recorded up to here


def _kind(m: object) -> str:
    return m.type.name if isinstance(m, Message) else type(m).__name__


class TimelineWorld(World):
    def __init__(self, seed: int, cfg: SimConfig):
        self.frames: list[list[Any]] = []  # [t, node, state, role, term, leader, commit, applied, last]
        self.messages: list[list[Any]] = []  # [sent, delivered or -1, src, dst, kind, term, entries, reject]
        self.cuts: list[list[Any]] = []  # [t, [[src, dst], ...]]: the cut links from t on
        self.notes: list[list[Any]] = []  # [t, text]
        self.truncated: set[str] = set()
        self._seen: dict[NodeId, tuple[Any, ...]] = {}
        self._in_flight: dict[int, tuple[object, int]] = {}  # id(message) -> (it, its row)
        self._cut_seen: set[tuple[NodeId, NodeId]] = set()
        super().__init__(seed, cfg)
        self._note_nodes()

    def _room(self, rows: list[list[Any]], kind: str) -> bool:
        if len(rows) < MAX_RECORDS:
            return True
        self.truncated.add(kind)
        return False

    def _step_once(self) -> None:
        super()._step_once()
        self._note_nodes()
        if self.net.cut != self._cut_seen and self._room(self.cuts, "cuts"):
            self._cut_seen = set(self.net.cut)
            self.cuts.append([self.now, sorted([a, b] for a, b in self._cut_seen)])

    def _note_nodes(self) -> None:
        for i, h in self.hosts.items():
            st = h.engine.status()
            state = "paused" if h.up and h.paused else "up" if h.up else "down"
            now = (state, st.role, st.term, st.leader, st.commit, h.replica.applied, st.last_index)
            if self._seen.get(i) != now and self._room(self.frames, "frames"):
                self._seen[i] = now
                self.frames.append([self.now, i, *now])

    def _send(self, h: Host, m: object) -> None:
        if self._room(self.messages, "messages"):
            self._in_flight[id(m)] = (m, len(self.messages))  # the message kept: ids stay unique
            self.messages.append([self.now, -1, h.id, m.dst, _kind(m),  # type: ignore[attr-defined]
                                  getattr(m, "term", 0), len(getattr(m, "entries", ()) or ()),
                                  bool(getattr(m, "reject", False))])
        super()._send(h, m)

    def input(self, h: Host, item: Input) -> None:
        if isinstance(item, Step):
            sent = self._in_flight.pop(id(item.msg), None)
            if sent is not None:
                self.messages[sent[1]][1] = self.now
        super().input(h, item)

    def log(self, text: str) -> None:
        super().log(text)
        if self._room(self.notes, "notes"):
            self.notes.append([self.now, text])

    def record(self, result: SeedResult) -> dict[str, Any]:
        """The run as the timeline page reads it; `result` is its verdict."""
        cfg = {k: (sorted(v) if isinstance(v, frozenset) else v) for k, v in asdict(self.cfg).items()}
        return {"seed": self.seed, "config": cfg, "replay": self.cfg.replay_command(self.seed),
                "nodes": sorted(self.hosts), "end": self.now, "frames": self.frames,
                "messages": self.messages, "cuts": self.cuts, "notes": self.notes,
                "truncated": sorted(self.truncated), "stats": result.stats,
                "committed": result.committed, "ops": result.ops, "verdict": result.verdict,
                "violation": None if result.ok else {"t": self.now, "text": result.violation}}


def record_seed(seed: int, cfg: SimConfig) -> tuple[SeedResult, dict[str, Any]]:
    """Run one seed as the campaign does, recording it; its result and its record."""
    world = TimelineWorld(seed, cfg)
    result = run_seed(seed, cfg, world=world)
    return result, world.record(result)
