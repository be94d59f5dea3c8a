"""Produce (API key 0): the request and response schemas, versions 0-11.

Transcribed field for field from Kafka's ProduceRequest.json and ProduceResponse.json (names
in snake_case; types, versions, nullable, tagged and flexible versions, defaults and ignorable
as declared there), for the interpreter in schema.py. Flexible versions: request 9+, response
9+.

Request history, as Kafka's ProduceRequest.json records it:

- Version 1 and 2 are the same as version 0.
- Version 3 adds the transactional ID, which is used for authorization when attempting to
  write transactional data.  Version 3 also adds support for Kafka Message Format v2.
- Version 4 is the same as version 3, but the requester must be prepared to handle a
  KAFKA_STORAGE_ERROR.
- Version 5 and 6 are the same as version 3.
- Starting in version 7, records can be produced using ZStandard compression.  See KIP-110.
- Starting in Version 8, response has RecordErrors and ErrorMessage. See KIP-467.
- Version 9 enables flexible versions.
- Version 10 is the same as version 9 (KIP-951).
- Version 11 adds support for new error code TRANSACTION_ABORTABLE (KIP-890).

Response history, as Kafka's ProduceResponse.json records it:

- Version 1 added the throttle time.
- Version 2 added the log append time.
- Version 3 is the same as version 2.
- Version 4 added KAFKA_STORAGE_ERROR as a possible error code.
- Version 5 added LogStartOffset to filter out spurious OutOfOrderSequenceExceptions on the
  client.
- Version 8 added RecordErrors and ErrorMessage to include information about records that
  cause the whole batch to be dropped.  See KIP-467 for details.
- Version 9 enables flexible versions.
- Version 10 adds 'CurrentLeader' and 'NodeEndpoints' as tagged fields (KIP-951)
- Version 11 adds support for new error code TRANSACTION_ABORTABLE (KIP-890).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .schema import (
    INT16,
    INT32,
    INT64,
    RECORDS,
    STRING,
    Array,
    Request,
    Response,
    Struct,
    Versions,
    f,
)


@dataclass(kw_only=True, slots=True)
class PartitionProduceData(Struct):
    """Each partition to produce to."""

    #: The partition index.
    index: int = f(INT32, "0+")
    #: The record data to be produced.
    records: bytes | None = f(RECORDS, "0+", nullable="0+")


@dataclass(kw_only=True, slots=True)
class TopicProduceData(Struct):
    """Each topic to produce to."""

    #: The topic name.
    name: str = f(STRING, "0+")
    #: Each partition to produce to.
    partition_data: list[PartitionProduceData] = f(Array(PartitionProduceData), "0+")


@dataclass(kw_only=True, slots=True)
class BatchIndexAndErrorMessage(Struct):
    """The batch indices of records that caused the batch to be dropped."""

    #: The batch index of the record that cause the batch to be dropped
    batch_index: int = f(INT32, "8+")
    #: The error message of the record that caused the batch to be dropped
    batch_index_error_message: str | None = f(STRING, "8+", nullable="8+", default=None)


@dataclass(kw_only=True, slots=True)
class LeaderIdAndEpoch(Struct):
    """LeaderIdAndEpoch."""

    #: The ID of the current leader or -1 if the leader is unknown.
    leader_id: int = f(INT32, "10+", default=-1)
    #: The latest known leader epoch
    leader_epoch: int = f(INT32, "10+", default=-1)


@dataclass(kw_only=True, slots=True)
class PartitionProduceResponse(Struct):
    """Each partition that we produced to within the topic."""

    #: The partition index.
    index: int = f(INT32, "0+")
    #: The error code, or 0 if there was no error.
    error_code: int = f(INT16, "0+")
    #: The base offset.
    base_offset: int = f(INT64, "0+")
    #: The timestamp returned by broker after appending the messages. If CreateTime is used for the
    #: topic, the timestamp will be -1.  If LogAppendTime is used for the topic, the timestamp will
    #: be the broker local time when the messages are appended.
    log_append_time_ms: int = f(INT64, "2+", default=-1, ignorable=True)
    #: The log start offset.
    log_start_offset: int = f(INT64, "5+", default=-1, ignorable=True)
    #: The batch indices of records that caused the batch to be dropped
    record_errors: list[BatchIndexAndErrorMessage] = f(
        Array(BatchIndexAndErrorMessage), "8+", ignorable=True,
    )
    #: The global error message summarizing the common root cause of the records that caused the
    #: batch to be dropped
    error_message: str | None = f(STRING, "8+", nullable="8+", default=None, ignorable=True)
    current_leader: LeaderIdAndEpoch = f(LeaderIdAndEpoch, "10+", tagged="10+", tag=0)


@dataclass(kw_only=True, slots=True)
class TopicProduceResponse(Struct):
    """Each produce response."""

    #: The topic name
    name: str = f(STRING, "0+")
    #: Each partition that we produced to within the topic.
    partition_responses: list[PartitionProduceResponse] = f(Array(PartitionProduceResponse), "0+")


@dataclass(kw_only=True, slots=True)
class NodeEndpoint(Struct):
    """Endpoints for all current-leaders enumerated in PartitionProduceResponses, with errors
    NOT_LEADER_OR_FOLLOWER.
    """

    #: The ID of the associated node.
    node_id: int = f(INT32, "10+")
    #: The node's hostname.
    host: str = f(STRING, "10+")
    #: The node's port.
    port: int = f(INT32, "10+")
    #: The rack of the node, or null if it has not been assigned to a rack.
    rack: str | None = f(STRING, "10+", nullable="10+", default=None)


@dataclass(kw_only=True, slots=True)
class ProduceRequest(Request):
    """Produce request body (API key 0)."""

    API_KEY: ClassVar[int] = 0
    VERSIONS: ClassVar[Versions] = Versions.parse("0-11")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("9+")

    #: The transactional ID, or null if the producer is not transactional.
    transactional_id: str | None = f(STRING, "3+", nullable="3+", default=None)
    #: The number of acknowledgments the producer requires the leader to have received before
    #: considering a request complete. Allowed values: 0 for no acknowledgments, 1 for only the
    #: leader and -1 for the full ISR.
    acks: int = f(INT16, "0+")
    #: The timeout to await a response in milliseconds.
    timeout_ms: int = f(INT32, "0+")
    #: Each topic to produce to.
    topic_data: list[TopicProduceData] = f(Array(TopicProduceData), "0+")


@dataclass(kw_only=True, slots=True)
class ProduceResponse(Response):
    """Produce response body (API key 0)."""

    API_KEY: ClassVar[int] = 0
    VERSIONS: ClassVar[Versions] = Versions.parse("0-11")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("9+")

    #: Each produce response
    responses: list[TopicProduceResponse] = f(Array(TopicProduceResponse), "0+")
    #: The duration in milliseconds for which the request was throttled due to a quota violation,
    #: or zero if the request did not violate any quota.
    throttle_time_ms: int = f(INT32, "1+", ignorable=True)
    #: Endpoints for all current-leaders enumerated in PartitionProduceResponses, with errors
    #: NOT_LEADER_OR_FOLLOWER.
    node_endpoints: list[NodeEndpoint] = f(Array(NodeEndpoint), "10+", tagged="10+", tag=0)
