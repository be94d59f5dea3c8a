"""Key-based compaction (cleanup.policy=compact): Kafka's log cleaner, as pure logic.

Over the closed segments (the active one is never cleaned), the latest offset of each key is
found first; then every batch is rewritten keeping only the records that are their key's
latest, and dropping a tombstone (a null value) once its timestamp is `delete.retention.ms`
old, so a consumer that read the key's earlier value has had that long to see the delete.
Offsets are kept: a rewritten batch keeps its base offset and its last offset delta, its
records their offset deltas, so the log has gaps and a consumer skips them, as in Kafka. A
batch whose records all stay is kept byte for byte; one left empty disappears; the others are
re-encoded with their codec and a new CRC-32C (events/protocol/records.py). Records without a
key are kept (Kafka refuses them on a compacted topic; we keep what was acknowledged).

Deterministic: the same segments and the same `now_ms` (the proposing leader's clock,
carried in the LogCompact entry) give the same bytes on every replica."""

from __future__ import annotations

from collections.abc import Iterable

from .protocol.records import RecordBatch


def latest_offsets(batches: Iterable[RecordBatch]) -> dict[bytes, int]:
    """Each key's last offset in `batches`."""
    latest: dict[bytes, int] = {}
    for b in batches:
        for r in b.records:
            if r.key is not None:
                latest[r.key] = b.offset_of(r)
    return latest


def clean(raw: bytes, batch: RecordBatch, latest: dict[bytes, int], tombstones_before: int
          ) -> bytes | None:
    """`batch` (whose bytes are `raw`) with only the records compaction keeps; None if none.
    Control batches (transaction markers) are kept as they are."""
    if batch.is_control:
        return raw
    kept = [r for r in batch.records
            if r.key is None or (latest.get(r.key) == batch.offset_of(r) and not (
                r.value is None and batch.timestamp_of(r) < tombstones_before))]
    if len(kept) == len(batch.records):
        return raw
    if not kept:
        return None
    batch.records = kept
    return batch.encode()
