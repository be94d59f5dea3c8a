"""InitProducerId (API key 22): the request and response schemas, versions 0-5.

Transcribed field for field from Kafka's InitProducerIdRequest.json and
InitProducerIdResponse.json (names in snake_case; types, versions, nullable, tagged and
flexible versions, defaults and ignorable as declared there), for the interpreter in
schema.py. Flexible versions: request 2+, response 2+.

Request history, as Kafka's InitProducerIdRequest.json records it:

- Version 1 is the same as version 0.
- Version 2 is the first flexible version.
- Version 3 adds ProducerId and ProducerEpoch, allowing producers to try to resume after an
  INVALID_PRODUCER_EPOCH error
- Version 4 adds the support for new error code PRODUCER_FENCED.
- Verison 5 adds support for new error code TRANSACTION_ABORTABLE (KIP-890).

Response history, as Kafka's InitProducerIdResponse.json records it:

- Starting in version 1, on quota violation, brokers send out responses before throttling.
- Version 2 is the first flexible version.
- Version 3 is the same as version 2.
- Version 4 adds the support for new error code PRODUCER_FENCED.
- Version 5 adds support for new error code TRANSACTION_ABORTABLE (KIP-890).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .schema import (
    INT16,
    INT32,
    INT64,
    STRING,
    Request,
    Response,
    Versions,
    f,
)


@dataclass(kw_only=True, slots=True)
class InitProducerIdRequest(Request):
    """InitProducerId request body (API key 22)."""

    API_KEY: ClassVar[int] = 22
    VERSIONS: ClassVar[Versions] = Versions.parse("0-5")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("2+")

    #: The transactional id, or null if the producer is not transactional.
    transactional_id: str | None = f(STRING, "0+", nullable="0+")
    #: The time in ms to wait before aborting idle transactions sent by this producer. This is only
    #: relevant if a TransactionalId has been defined.
    transaction_timeout_ms: int = f(INT32, "0+")
    #: The producer id. This is used to disambiguate requests if a transactional id is reused
    #: following its expiration.
    producer_id: int = f(INT64, "3+", default=-1)
    #: The producer's current epoch. This will be checked against the producer epoch on the broker,
    #: and the request will return an error if they do not match.
    producer_epoch: int = f(INT16, "3+", default=-1)


@dataclass(kw_only=True, slots=True)
class InitProducerIdResponse(Response):
    """InitProducerId response body (API key 22)."""

    API_KEY: ClassVar[int] = 22
    VERSIONS: ClassVar[Versions] = Versions.parse("0-5")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("2+")

    #: The duration in milliseconds for which the request was throttled due to a quota violation,
    #: or zero if the request did not violate any quota.
    throttle_time_ms: int = f(INT32, "0+", ignorable=True)
    #: The error code, or 0 if there was no error.
    error_code: int = f(INT16, "0+")
    #: The current producer id.
    producer_id: int = f(INT64, "0+", default=-1)
    #: The current epoch associated with the producer id.
    producer_epoch: int = f(INT16, "0+")
