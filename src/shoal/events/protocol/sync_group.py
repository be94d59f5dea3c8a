"""SyncGroup (API key 14): the request and response schemas, versions 0-5.

Transcribed field for field from Kafka's SyncGroupRequest.json and SyncGroupResponse.json
(names in snake_case; types, versions, nullable, tagged and flexible versions, defaults and
ignorable as declared there), for the interpreter in schema.py. Flexible versions: request 4+,
response 4+.

Request history, as Kafka's SyncGroupRequest.json records it:

- Versions 1 and 2 are the same as version 0.
- Starting from version 3, we add a new field called groupInstanceId to indicate member
  identity across restarts.
- Version 4 is the first flexible version.
- Starting from version 5, the client sends the Protocol Type and the Protocol Name to the
  broker (KIP-559). The broker will reject the request if they are inconsistent with the Type
  and Name known by the broker.

Response history, as Kafka's SyncGroupResponse.json records it:

- Version 1 adds throttle time.
- Starting in version 2, on quota violation, brokers send out responses before throttling.
- Starting from version 3, syncGroupRequest supports a new field called groupInstanceId to
  indicate member identity across restarts.
- Version 4 is the first flexible version.
- Starting from version 5, the broker sends back the Protocol Type and the Protocol Name to
  the client (KIP-559).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .schema import (
    BYTES,
    INT16,
    INT32,
    STRING,
    Array,
    Request,
    Response,
    Struct,
    Versions,
    f,
)


@dataclass(kw_only=True, slots=True)
class SyncGroupRequestAssignment(Struct):
    """Each assignment."""

    #: The ID of the member to assign.
    member_id: str = f(STRING, "0+")
    #: The member assignment.
    assignment: bytes = f(BYTES, "0+")


@dataclass(kw_only=True, slots=True)
class SyncGroupRequest(Request):
    """SyncGroup request body (API key 14)."""

    API_KEY: ClassVar[int] = 14
    VERSIONS: ClassVar[Versions] = Versions.parse("0-5")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("4+")

    #: The unique group identifier.
    group_id: str = f(STRING, "0+")
    #: The generation of the group.
    generation_id: int = f(INT32, "0+")
    #: The member ID assigned by the group.
    member_id: str = f(STRING, "0+")
    #: The unique identifier of the consumer instance provided by end user.
    group_instance_id: str | None = f(STRING, "3+", nullable="3+", default=None)
    #: The group protocol type.
    protocol_type: str | None = f(STRING, "5+", nullable="5+", default=None, ignorable=True)
    #: The group protocol name.
    protocol_name: str | None = f(STRING, "5+", nullable="5+", default=None, ignorable=True)
    #: Each assignment.
    assignments: list[SyncGroupRequestAssignment] = f(Array(SyncGroupRequestAssignment), "0+")


@dataclass(kw_only=True, slots=True)
class SyncGroupResponse(Response):
    """SyncGroup response body (API key 14)."""

    API_KEY: ClassVar[int] = 14
    VERSIONS: ClassVar[Versions] = Versions.parse("0-5")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("4+")

    #: The duration in milliseconds for which the request was throttled due to a quota violation,
    #: or zero if the request did not violate any quota.
    throttle_time_ms: int = f(INT32, "1+", ignorable=True)
    #: The error code, or 0 if there was no error.
    error_code: int = f(INT16, "0+")
    #: The group protocol type.
    protocol_type: str | None = f(STRING, "5+", nullable="5+", default=None, ignorable=True)
    #: The group protocol name.
    protocol_name: str | None = f(STRING, "5+", nullable="5+", default=None, ignorable=True)
    #: The member assignment.
    assignment: bytes = f(BYTES, "0+")
