"""FindCoordinator (API key 10): the request and response schemas, versions 0-6.

Transcribed field for field from Kafka's FindCoordinatorRequest.json and
FindCoordinatorResponse.json (names in snake_case; types, versions, nullable, tagged and
flexible versions, defaults and ignorable as declared there), for the interpreter in
schema.py. Flexible versions: request 3+, response 3+.

Request history, as Kafka's FindCoordinatorRequest.json records it:

- Version 1 adds KeyType.
- Version 2 is the same as version 1.
- Version 3 is the first flexible version.
- Version 4 adds support for batching via CoordinatorKeys (KIP-699)
- Version 5 adds support for new error code TRANSACTION_ABORTABLE (KIP-890).
- Version 6 adds support for share groups (KIP-932).

Response history, as Kafka's FindCoordinatorResponse.json records it:

- Version 1 adds throttle time and error messages.
- Starting in version 2, on quota violation, brokers send out responses before throttling.
- Version 3 is the first flexible version.
- Version 4 adds support for batching via Coordinators (KIP-699)
- Version 5 adds support for new error code TRANSACTION_ABORTABLE (KIP-890).
- Version 6 adds support for share groups (KIP-932).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .schema import (
    INT8,
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
class Coordinator(Struct):
    """Each coordinator result in the response."""

    #: The coordinator key.
    key: str = f(STRING, "4+")
    #: The node id.
    node_id: int = f(INT32, "4+")
    #: The host name.
    host: str = f(STRING, "4+")
    #: The port.
    port: int = f(INT32, "4+")
    #: The error code, or 0 if there was no error.
    error_code: int = f(INT16, "4+")
    #: The error message, or null if there was no error.
    error_message: str | None = f(STRING, "4+", nullable="4+", ignorable=True)


@dataclass(kw_only=True, slots=True)
class FindCoordinatorRequest(Request):
    """FindCoordinator request body (API key 10)."""

    API_KEY: ClassVar[int] = 10
    VERSIONS: ClassVar[Versions] = Versions.parse("0-6")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("3+")

    #: The coordinator key.
    key: str = f(STRING, "0-3")
    #: The coordinator key type. (Group, transaction, etc.)
    key_type: int = f(INT8, "1+")
    #: The coordinator keys.
    coordinator_keys: list[str] = f(Array(STRING), "4+")


@dataclass(kw_only=True, slots=True)
class FindCoordinatorResponse(Response):
    """FindCoordinator response body (API key 10)."""

    API_KEY: ClassVar[int] = 10
    VERSIONS: ClassVar[Versions] = Versions.parse("0-6")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("3+")

    #: The duration in milliseconds for which the request was throttled due to a quota violation,
    #: or zero if the request did not violate any quota.
    throttle_time_ms: int = f(INT32, "1+", ignorable=True)
    #: The error code, or 0 if there was no error.
    error_code: int = f(INT16, "0-3")
    #: The error message, or null if there was no error.
    error_message: str | None = f(STRING, "1-3", nullable="1-3", ignorable=True)
    #: The node id.
    node_id: int = f(INT32, "0-3")
    #: The host name.
    host: str = f(STRING, "0-3")
    #: The port.
    port: int = f(INT32, "0-3")
    #: Each coordinator result in the response
    coordinators: list[Coordinator] = f(Array(Coordinator), "4+")
