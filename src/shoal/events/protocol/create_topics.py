"""CreateTopics (API key 19): the request and response schemas, versions 0-7.

Transcribed field for field from Kafka's CreateTopicsRequest.json and
CreateTopicsResponse.json (names in snake_case; types, versions, nullable, tagged and flexible
versions, defaults and ignorable as declared there), for the interpreter in schema.py.
Flexible versions: request 5+, response 5+.

Request history, as Kafka's CreateTopicsRequest.json records it:

- Version 1 adds validateOnly.
- Version 4 makes partitions/replicationFactor optional even when assignments are not present
  (KIP-464)
- Version 5 is the first flexible version. Version 5 also returns topic configs in the
  response (KIP-525).
- Version 6 is identical to version 5 but may return a THROTTLING_QUOTA_EXCEEDED error in the
  response if the topics creation is throttled (KIP-599).
- Version 7 is the same as version 6.

Response history, as Kafka's CreateTopicsResponse.json records it:

- Version 1 adds a per-topic error message string.
- Version 2 adds the throttle time.
- Starting in version 3, on quota violation, brokers send out responses before throttling.
- Version 4 makes partitions/replicationFactor optional even when assignments are not present
  (KIP-464).
- Version 5 is the first flexible version. Version 5 also returns topic configs in the
  response (KIP-525).
- Version 6 is identical to version 5 but may return a THROTTLING_QUOTA_EXCEEDED error in the
  response if the topics creation is throttled (KIP-599).
- Version 7 returns the topic ID of the newly created topic if creation is successful.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import ClassVar

from .schema import (
    BOOL,
    INT8,
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
class CreatableReplicaAssignment(Struct):
    """The manual partition assignment, or the empty array if we are using automatic assignment."""

    #: The partition index.
    partition_index: int = f(INT32, "0+")
    #: The brokers to place the partition on.
    broker_ids: list[int] = f(Array(INT32), "0+")


@dataclass(kw_only=True, slots=True)
class CreatableTopicConfig(Struct):
    """The custom topic configurations to set."""

    #: The configuration name.
    name: str = f(STRING, "0+")
    #: The configuration value.
    value: str | None = f(STRING, "0+", nullable="0+")


@dataclass(kw_only=True, slots=True)
class CreatableTopic(Struct):
    """The topics to create."""

    #: The topic name.
    name: str = f(STRING, "0+")
    #: The number of partitions to create in the topic, or -1 if we are either specifying a manual
    #: partition assignment or using the default partitions.
    num_partitions: int = f(INT32, "0+")
    #: The number of replicas to create for each partition in the topic, or -1 if we are either
    #: specifying a manual partition assignment or using the default replication factor.
    replication_factor: int = f(INT16, "0+")
    #: The manual partition assignment, or the empty array if we are using automatic assignment.
    assignments: list[CreatableReplicaAssignment] = f(Array(CreatableReplicaAssignment), "0+")
    #: The custom topic configurations to set.
    configs: list[CreatableTopicConfig] = f(Array(CreatableTopicConfig), "0+")


@dataclass(kw_only=True, slots=True)
class CreatableTopicConfigs(Struct):
    """Configuration of the topic."""

    #: The configuration name.
    name: str = f(STRING, "5+")
    #: The configuration value.
    value: str | None = f(STRING, "5+", nullable="5+")
    #: True if the configuration is read-only.
    read_only: bool = f(BOOL, "5+")
    #: The configuration source.
    config_source: int = f(INT8, "5+", default=-1, ignorable=True)
    #: True if this configuration is sensitive.
    is_sensitive: bool = f(BOOL, "5+")


@dataclass(kw_only=True, slots=True)
class CreatableTopicResult(Struct):
    """Results for each topic we tried to create."""

    #: The topic name.
    name: str = f(STRING, "0+")
    #: The unique topic ID
    topic_id: uuid.UUID = f(UUID, "7+", ignorable=True)
    #: The error code, or 0 if there was no error.
    error_code: int = f(INT16, "0+")
    #: The error message, or null if there was no error.
    error_message: str | None = f(STRING, "1+", nullable="0+", ignorable=True)
    #: Optional topic config error returned if configs are not returned in the response.
    topic_config_error_code: int = f(INT16, "5+", tagged="5+", tag=0, ignorable=True)
    #: Number of partitions of the topic.
    num_partitions: int = f(INT32, "5+", default=-1, ignorable=True)
    #: Replication factor of the topic.
    replication_factor: int = f(INT16, "5+", default=-1, ignorable=True)
    #: Configuration of the topic.
    configs: list[CreatableTopicConfigs] | None = f(
        Array(CreatableTopicConfigs), "5+", nullable="5+", ignorable=True,
    )


@dataclass(kw_only=True, slots=True)
class CreateTopicsRequest(Request):
    """CreateTopics request body (API key 19)."""

    API_KEY: ClassVar[int] = 19
    VERSIONS: ClassVar[Versions] = Versions.parse("0-7")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("5+")

    #: The topics to create.
    topics: list[CreatableTopic] = f(Array(CreatableTopic), "0+")
    #: How long to wait in milliseconds before timing out the request.
    timeout_ms: int = f(INT32, "0+", default=60000)
    #: If true, check that the topics can be created as specified, but don't create anything.
    validate_only: bool = f(BOOL, "1+")


@dataclass(kw_only=True, slots=True)
class CreateTopicsResponse(Response):
    """CreateTopics response body (API key 19)."""

    API_KEY: ClassVar[int] = 19
    VERSIONS: ClassVar[Versions] = Versions.parse("0-7")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("5+")

    #: The duration in milliseconds for which the request was throttled due to a quota violation,
    #: or zero if the request did not violate any quota.
    throttle_time_ms: int = f(INT32, "2+", ignorable=True)
    #: Results for each topic we tried to create.
    topics: list[CreatableTopicResult] = f(Array(CreatableTopicResult), "0+")
