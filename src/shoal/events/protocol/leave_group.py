"""LeaveGroup (API key 13): the request and response schemas, versions 0-5.

Transcribed field for field from Kafka's LeaveGroupRequest.json and LeaveGroupResponse.json
(names in snake_case; types, versions, nullable, tagged and flexible versions, defaults and
ignorable as declared there), for the interpreter in schema.py. Flexible versions: request 4+,
response 4+.

Request history, as Kafka's LeaveGroupRequest.json records it:

- Version 1 and 2 are the same as version 0.
- Version 3 defines batch processing scheme with group.instance.id + member.id for identity
- Version 4 is the first flexible version.
- Version 5 adds the Reason field (KIP-800).

Response history, as Kafka's LeaveGroupResponse.json records it:

- Version 1 adds the throttle time.
- Starting in version 2, on quota violation, brokers send out responses before throttling.
- Starting in version 3, we will make leave group request into batch mode and add
  group.instance.id.
- Version 4 is the first flexible version.
- Version 5 is the same as version 4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .schema import (
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
class MemberIdentity(Struct):
    """List of leaving member identities."""

    #: The member ID to remove from the group.
    member_id: str = f(STRING, "3+")
    #: The group instance ID to remove from the group.
    group_instance_id: str | None = f(STRING, "3+", nullable="3+", default=None)
    #: The reason why the member left the group.
    reason: str | None = f(STRING, "5+", nullable="5+", default=None, ignorable=True)


@dataclass(kw_only=True, slots=True)
class MemberResponse(Struct):
    """List of leaving member responses."""

    #: The member ID to remove from the group.
    member_id: str = f(STRING, "3+")
    #: The group instance ID to remove from the group.
    group_instance_id: str | None = f(STRING, "3+", nullable="3+")
    #: The error code, or 0 if there was no error.
    error_code: int = f(INT16, "3+")


@dataclass(kw_only=True, slots=True)
class LeaveGroupRequest(Request):
    """LeaveGroup request body (API key 13)."""

    API_KEY: ClassVar[int] = 13
    VERSIONS: ClassVar[Versions] = Versions.parse("0-5")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("4+")

    #: The ID of the group to leave.
    group_id: str = f(STRING, "0+")
    #: The member ID to remove from the group.
    member_id: str = f(STRING, "0-2")
    #: List of leaving member identities.
    members: list[MemberIdentity] = f(Array(MemberIdentity), "3+")


@dataclass(kw_only=True, slots=True)
class LeaveGroupResponse(Response):
    """LeaveGroup response body (API key 13)."""

    API_KEY: ClassVar[int] = 13
    VERSIONS: ClassVar[Versions] = Versions.parse("0-5")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("4+")

    #: The duration in milliseconds for which the request was throttled due to a quota violation,
    #: or zero if the request did not violate any quota.
    throttle_time_ms: int = f(INT32, "1+", ignorable=True)
    #: The error code, or 0 if there was no error.
    error_code: int = f(INT16, "0+")
    #: List of leaving member responses.
    members: list[MemberResponse] = f(Array(MemberResponse), "3+")
