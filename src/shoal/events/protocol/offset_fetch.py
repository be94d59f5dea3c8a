"""OffsetFetch (API key 9): the request and response schemas, versions 0-9.

Transcribed field for field from Kafka's OffsetFetchRequest.json and OffsetFetchResponse.json
(names in snake_case; types, versions, nullable, tagged and flexible versions, defaults and
ignorable as declared there), for the interpreter in schema.py. Flexible versions: request 6+,
response 6+.

Request history, as Kafka's OffsetFetchRequest.json records it:

- In version 0, the request read offsets from ZK.
- Starting in version 1, the broker supports fetching offsets from the internal
  __consumer_offsets topic.
- Starting in version 2, the request can contain a null topics array to indicate that offsets
  for all topics should be fetched. It also returns a top level error code for group or
  coordinator level errors.
- Version 3, 4, and 5 are the same as version 2.
- Version 6 is the first flexible version.
- Version 7 is adding the require stable flag.
- Version 8 is adding support for fetching offsets for multiple groups at a time.
- Version 9 is the first version that can be used with the new consumer group protocol
  (KIP-848). It adds the MemberId and MemberEpoch fields. Those are filled in and validated
  when the new consumer protocol is used.

Response history, as Kafka's OffsetFetchResponse.json records it:

- Version 1 is the same as version 0.
- Version 2 adds a top-level error code.
- Version 3 adds the throttle time.
- Starting in version 4, on quota violation, brokers send out responses before throttling.
- Version 5 adds the leader epoch to the committed offset.
- Version 6 is the first flexible version.
- Version 7 adds pending offset commit as new error response on partition level.
- Version 8 is adding support for fetching offsets for multiple groups
- Version 9 is the first version that can be used with the new consumer group protocol
  (KIP-848). The response is the same as version 8 but can return STALE_MEMBER_EPOCH and
  UNKNOWN_MEMBER_ID errors when the new consumer group protocol is used. Supported errors: -
  GROUP_AUTHORIZATION_FAILED (version 0+) - NOT_COORDINATOR (version 0+) -
  COORDINATOR_NOT_AVAILABLE (version 0+) - COORDINATOR_LOAD_IN_PROGRESS (version 0+) -
  GROUP_ID_NOT_FOUND (version 0+) - UNSTABLE_OFFSET_COMMIT (version 7+) - UNKNOWN_MEMBER_ID
  (version 9+) - STALE_MEMBER_EPOCH (version 9+)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .schema import (
    BOOL,
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
class OffsetFetchRequestTopic(Struct):
    """Each topic we would like to fetch offsets for, or null to fetch offsets for all topics."""

    #: The topic name.
    name: str = f(STRING, "0-7")
    #: The partition indexes we would like to fetch offsets for.
    partition_indexes: list[int] = f(Array(INT32), "0-7")


@dataclass(kw_only=True, slots=True)
class OffsetFetchRequestTopics(Struct):
    """Each topic we would like to fetch offsets for, or null to fetch offsets for all topics."""

    #: The topic name.
    name: str = f(STRING, "8+")
    #: The partition indexes we would like to fetch offsets for.
    partition_indexes: list[int] = f(Array(INT32), "8+")


@dataclass(kw_only=True, slots=True)
class OffsetFetchRequestGroup(Struct):
    """Each group we would like to fetch offsets for."""

    #: The group ID.
    group_id: str = f(STRING, "8+")
    #: The member ID assigned by the group coordinator if using the new consumer protocol
    #: (KIP-848).
    member_id: str | None = f(STRING, "9+", nullable="9+", default=None, ignorable=True)
    #: The member epoch if using the new consumer protocol (KIP-848).
    member_epoch: int = f(INT32, "9+", default=-1, ignorable=True)
    #: Each topic we would like to fetch offsets for, or null to fetch offsets for all topics.
    topics: list[OffsetFetchRequestTopics] | None = f(
        Array(OffsetFetchRequestTopics), "8+", nullable="8+",
    )


@dataclass(kw_only=True, slots=True)
class OffsetFetchResponsePartition(Struct):
    """The responses per partition."""

    #: The partition index.
    partition_index: int = f(INT32, "0-7")
    #: The committed message offset.
    committed_offset: int = f(INT64, "0-7")
    #: The leader epoch.
    committed_leader_epoch: int = f(INT32, "5-7", default=-1, ignorable=True)
    #: The partition metadata.
    metadata: str | None = f(STRING, "0-7", nullable="0-7")
    #: The error code, or 0 if there was no error.
    error_code: int = f(INT16, "0-7")


@dataclass(kw_only=True, slots=True)
class OffsetFetchResponseTopic(Struct):
    """The responses per topic."""

    #: The topic name.
    name: str = f(STRING, "0-7")
    #: The responses per partition
    partitions: list[OffsetFetchResponsePartition] = f(Array(OffsetFetchResponsePartition), "0-7")


@dataclass(kw_only=True, slots=True)
class OffsetFetchResponsePartitions(Struct):
    """The responses per partition."""

    #: The partition index.
    partition_index: int = f(INT32, "8+")
    #: The committed message offset.
    committed_offset: int = f(INT64, "8+")
    #: The leader epoch.
    committed_leader_epoch: int = f(INT32, "8+", default=-1, ignorable=True)
    #: The partition metadata.
    metadata: str | None = f(STRING, "8+", nullable="8+")
    #: The partition-level error code, or 0 if there was no error.
    error_code: int = f(INT16, "8+")


@dataclass(kw_only=True, slots=True)
class OffsetFetchResponseTopics(Struct):
    """The responses per topic."""

    #: The topic name.
    name: str = f(STRING, "8+")
    #: The responses per partition
    partitions: list[OffsetFetchResponsePartitions] = f(Array(OffsetFetchResponsePartitions), "8+")


@dataclass(kw_only=True, slots=True)
class OffsetFetchResponseGroup(Struct):
    """The responses per group id."""

    #: The group ID.
    group_id: str = f(STRING, "8+")
    #: The responses per topic.
    topics: list[OffsetFetchResponseTopics] = f(Array(OffsetFetchResponseTopics), "8+")
    #: The group-level error code, or 0 if there was no error.
    error_code: int = f(INT16, "8+")


@dataclass(kw_only=True, slots=True)
class OffsetFetchRequest(Request):
    """OffsetFetch request body (API key 9)."""

    API_KEY: ClassVar[int] = 9
    VERSIONS: ClassVar[Versions] = Versions.parse("0-9")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("6+")

    #: The group to fetch offsets for.
    group_id: str = f(STRING, "0-7")
    #: Each topic we would like to fetch offsets for, or null to fetch offsets for all topics.
    topics: list[OffsetFetchRequestTopic] | None = f(
        Array(OffsetFetchRequestTopic), "0-7", nullable="2-7",
    )
    #: Each group we would like to fetch offsets for
    groups: list[OffsetFetchRequestGroup] = f(Array(OffsetFetchRequestGroup), "8+")
    #: Whether broker should hold on returning unstable offsets but set a retriable error code for
    #: the partitions.
    require_stable: bool = f(BOOL, "7+")


@dataclass(kw_only=True, slots=True)
class OffsetFetchResponse(Response):
    """OffsetFetch response body (API key 9)."""

    API_KEY: ClassVar[int] = 9
    VERSIONS: ClassVar[Versions] = Versions.parse("0-9")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("6+")

    #: The duration in milliseconds for which the request was throttled due to a quota violation,
    #: or zero if the request did not violate any quota.
    throttle_time_ms: int = f(INT32, "3+", ignorable=True)
    #: The responses per topic.
    topics: list[OffsetFetchResponseTopic] = f(Array(OffsetFetchResponseTopic), "0-7")
    #: The top-level error code, or 0 if there was no error.
    error_code: int = f(INT16, "2-7", ignorable=True)
    #: The responses per group id.
    groups: list[OffsetFetchResponseGroup] = f(Array(OffsetFetchResponseGroup), "8+")
