"""Heartbeat (API key 12): the request and response schemas, versions 0-4.

Transcribed field for field from Kafka's HeartbeatRequest.json and HeartbeatResponse.json
(names in snake_case; types, versions, nullable, tagged and flexible versions, defaults and
ignorable as declared there), for the interpreter in schema.py. Flexible versions: request 4+,
response 4+.

Request history, as Kafka's HeartbeatRequest.json records it:

- Version 1 and version 2 are the same as version 0.
- Starting from version 3, we add a new field called groupInstanceId to indicate member
  identity across restarts.
- Version 4 is the first flexible version.

Response history, as Kafka's HeartbeatResponse.json records it:

- Version 1 adds throttle time.
- Starting in version 2, on quota violation, brokers send out responses before throttling.
- Starting from version 3, heartbeatRequest supports a new field called groupInstanceId to
  indicate member identity across restarts.
- Version 4 is the first flexible version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .schema import (
    INT16,
    INT32,
    STRING,
    Request,
    Response,
    Versions,
    f,
)


@dataclass(kw_only=True, slots=True)
class HeartbeatRequest(Request):
    """Heartbeat request body (API key 12)."""

    API_KEY: ClassVar[int] = 12
    VERSIONS: ClassVar[Versions] = Versions.parse("0-4")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("4+")

    #: The group id.
    group_id: str = f(STRING, "0+")
    #: The generation of the group.
    generation_id: int = f(INT32, "0+")
    #: The member ID.
    member_id: str = f(STRING, "0+")
    #: The unique identifier of the consumer instance provided by end user.
    group_instance_id: str | None = f(STRING, "3+", nullable="3+", default=None)


@dataclass(kw_only=True, slots=True)
class HeartbeatResponse(Response):
    """Heartbeat response body (API key 12)."""

    API_KEY: ClassVar[int] = 12
    VERSIONS: ClassVar[Versions] = Versions.parse("0-4")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("4+")

    #: The duration in milliseconds for which the request was throttled due to a quota violation,
    #: or zero if the request did not violate any quota.
    throttle_time_ms: int = f(INT32, "1+", ignorable=True)
    #: The error code, or 0 if there was no error.
    error_code: int = f(INT16, "0+")
