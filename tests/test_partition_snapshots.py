"""An event-log partition's snapshots name its segments (kv/partition.py): in the simulated
world, with the production replicas, a snapshot stays small however long the log, a trim is
followed by a snapshot at once, and a follower that lagged past the snapshot installs it with
the segments' bytes, its files then byte-identical to the leader's."""

from __future__ import annotations

from shoal.events.protocol.records import NewRecord, build_batch
from shoal.events.segments import REWRITE_CHECKPOINT, MemoryDirectory
from shoal.kv.requests import Command, LogAppendRequest, LogTrimRequest
from shoal.sim import World
from test_replica import SEC, everywhere, leader, quiet, spy_advances, submit

DAY = 24 * 3600 * 1000


def append(w: World, i: int) -> None:
    batch = build_batch([NewRecord(b"v%03d" % i + b"x" * 200, None, 1000)]).encode()
    _, answers = submit(w, Command(LogAppendRequest(batch, 1000, 1000, 7 * DAY)))
    assert w.run_until(lambda: bool(answers), 3 * SEC) and answers[0].error is None


def files(w: World, node: int) -> dict[str, bytes]:
    """The segment files (the checkpoint is the node's own: it ran the trim, or not)."""
    d = w.hosts[node].replica.kv.files
    assert isinstance(d, MemoryDirectory)
    return {n: bytes(d.files[n]) for n in d.names() if n != REWRITE_CHECKPOINT}


def test_a_lagging_follower_installs_the_segments_a_small_snapshot_names(monkeypatch):
    w = World(7, quiet(snapshot_every=20))
    lead = leader(w)
    behind = next(i for i in w.hosts if i != lead.id)
    w.crash(behind)
    for i in range(60):
        append(w, i)
    kv = lead.replica.kv
    assert len(kv.segments.segments) > 5 and lead.replica.snapshot_index > 0
    snap = lead.replica._snapshot
    assert snap is not None and len(snap.data) < kv.segments.size // 4  # named, not copied

    _, answers = submit(w, Command(LogTrimRequest(kv.segments.segments[2].base)))
    assert w.run_until(lambda: bool(answers), 3 * SEC) and answers[0].error is None
    trimmed = lead.replica.applied
    assert lead.replica.snapshot_index == trimmed  # taken right after the trim

    seen = spy_advances(monkeypatch)
    w.restart(behind)
    everywhere(w, lambda h: h.replica.applied >= trimmed)
    assert any(node == behind and snap for node, _, snap in seen), \
        "the lagging node caught up without a snapshot: the test lost its point"
    assert files(w, behind) == files(w, lead.id)
    w.finish()
