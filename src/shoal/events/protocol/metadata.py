"""Metadata (API key 3): the request and response schemas, versions 0-12.

Transcribed field for field from Kafka's MetadataRequest.json and MetadataResponse.json (names
in snake_case; types, versions, nullable, tagged and flexible versions, defaults and ignorable
as declared there), for the interpreter in schema.py. Flexible versions: request 9+, response
9+.

Request history, as Kafka's MetadataRequest.json records it:

- In version 0, an empty array indicates "request metadata for all topics."  In version 1 and
  higher, an empty array indicates "request metadata for no topics," and a null array is used
  to indicate "request metadata for all topics."
- Version 2 and 3 are the same as version 1.
- Version 4 adds AllowAutoTopicCreation.
- Starting in version 8, authorized operations can be requested for cluster and topic
  resource.
- Version 9 is the first flexible version.
- Version 10 adds topicId and allows name field to be null. However, this functionality was
  not implemented on the server. Versions 10 and 11 should not use the topicId field or set
  topic name to null.
- Version 11 deprecates IncludeClusterAuthorizedOperations field. This is now exposed by the
  DescribeCluster API (KIP-700). Version 12 supports topic Id.

Response history, as Kafka's MetadataResponse.json records it:

- Version 1 adds fields for the rack of each broker, the controller id, and whether or not the
  topic is internal.
- Version 2 adds the cluster ID field.
- Version 3 adds the throttle time.
- Version 4 is the same as version 3.
- Version 5 adds a per-partition offline_replicas field. This field specifies the list of
  replicas that are offline.
- Starting in version 6, on quota violation, brokers send out responses before throttling.
- Version 7 adds the leader epoch to the partition metadata.
- Starting in version 8, brokers can send authorized operations for topic and cluster.
- Version 9 is the first flexible version.
- Version 10 adds topicId.
- Version 11 deprecates ClusterAuthorizedOperations. This is now exposed by the
  DescribeCluster API (KIP-700). Version 12 supports topicId.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import ClassVar

from .schema import (
    BOOL,
    INT16,
    INT32,
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
class MetadataRequestTopic(Struct):
    """The topics to fetch metadata for."""

    #: The topic id.
    topic_id: uuid.UUID = f(UUID, "10+", ignorable=True)
    #: The topic name.
    name: str | None = f(STRING, "0+", nullable="10+")


@dataclass(kw_only=True, slots=True)
class MetadataResponseBroker(Struct):
    """A list of brokers present in the cluster."""

    #: The broker ID.
    node_id: int = f(INT32, "0+")
    #: The broker hostname.
    host: str = f(STRING, "0+")
    #: The broker port.
    port: int = f(INT32, "0+")
    #: The rack of the broker, or null if it has not been assigned to a rack.
    rack: str | None = f(STRING, "1+", nullable="1+", default=None, ignorable=True)


@dataclass(kw_only=True, slots=True)
class MetadataResponsePartition(Struct):
    """Each partition in the topic."""

    #: The partition error, or 0 if there was no error.
    error_code: int = f(INT16, "0+")
    #: The partition index.
    partition_index: int = f(INT32, "0+")
    #: The ID of the leader broker.
    leader_id: int = f(INT32, "0+")
    #: The leader epoch of this partition.
    leader_epoch: int = f(INT32, "7+", default=-1, ignorable=True)
    #: The set of all nodes that host this partition.
    replica_nodes: list[int] = f(Array(INT32), "0+")
    #: The set of nodes that are in sync with the leader for this partition.
    isr_nodes: list[int] = f(Array(INT32), "0+")
    #: The set of offline replicas of this partition.
    offline_replicas: list[int] = f(Array(INT32), "5+", ignorable=True)


@dataclass(kw_only=True, slots=True)
class MetadataResponseTopic(Struct):
    """Each topic in the response."""

    #: The topic error, or 0 if there was no error.
    error_code: int = f(INT16, "0+")
    #: The topic name. Null for non-existing topics queried by ID. This is never null when
    #: ErrorCode is zero. One of Name and TopicId is always populated.
    name: str | None = f(STRING, "0+", nullable="12+")
    #: The topic id. Zero for non-existing topics queried by name. This is never zero when
    #: ErrorCode is zero. One of Name and TopicId is always populated.
    topic_id: uuid.UUID = f(UUID, "10+", ignorable=True)
    #: True if the topic is internal.
    is_internal: bool = f(BOOL, "1+", ignorable=True)
    #: Each partition in the topic.
    partitions: list[MetadataResponsePartition] = f(Array(MetadataResponsePartition), "0+")
    #: 32-bit bitfield to represent authorized operations for this topic.
    topic_authorized_operations: int = f(INT32, "8+", default=-2147483648)


@dataclass(kw_only=True, slots=True)
class MetadataRequest(Request):
    """Metadata request body (API key 3)."""

    API_KEY: ClassVar[int] = 3
    VERSIONS: ClassVar[Versions] = Versions.parse("0-12")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("9+")

    #: The topics to fetch metadata for.
    topics: list[MetadataRequestTopic] | None = f(Array(MetadataRequestTopic), "0+", nullable="1+")
    #: If this is true, the broker may auto-create topics that we requested which do not already
    #: exist, if it is configured to do so.
    allow_auto_topic_creation: bool = f(BOOL, "4+", default=True)
    #: Whether to include cluster authorized operations.
    include_cluster_authorized_operations: bool = f(BOOL, "8-10")
    #: Whether to include topic authorized operations.
    include_topic_authorized_operations: bool = f(BOOL, "8+")


@dataclass(kw_only=True, slots=True)
class MetadataResponse(Response):
    """Metadata response body (API key 3)."""

    API_KEY: ClassVar[int] = 3
    VERSIONS: ClassVar[Versions] = Versions.parse("0-12")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("9+")

    #: The duration in milliseconds for which the request was throttled due to a quota violation,
    #: or zero if the request did not violate any quota.
    throttle_time_ms: int = f(INT32, "3+", ignorable=True)
    #: A list of brokers present in the cluster.
    brokers: list[MetadataResponseBroker] = f(Array(MetadataResponseBroker), "0+")
    #: The cluster ID that responding broker belongs to.
    cluster_id: str | None = f(STRING, "2+", nullable="2+", default=None, ignorable=True)
    #: The ID of the controller broker.
    controller_id: int = f(INT32, "1+", default=-1, ignorable=True)
    #: Each topic in the response.
    topics: list[MetadataResponseTopic] = f(Array(MetadataResponseTopic), "0+")
    #: 32-bit bitfield to represent authorized operations for this cluster.
    cluster_authorized_operations: int = f(INT32, "8-10", default=-2147483648)
