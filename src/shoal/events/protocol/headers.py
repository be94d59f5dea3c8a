"""Request and response headers, from Kafka's RequestHeader.json and ResponseHeader.json.

Every request frame starts with a request header, every response frame with a response
header, and which header version is used is not said on the wire but derived from the API
and its version (`apis.Api.request_header_version`):

| header | versions | fields |
| --- | --- | --- |
| request v0 | (ControlledShutdown v0 only; none of Shoal's APIs) | api key, api version, correlation id |
| request v1 | every non-flexible request version | + client id (nullable string) |
| request v2 | every flexible request version | + tagged fields |
| response v0 | non-flexible responses, and every ApiVersions response | correlation id |
| response v1 | flexible responses | + tagged fields |

The client id stays a classic int16-length string even in v2 (`flexible="none"`), because a
server must be able to read it before it knows whether it understands the request's version.
ApiVersions responses always use v0 for the same reason in the other direction: a client that
sent a version the broker does not know still has to read the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .schema import INT16, INT32, STRING, Message, Versions, f


@dataclass(kw_only=True, slots=True)
class RequestHeader(Message):
    """The header in front of every request body."""

    VERSIONS: ClassVar[Versions] = Versions.parse("0-2")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("2+")

    #: The API key of this request.
    request_api_key: int = f(INT16, "0+")
    #: The API version of this request.
    request_api_version: int = f(INT16, "0+")
    #: The correlation ID of this request.
    correlation_id: int = f(INT32, "0+")
    #: The client ID string.
    client_id: str | None = f(STRING, "1+", nullable="1+", ignorable=True, flexible="none")


@dataclass(kw_only=True, slots=True)
class ResponseHeader(Message):
    """The header in front of every response body."""

    VERSIONS: ClassVar[Versions] = Versions.parse("0-1")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("1+")

    #: The correlation ID of this response.
    correlation_id: int = f(INT32, "0+")
