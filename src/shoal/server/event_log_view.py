"""The event log as the dashboard shows it (part of a node's /status): each topic's partitions
with the group that holds each, its leader and its high watermark, and each consumer group's
committed offsets with their lag behind it.

What a node knows is what it has applied: the topics and the committed offsets from the meta
group (reserved keys no client reads, hence here), the high watermark only of the partitions
it hosts (None for the others; another node reports those, and the dashboard takes the
highest). Lag is the high watermark minus the committed offset, where both are known here.
Bounded: at most MAX_TOPICS topics and MAX_OFFSETS committed offsets are listed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..events.coordinator_store import OffsetKey, decode_offset, parse_key
from ..events.topics import OFFSETS_PREFIX, TOPIC_END, TOPIC_PREFIX, Topic, TopicError
from ..kv.keyvalue import prefix_end
from ..kv.partition import LogState
from ..kv.requests import RangeRequest

if TYPE_CHECKING:
    from .node import Node

MAX_TOPICS, MAX_OFFSETS = 100, 2000


def event_log(node: Node) -> dict[str, Any] | None:
    """None while no topic exists, so a cluster without the event log reports nothing."""
    rows = node.kv.range(RangeRequest(TOPIC_PREFIX, TOPIC_END, limit=MAX_TOPICS)).kvs
    if not rows:
        return None
    topics: dict[str, list[dict[str, Any]]] = {}
    high: dict[tuple[str, int], int] = {}
    for kv in rows:
        try:
            topic = Topic.decode(kv.key, kv.value)
        except TopicError:
            continue  # the Kafka port logs a malformed entry; the dashboard just skips it
        parts = topics[topic.name] = []
        for i, gid in enumerate(topic.groups):
            g = node.groups.get(gid)
            hw = LogState.of(g.replica.kv).next_offset if g is not None else None
            if hw is not None:
                high[(topic.name, i)] = hw
            parts.append({"partition": i, "group": gid, "high_watermark": hw,
                          "leader": g.replica.leader if g is not None else None})
    consumers: dict[str, list[dict[str, Any]]] = {}
    committed = node.kv.range(RangeRequest(OFFSETS_PREFIX, prefix_end(OFFSETS_PREFIX),
                                           limit=MAX_OFFSETS)).kvs
    for kv in committed:
        try:
            key = parse_key(OFFSETS_PREFIX, kv.key)
            if not isinstance(key, OffsetKey):
                continue
            offset = decode_offset(kv.value).offset
        except (ValueError, KeyError):
            continue
        hw = high.get((key.topic, key.partition))
        consumers.setdefault(key.group_id, []).append(
            {"topic": key.topic, "partition": key.partition, "committed": offset,
             "lag": max(0, hw - offset) if hw is not None else None})
    return {"topics": topics, "consumer_groups": consumers}
