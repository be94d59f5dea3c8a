"""ListOffsets (API key 2): the request and response schemas, versions 0-10.

Transcribed field for field from Kafka's ListOffsetsRequest.json and ListOffsetsResponse.json
(names in snake_case; types, versions, nullable, tagged and flexible versions, defaults and
ignorable as declared there), for the interpreter in schema.py. Flexible versions: request 6+,
response 6+.

Request history, as Kafka's ListOffsetsRequest.json records it:

- Version 1 removes MaxNumOffsets.  From this version forward, only a single offset can be
  returned.
- Version 2 adds the isolation level, which is used for transactional reads.
- Version 3 is the same as version 2.
- Version 4 adds the current leader epoch, which is used for fencing.
- Version 5 is the same as version 4.
- Version 6 enables flexible versions.
- Version 7 enables listing offsets by max timestamp (KIP-734).
- Version 8 enables listing offsets by local log start offset (KIP-405).
- Version 9 enables listing offsets by last tiered offset (KIP-1005).
- Version 10 enables async remote list offsets support (KIP-1075)

Response history, as Kafka's ListOffsetsResponse.json records it:

- Version 1 removes the offsets array in favor of returning a single offset. Version 1 also
  adds the timestamp associated with the returned offset.
- Version 2 adds the throttle time.
- Starting in version 3, on quota violation, brokers send out responses before throttling.
- Version 4 adds the leader epoch, which is used for fencing.
- Version 5 adds a new error code, OFFSET_NOT_AVAILABLE.
- Version 6 enables flexible versions.
- Version 7 is the same as version 6 (KIP-734).
- Version 8 enables listing offsets by local log start offset. This is the earliest log start
  offset in the local log. (KIP-405).
- Version 9 enables listing offsets by last tiered offset (KIP-1005).
- Version 10 enables async remote list offsets support (KIP-1075)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .schema import (
    INT8,
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
class ListOffsetsPartition(Struct):
    """Each partition in the request."""

    #: The partition index.
    partition_index: int = f(INT32, "0+")
    #: The current leader epoch.
    current_leader_epoch: int = f(INT32, "4+", default=-1, ignorable=True)
    #: The current timestamp.
    timestamp: int = f(INT64, "0+")
    #: The maximum number of offsets to report.
    max_num_offsets: int = f(INT32, "0", default=1)


@dataclass(kw_only=True, slots=True)
class ListOffsetsTopic(Struct):
    """Each topic in the request."""

    #: The topic name.
    name: str = f(STRING, "0+")
    #: Each partition in the request.
    partitions: list[ListOffsetsPartition] = f(Array(ListOffsetsPartition), "0+")


@dataclass(kw_only=True, slots=True)
class ListOffsetsPartitionResponse(Struct):
    """Each partition in the response."""

    #: The partition index.
    partition_index: int = f(INT32, "0+")
    #: The partition error code, or 0 if there was no error.
    error_code: int = f(INT16, "0+")
    #: The result offsets.
    old_style_offsets: list[int] = f(Array(INT64), "0")
    #: The timestamp associated with the returned offset.
    timestamp: int = f(INT64, "1+", default=-1)
    #: The returned offset.
    offset: int = f(INT64, "1+", default=-1)
    leader_epoch: int = f(INT32, "4+", default=-1)


@dataclass(kw_only=True, slots=True)
class ListOffsetsTopicResponse(Struct):
    """Each topic in the response."""

    #: The topic name
    name: str = f(STRING, "0+")
    #: Each partition in the response.
    partitions: list[ListOffsetsPartitionResponse] = f(Array(ListOffsetsPartitionResponse), "0+")


@dataclass(kw_only=True, slots=True)
class ListOffsetsRequest(Request):
    """ListOffsets request body (API key 2)."""

    API_KEY: ClassVar[int] = 2
    VERSIONS: ClassVar[Versions] = Versions.parse("0-10")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("6+")

    #: The broker ID of the requester, or -1 if this request is being made by a normal consumer.
    replica_id: int = f(INT32, "0+")
    #: This setting controls the visibility of transactional records. Using READ_UNCOMMITTED
    #: (isolation_level = 0) makes all records visible. With READ_COMMITTED (isolation_level = 1),
    #: non-transactional and COMMITTED transactional records are visible. To be more concrete,
    #: READ_COMMITTED returns all data from offsets smaller than the current LSO (last stable
    #: offset), and enables the inclusion of the list of aborted transactions in the result, which
    #: allows consumers to discard ABORTED transactional records
    isolation_level: int = f(INT8, "2+")
    #: Each topic in the request.
    topics: list[ListOffsetsTopic] = f(Array(ListOffsetsTopic), "0+")
    #: The timeout to await a response in milliseconds for requests that require reading from
    #: remote storage for topics enabled with tiered storage.
    timeout_ms: int = f(INT32, "10+", ignorable=True)


@dataclass(kw_only=True, slots=True)
class ListOffsetsResponse(Response):
    """ListOffsets response body (API key 2)."""

    API_KEY: ClassVar[int] = 2
    VERSIONS: ClassVar[Versions] = Versions.parse("0-10")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("6+")

    #: The duration in milliseconds for which the request was throttled due to a quota violation,
    #: or zero if the request did not violate any quota.
    throttle_time_ms: int = f(INT32, "2+", ignorable=True)
    #: Each topic in the response.
    topics: list[ListOffsetsTopicResponse] = f(Array(ListOffsetsTopicResponse), "0+")
