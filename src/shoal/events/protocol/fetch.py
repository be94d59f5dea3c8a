"""Fetch (API key 1): the request and response schemas, versions 0-17.

Transcribed field for field from Kafka's FetchRequest.json and FetchResponse.json (names in
snake_case; types, versions, nullable, tagged and flexible versions, defaults and ignorable as
declared there), for the interpreter in schema.py. Flexible versions: request 12+, response
12+.

Request history, as Kafka's FetchRequest.json records it:

- Version 1 is the same as version 0.
- Starting in Version 2, the requester must be able to handle Kafka Log Message format version
  1.
- Version 3 adds MaxBytes.  Starting in version 3, the partition ordering in the request is
  now relevant.  Partitions will be processed in the order they appear in the request.
- Version 4 adds IsolationLevel.  Starting in version 4, the reqestor must be able to handle
  Kafka log message format version 2.
- Version 5 adds LogStartOffset to indicate the earliest available offset of partition data
  that can be consumed.
- Version 6 is the same as version 5.
- Version 7 adds incremental fetch request support.
- Version 8 is the same as version 7.
- Version 9 adds CurrentLeaderEpoch, as described in KIP-320.
- Version 10 indicates that we can use the ZStd compression algorithm, as described in
  KIP-110. Version 12 adds flexible versions support as well as epoch validation through the
  `LastFetchedEpoch` field
- Version 13 replaces topic names with topic IDs (KIP-516). May return UNKNOWN_TOPIC_ID error
  code.
- Version 14 is the same as version 13 but it also receives a new error called
  OffsetMovedToTieredStorageException(KIP-405)
- Version 15 adds the ReplicaState which includes new field ReplicaEpoch and the ReplicaId.
  Also, deprecate the old ReplicaId field and set its default value to -1. (KIP-903)
- Version 16 is the same as version 15 (KIP-951).
- Version 17 adds directory id support from KIP-853

Response history, as Kafka's FetchResponse.json records it:

- Version 1 adds throttle time.
- Version 2 and 3 are the same as version 1.
- Version 4 adds features for transactional consumption.
- Version 5 adds LogStartOffset to indicate the earliest available offset of partition data
  that can be consumed.
- Starting in version 6, we may return KAFKA_STORAGE_ERROR as an error code.
- Version 7 adds incremental fetch request support.
- Starting in version 8, on quota violation, brokers send out responses before throttling.
- Version 9 is the same as version 8.
- Version 10 indicates that the response data can use the ZStd compression algorithm, as
  described in KIP-110. Version 12 adds support for flexible versions, epoch detection through
  the `TruncationOffset` field, and leader discovery through the `CurrentLeader` field
- Version 13 replaces the topic name field with topic ID (KIP-516).
- Version 14 is the same as version 13 but it also receives a new error called
  OffsetMovedToTieredStorageException (KIP-405)
- Version 15 is the same as version 14 (KIP-903).
- Version 16 adds the 'NodeEndpoints' field (KIP-951).
- Version 17 no changes to the response (KIP-853).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import ClassVar

from .schema import (
    INT8,
    INT16,
    INT32,
    INT64,
    RECORDS,
    STRING,
    UUID,
    Array,
    Request,
    Response,
    Struct,
    Versions,
    f,
)


@dataclass(kw_only=True, slots=True)
class ReplicaState(Struct):
    """ReplicaState."""

    #: The replica ID of the follower, or -1 if this request is from a consumer.
    replica_id: int = f(INT32, "15+", default=-1)
    #: The epoch of this follower, or -1 if not available.
    replica_epoch: int = f(INT64, "15+", default=-1)


@dataclass(kw_only=True, slots=True)
class FetchPartition(Struct):
    """The partitions to fetch."""

    #: The partition index.
    partition: int = f(INT32, "0+")
    #: The current leader epoch of the partition.
    current_leader_epoch: int = f(INT32, "9+", default=-1, ignorable=True)
    #: The message offset.
    fetch_offset: int = f(INT64, "0+")
    #: The epoch of the last fetched record or -1 if there is none
    last_fetched_epoch: int = f(INT32, "12+", default=-1)
    #: The earliest available offset of the follower replica.  The field is only used when the
    #: request is sent by the follower.
    log_start_offset: int = f(INT64, "5+", default=-1, ignorable=True)
    #: The maximum bytes to fetch from this partition.  See KIP-74 for cases where this limit may
    #: not be honored.
    partition_max_bytes: int = f(INT32, "0+")
    #: The directory id of the follower fetching
    replica_directory_id: uuid.UUID = f(UUID, "17+", tagged="17+", tag=0, ignorable=True)


@dataclass(kw_only=True, slots=True)
class FetchTopic(Struct):
    """The topics to fetch."""

    #: The name of the topic to fetch.
    topic: str = f(STRING, "0-12", ignorable=True)
    #: The unique topic ID
    topic_id: uuid.UUID = f(UUID, "13+", ignorable=True)
    #: The partitions to fetch.
    partitions: list[FetchPartition] = f(Array(FetchPartition), "0+")


@dataclass(kw_only=True, slots=True)
class ForgottenTopic(Struct):
    """In an incremental fetch request, the partitions to remove."""

    #: The topic name.
    topic: str = f(STRING, "7-12", ignorable=True)
    #: The unique topic ID
    topic_id: uuid.UUID = f(UUID, "13+", ignorable=True)
    #: The partitions indexes to forget.
    partitions: list[int] = f(Array(INT32), "7+")


@dataclass(kw_only=True, slots=True)
class EpochEndOffset(Struct):
    """In case divergence is detected based on the `LastFetchedEpoch` and `FetchOffset` in the
    request, this field indicates the largest epoch and its end offset such that subsequent
    records are known to diverge.
    """

    epoch: int = f(INT32, "12+", default=-1)
    end_offset: int = f(INT64, "12+", default=-1)


@dataclass(kw_only=True, slots=True)
class LeaderIdAndEpoch(Struct):
    """LeaderIdAndEpoch."""

    #: The ID of the current leader or -1 if the leader is unknown.
    leader_id: int = f(INT32, "12+", default=-1)
    #: The latest known leader epoch
    leader_epoch: int = f(INT32, "12+", default=-1)


@dataclass(kw_only=True, slots=True)
class SnapshotId(Struct):
    """In the case of fetching an offset less than the LogStartOffset, this is the end offset and
    epoch that should be used in the FetchSnapshot request.
    """

    end_offset: int = f(INT64, "0+", default=-1)
    epoch: int = f(INT32, "0+", default=-1)


@dataclass(kw_only=True, slots=True)
class AbortedTransaction(Struct):
    """The aborted transactions."""

    #: The producer id associated with the aborted transaction.
    producer_id: int = f(INT64, "4+")
    #: The first offset in the aborted transaction.
    first_offset: int = f(INT64, "4+")


@dataclass(kw_only=True, slots=True)
class PartitionData(Struct):
    """The topic partitions."""

    #: The partition index.
    partition_index: int = f(INT32, "0+")
    #: The error code, or 0 if there was no fetch error.
    error_code: int = f(INT16, "0+")
    #: The current high water mark.
    high_watermark: int = f(INT64, "0+")
    #: The last stable offset (or LSO) of the partition. This is the last offset such that the
    #: state of all transactional records prior to this offset have been decided (ABORTED or
    #: COMMITTED)
    last_stable_offset: int = f(INT64, "4+", default=-1, ignorable=True)
    #: The current log start offset.
    log_start_offset: int = f(INT64, "5+", default=-1, ignorable=True)
    #: In case divergence is detected based on the `LastFetchedEpoch` and `FetchOffset` in the
    #: request, this field indicates the largest epoch and its end offset such that subsequent
    #: records are known to diverge
    diverging_epoch: EpochEndOffset = f(EpochEndOffset, "12+", tagged="12+", tag=0)
    current_leader: LeaderIdAndEpoch = f(LeaderIdAndEpoch, "12+", tagged="12+", tag=1)
    #: In the case of fetching an offset less than the LogStartOffset, this is the end offset and
    #: epoch that should be used in the FetchSnapshot request.
    snapshot_id: SnapshotId = f(SnapshotId, "12+", tagged="12+", tag=2)
    #: The aborted transactions.
    aborted_transactions: list[AbortedTransaction] | None = f(
        Array(AbortedTransaction), "4+", nullable="4+", ignorable=True,
    )
    #: The preferred read replica for the consumer to use on its next fetch request
    preferred_read_replica: int = f(INT32, "11+", default=-1)
    #: The record data.
    records: bytes | None = f(RECORDS, "0+", nullable="0+")


@dataclass(kw_only=True, slots=True)
class FetchableTopicResponse(Struct):
    """The response topics."""

    #: The topic name.
    topic: str = f(STRING, "0-12", ignorable=True)
    #: The unique topic ID
    topic_id: uuid.UUID = f(UUID, "13+", ignorable=True)
    #: The topic partitions.
    partitions: list[PartitionData] = f(Array(PartitionData), "0+")


@dataclass(kw_only=True, slots=True)
class NodeEndpoint(Struct):
    """Endpoints for all current-leaders enumerated in PartitionData, with errors
    NOT_LEADER_OR_FOLLOWER & FENCED_LEADER_EPOCH.
    """

    #: The ID of the associated node.
    node_id: int = f(INT32, "16+")
    #: The node's hostname.
    host: str = f(STRING, "16+")
    #: The node's port.
    port: int = f(INT32, "16+")
    #: The rack of the node, or null if it has not been assigned to a rack.
    rack: str | None = f(STRING, "16+", nullable="16+", default=None)


@dataclass(kw_only=True, slots=True)
class FetchRequest(Request):
    """Fetch request body (API key 1)."""

    API_KEY: ClassVar[int] = 1
    VERSIONS: ClassVar[Versions] = Versions.parse("0-17")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("12+")

    #: The clusterId if known. This is used to validate metadata fetches prior to broker
    #: registration.
    cluster_id: str | None = f(
        STRING, "12+", nullable="12+", tagged="12+", tag=0, default=None, ignorable=True,
    )
    #: The broker ID of the follower, of -1 if this request is from a consumer.
    replica_id: int = f(INT32, "0-14", default=-1)
    replica_state: ReplicaState = f(ReplicaState, "15+", tagged="15+", tag=1)
    #: The maximum time in milliseconds to wait for the response.
    max_wait_ms: int = f(INT32, "0+")
    #: The minimum bytes to accumulate in the response.
    min_bytes: int = f(INT32, "0+")
    #: The maximum bytes to fetch.  See KIP-74 for cases where this limit may not be honored.
    max_bytes: int = f(INT32, "3+", default=2147483647, ignorable=True)
    #: This setting controls the visibility of transactional records. Using READ_UNCOMMITTED
    #: (isolation_level = 0) makes all records visible. With READ_COMMITTED (isolation_level = 1),
    #: non-transactional and COMMITTED transactional records are visible. To be more concrete,
    #: READ_COMMITTED returns all data from offsets smaller than the current LSO (last stable
    #: offset), and enables the inclusion of the list of aborted transactions in the result, which
    #: allows consumers to discard ABORTED transactional records
    isolation_level: int = f(INT8, "4+", ignorable=True)
    #: The fetch session ID.
    session_id: int = f(INT32, "7+", ignorable=True)
    #: The fetch session epoch, which is used for ordering requests in a session.
    session_epoch: int = f(INT32, "7+", default=-1, ignorable=True)
    #: The topics to fetch.
    topics: list[FetchTopic] = f(Array(FetchTopic), "0+")
    #: In an incremental fetch request, the partitions to remove.
    forgotten_topics_data: list[ForgottenTopic] = f(Array(ForgottenTopic), "7+")
    #: Rack ID of the consumer making this request
    rack_id: str = f(STRING, "11+", ignorable=True)


@dataclass(kw_only=True, slots=True)
class FetchResponse(Response):
    """Fetch response body (API key 1)."""

    API_KEY: ClassVar[int] = 1
    VERSIONS: ClassVar[Versions] = Versions.parse("0-17")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("12+")

    #: The duration in milliseconds for which the request was throttled due to a quota violation,
    #: or zero if the request did not violate any quota.
    throttle_time_ms: int = f(INT32, "1+", ignorable=True)
    #: The top level response error code.
    error_code: int = f(INT16, "7+", ignorable=True)
    #: The fetch session ID, or 0 if this is not part of a fetch session.
    session_id: int = f(INT32, "7+")
    #: The response topics.
    responses: list[FetchableTopicResponse] = f(Array(FetchableTopicResponse), "0+")
    #: Endpoints for all current-leaders enumerated in PartitionData, with errors
    #: NOT_LEADER_OR_FOLLOWER & FENCED_LEADER_EPOCH.
    node_endpoints: list[NodeEndpoint] = f(Array(NodeEndpoint), "16+", tagged="16+", tag=0)
