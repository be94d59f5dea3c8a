"""DeleteTopics (API key 20): the request and response schemas, versions 0-6.

Transcribed field for field from Kafka's DeleteTopicsRequest.json and
DeleteTopicsResponse.json (names in snake_case; types, versions, nullable, tagged and flexible
versions, defaults and ignorable as declared there), for the interpreter in schema.py.
Flexible versions: request 4+, response 4+.

Request history, as Kafka's DeleteTopicsRequest.json records it:

- Versions 0, 1, 2, and 3 are the same.
- Version 4 is the first flexible version.
- Version 5 adds ErrorMessage in the response and may return a THROTTLING_QUOTA_EXCEEDED error
  in the response if the topics deletion is throttled (KIP-599).
- Version 6 reorganizes topics, adds topic IDs and allows topic names to be null.

Response history, as Kafka's DeleteTopicsResponse.json records it:

- Version 1 adds the throttle time.
- Starting in version 2, on quota violation, brokers send out responses before throttling.
- Starting in version 3, a TOPIC_DELETION_DISABLED error code may be returned.
- Version 4 is the first flexible version.
- Version 5 adds ErrorMessage in the response and may return a THROTTLING_QUOTA_EXCEEDED error
  in the response if the topics deletion is throttled (KIP-599).
- Version 6 adds topic ID to responses. An UNSUPPORTED_VERSION error code will be returned
  when attempting to delete using topic IDs when IBP < 2.8. UNKNOWN_TOPIC_ID error code will
  be returned when IBP is at least 2.8, but the topic ID was not found.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import ClassVar

from .schema import (
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
class DeleteTopicState(Struct):
    """The name or topic ID of the topic."""

    #: The topic name
    name: str | None = f(STRING, "6+", nullable="6+", default=None)
    #: The unique topic ID
    topic_id: uuid.UUID = f(UUID, "6+")


@dataclass(kw_only=True, slots=True)
class DeletableTopicResult(Struct):
    """The results for each topic we tried to delete."""

    #: The topic name
    name: str | None = f(STRING, "0+", nullable="6+")
    #: the unique topic ID
    topic_id: uuid.UUID = f(UUID, "6+", ignorable=True)
    #: The deletion error, or 0 if the deletion succeeded.
    error_code: int = f(INT16, "0+")
    #: The error message, or null if there was no error.
    error_message: str | None = f(STRING, "5+", nullable="5+", default=None, ignorable=True)


@dataclass(kw_only=True, slots=True)
class DeleteTopicsRequest(Request):
    """DeleteTopics request body (API key 20)."""

    API_KEY: ClassVar[int] = 20
    VERSIONS: ClassVar[Versions] = Versions.parse("0-6")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("4+")

    #: The name or topic ID of the topic
    topics: list[DeleteTopicState] = f(Array(DeleteTopicState), "6+")
    #: The names of the topics to delete
    topic_names: list[str] = f(Array(STRING), "0-5", ignorable=True)
    #: The length of time in milliseconds to wait for the deletions to complete.
    timeout_ms: int = f(INT32, "0+")


@dataclass(kw_only=True, slots=True)
class DeleteTopicsResponse(Response):
    """DeleteTopics response body (API key 20)."""

    API_KEY: ClassVar[int] = 20
    VERSIONS: ClassVar[Versions] = Versions.parse("0-6")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("4+")

    #: The duration in milliseconds for which the request was throttled due to a quota violation,
    #: or zero if the request did not violate any quota.
    throttle_time_ms: int = f(INT32, "1+", ignorable=True)
    #: The results for each topic we tried to delete.
    responses: list[DeletableTopicResult] = f(Array(DeletableTopicResult), "0+")
