"""JoinGroup (API key 11): the request and response schemas, versions 0-9.

Transcribed field for field from Kafka's JoinGroupRequest.json and JoinGroupResponse.json
(names in snake_case; types, versions, nullable, tagged and flexible versions, defaults and
ignorable as declared there), for the interpreter in schema.py. Flexible versions: request 6+,
response 6+.

Request history, as Kafka's JoinGroupRequest.json records it:

- Version 1 adds RebalanceTimeoutMs.
- Version 2 and 3 are the same as version 1.
- Starting from version 4, the client needs to issue a second request to join group
- Starting from version 5, we add a new field called groupInstanceId to indicate member
  identity across restarts. with assigned id.
- Version 6 is the first flexible version.
- Version 7 is the same as version 6.
- Version 8 adds the Reason field (KIP-800).
- Version 9 is the same as version 8. Note: if RebalanceTimeoutMs is not present,
  SessionTimeoutMs should be used instead.  The default of -1 here is just intended as a
  placeholder.

Response history, as Kafka's JoinGroupResponse.json records it:

- Version 1 is the same as version 0.
- Version 2 adds throttle time.
- Starting in version 3, on quota violation, brokers send out responses before throttling.
- Starting in version 4, the client needs to issue a second request to join group with
  assigned id.
- Version 5 is bumped to apply group.instance.id to identify member across restarts.
- Version 6 is the first flexible version.
- Starting from version 7, the broker sends back the Protocol Type to the client (KIP-559).
- Version 8 is the same as version 7.
- Version 9 adds the SkipAssignment field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .schema import (
    BOOL,
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
class JoinGroupRequestProtocol(Struct):
    """The list of protocols that the member supports."""

    #: The protocol name.
    name: str = f(STRING, "0+")
    #: The protocol metadata.
    metadata: bytes = f(BYTES, "0+")


@dataclass(kw_only=True, slots=True)
class JoinGroupResponseMember(Struct):
    """JoinGroupResponseMember."""

    #: The group member ID.
    member_id: str = f(STRING, "0+")
    #: The unique identifier of the consumer instance provided by end user.
    group_instance_id: str | None = f(STRING, "5+", nullable="5+", default=None, ignorable=True)
    #: The group member metadata.
    metadata: bytes = f(BYTES, "0+")


@dataclass(kw_only=True, slots=True)
class JoinGroupRequest(Request):
    """JoinGroup request body (API key 11)."""

    API_KEY: ClassVar[int] = 11
    VERSIONS: ClassVar[Versions] = Versions.parse("0-9")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("6+")

    #: The group identifier.
    group_id: str = f(STRING, "0+")
    #: The coordinator considers the consumer dead if it receives no heartbeat after this timeout
    #: in milliseconds.
    session_timeout_ms: int = f(INT32, "0+")
    #: The maximum time in milliseconds that the coordinator will wait for each member to rejoin
    #: when rebalancing the group.
    rebalance_timeout_ms: int = f(INT32, "1+", default=-1, ignorable=True)
    #: The member id assigned by the group coordinator.
    member_id: str = f(STRING, "0+")
    #: The unique identifier of the consumer instance provided by end user.
    group_instance_id: str | None = f(STRING, "5+", nullable="5+", default=None)
    #: The unique name the for class of protocols implemented by the group we want to join.
    protocol_type: str = f(STRING, "0+")
    #: The list of protocols that the member supports.
    protocols: list[JoinGroupRequestProtocol] = f(Array(JoinGroupRequestProtocol), "0+")
    #: The reason why the member (re-)joins the group.
    reason: str | None = f(STRING, "8+", nullable="8+", default=None, ignorable=True)


@dataclass(kw_only=True, slots=True)
class JoinGroupResponse(Response):
    """JoinGroup response body (API key 11)."""

    API_KEY: ClassVar[int] = 11
    VERSIONS: ClassVar[Versions] = Versions.parse("0-9")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("6+")

    #: The duration in milliseconds for which the request was throttled due to a quota violation,
    #: or zero if the request did not violate any quota.
    throttle_time_ms: int = f(INT32, "2+", ignorable=True)
    #: The error code, or 0 if there was no error.
    error_code: int = f(INT16, "0+")
    #: The generation ID of the group.
    generation_id: int = f(INT32, "0+", default=-1)
    #: The group protocol name.
    protocol_type: str | None = f(STRING, "7+", nullable="7+", default=None, ignorable=True)
    #: The group protocol selected by the coordinator.
    protocol_name: str | None = f(STRING, "0+", nullable="7+")
    #: The leader of the group.
    leader: str = f(STRING, "0+")
    #: True if the leader must skip running the assignment.
    skip_assignment: bool = f(BOOL, "9+")
    #: The member ID assigned by the group coordinator.
    member_id: str = f(STRING, "0+")
    members: list[JoinGroupResponseMember] = f(Array(JoinGroupResponseMember), "0+")
