"""OffsetCommit (API key 8): the request and response schemas, versions 0-9.

Transcribed field for field from Kafka's OffsetCommitRequest.json and
OffsetCommitResponse.json (names in snake_case; types, versions, nullable, tagged and flexible
versions, defaults and ignorable as declared there), for the interpreter in schema.py.
Flexible versions: request 8+, response 8+.

Request history, as Kafka's OffsetCommitRequest.json records it:

- Version 1 adds timestamp and group membership information, as well as the commit timestamp.
- Version 2 adds retention time.  It removes the commit timestamp added in version 1.
- Version 3 and 4 are the same as version 2.
- Version 5 removes the retention time, which is now controlled only by a broker
  configuration.
- Version 6 adds the leader epoch for fencing.
- version 7 adds a new field called groupInstanceId to indicate member identity across
  restarts.
- Version 8 is the first flexible version.
- Version 9 is the first version that can be used with the new consumer group protocol
  (KIP-848). The request is the same as version 8. CommitTimestamp has been removed from v2
  and later.

Response history, as Kafka's OffsetCommitResponse.json records it:

- Versions 1 and 2 are the same as version 0.
- Version 3 adds the throttle time to the response.
- Starting in version 4, on quota violation, brokers send out responses before throttling.
- Versions 5 and 6 are the same as version 4.
- Version 7 offsetCommitRequest supports a new field called groupInstanceId to indicate member
  identity across restarts.
- Version 8 is the first flexible version.
- Version 9 is the first version that can be used with the new consumer group protocol
  (KIP-848). The response is the same as version 8 but can return STALE_MEMBER_EPOCH when the
  new consumer group protocol is used and GROUP_ID_NOT_FOUND when the group does not exist for
  both protocols. Supported errors: - GROUP_AUTHORIZATION_FAILED (version 0+) -
  NOT_COORDINATOR (version 0+) - COORDINATOR_NOT_AVAILABLE (version 0+) -
  COORDINATOR_LOAD_IN_PROGRESS (version 0+) - ILLEGAL_GENERATION (version 1+) -
  UNKNOWN_MEMBER_ID (version 1+) - INVALID_COMMIT_OFFSET_SIZE (version 0+) -
  FENCED_MEMBER_EPOCH (version 7+) - GROUP_ID_NOT_FOUND (version 9+) - STALE_MEMBER_EPOCH
  (version 9+)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .schema import (
    INT16,
    INT32,
    INT64,
    STRING,
    Array,
    Request,
    Response,
    Struct,
    Versions,
    f,
)


@dataclass(kw_only=True, slots=True)
class OffsetCommitRequestPartition(Struct):
    """Each partition to commit offsets for."""

    #: The partition index.
    partition_index: int = f(INT32, "0+")
    #: The message offset to be committed.
    committed_offset: int = f(INT64, "0+")
    #: The leader epoch of this partition.
    committed_leader_epoch: int = f(INT32, "6+", default=-1, ignorable=True)
    #: The timestamp of the commit.
    commit_timestamp: int = f(INT64, "1", default=-1)
    #: Any associated metadata the client wants to keep.
    committed_metadata: str | None = f(STRING, "0+", nullable="0+")


@dataclass(kw_only=True, slots=True)
class OffsetCommitRequestTopic(Struct):
    """The topics to commit offsets for."""

    #: The topic name.
    name: str = f(STRING, "0+")
    #: Each partition to commit offsets for.
    partitions: list[OffsetCommitRequestPartition] = f(Array(OffsetCommitRequestPartition), "0+")


@dataclass(kw_only=True, slots=True)
class OffsetCommitResponsePartition(Struct):
    """The responses for each partition in the topic."""

    #: The partition index.
    partition_index: int = f(INT32, "0+")
    #: The error code, or 0 if there was no error.
    error_code: int = f(INT16, "0+")


@dataclass(kw_only=True, slots=True)
class OffsetCommitResponseTopic(Struct):
    """The responses for each topic."""

    #: The topic name.
    name: str = f(STRING, "0+")
    #: The responses for each partition in the topic.
    partitions: list[OffsetCommitResponsePartition] = f(Array(OffsetCommitResponsePartition), "0+")


@dataclass(kw_only=True, slots=True)
class OffsetCommitRequest(Request):
    """OffsetCommit request body (API key 8)."""

    API_KEY: ClassVar[int] = 8
    VERSIONS: ClassVar[Versions] = Versions.parse("0-9")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("8+")

    #: The unique group identifier.
    group_id: str = f(STRING, "0+")
    #: The generation of the group if using the classic group protocol or the member epoch if using
    #: the consumer protocol.
    generation_id_or_member_epoch: int = f(INT32, "1+", default=-1, ignorable=True)
    #: The member ID assigned by the group coordinator.
    member_id: str = f(STRING, "1+", ignorable=True)
    #: The unique identifier of the consumer instance provided by end user.
    group_instance_id: str | None = f(STRING, "7+", nullable="7+", default=None)
    #: The time period in ms to retain the offset.
    retention_time_ms: int = f(INT64, "2-4", default=-1, ignorable=True)
    #: The topics to commit offsets for.
    topics: list[OffsetCommitRequestTopic] = f(Array(OffsetCommitRequestTopic), "0+")


@dataclass(kw_only=True, slots=True)
class OffsetCommitResponse(Response):
    """OffsetCommit response body (API key 8)."""

    API_KEY: ClassVar[int] = 8
    VERSIONS: ClassVar[Versions] = Versions.parse("0-9")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("8+")

    #: The duration in milliseconds for which the request was throttled due to a quota violation,
    #: or zero if the request did not violate any quota.
    throttle_time_ms: int = f(INT32, "3+", ignorable=True)
    #: The responses for each topic.
    topics: list[OffsetCommitResponseTopic] = f(Array(OffsetCommitResponseTopic), "0+")
