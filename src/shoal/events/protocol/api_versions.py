"""ApiVersions (API key 18): the request and response schemas, versions 0-4.

Transcribed field for field from Kafka's ApiVersionsRequest.json and ApiVersionsResponse.json
(names in snake_case; types, versions, nullable, tagged and flexible versions, defaults and
ignorable as declared there), for the interpreter in schema.py. Flexible versions: request 3+,
response 3+.

Request history, as Kafka's ApiVersionsRequest.json records it:

- Versions 0 through 2 of ApiVersionsRequest are the same.
- Version 3 is the first flexible version and adds ClientSoftwareName and
  ClientSoftwareVersion.
- Version 4 fixes KAFKA-17011, which blocked SupportedFeatures.MinVersion in the response from
  being 0.

Response history, as Kafka's ApiVersionsResponse.json records it:

- Version 1 adds throttle time to the response.
- Starting in version 2, on quota violation, brokers send out responses before throttling.
- Version 3 is the first flexible version. Tagged fields are only supported in the body but
  not in the header. The length of the header must not change in order to guarantee the
  backward compatibility.
- Starting from Apache Kafka 2.4 (KIP-511), ApiKeys field is populated with the supported
  versions of the ApiVersionsRequest when an UNSUPPORTED_VERSION error is returned.
- Version 4 fixes KAFKA-17011, which blocked SupportedFeatures.MinVersion from being 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .schema import (
    BOOL,
    INT16,
    INT32,
    INT64,
    STRING,
    Array,
    Request,
    Response,
    Struct,
    Versions,
    f,
)


@dataclass(kw_only=True, slots=True)
class ApiVersion(Struct):
    """The APIs supported by the broker."""

    #: The API index.
    api_key: int = f(INT16, "0+")
    #: The minimum supported version, inclusive.
    min_version: int = f(INT16, "0+")
    #: The maximum supported version, inclusive.
    max_version: int = f(INT16, "0+")


@dataclass(kw_only=True, slots=True)
class SupportedFeatureKey(Struct):
    """Features supported by the broker. Note: in v0-v3, features with MinSupportedVersion = 0
    are omitted.
    """

    #: The name of the feature.
    name: str = f(STRING, "3+")
    #: The minimum supported version for the feature.
    min_version: int = f(INT16, "3+")
    #: The maximum supported version for the feature.
    max_version: int = f(INT16, "3+")


@dataclass(kw_only=True, slots=True)
class FinalizedFeatureKey(Struct):
    """List of cluster-wide finalized features. The information is valid only if
    FinalizedFeaturesEpoch >= 0.
    """

    #: The name of the feature.
    name: str = f(STRING, "3+")
    #: The cluster-wide finalized max version level for the feature.
    max_version_level: int = f(INT16, "3+")
    #: The cluster-wide finalized min version level for the feature.
    min_version_level: int = f(INT16, "3+")


@dataclass(kw_only=True, slots=True)
class ApiVersionsRequest(Request):
    """ApiVersions request body (API key 18)."""

    API_KEY: ClassVar[int] = 18
    VERSIONS: ClassVar[Versions] = Versions.parse("0-4")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("3+")

    #: The name of the client.
    client_software_name: str = f(STRING, "3+", ignorable=True)
    #: The version of the client.
    client_software_version: str = f(STRING, "3+", ignorable=True)


@dataclass(kw_only=True, slots=True)
class ApiVersionsResponse(Response):
    """ApiVersions response body (API key 18)."""

    API_KEY: ClassVar[int] = 18
    VERSIONS: ClassVar[Versions] = Versions.parse("0-4")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("3+")

    #: The top-level error code.
    error_code: int = f(INT16, "0+")
    #: The APIs supported by the broker.
    api_keys: list[ApiVersion] = f(Array(ApiVersion), "0+")
    #: The duration in milliseconds for which the request was throttled due to a quota violation,
    #: or zero if the request did not violate any quota.
    throttle_time_ms: int = f(INT32, "1+", ignorable=True)
    #: Features supported by the broker. Note: in v0-v3, features with MinSupportedVersion = 0 are
    #: omitted.
    supported_features: list[SupportedFeatureKey] = f(
        Array(SupportedFeatureKey), "3+", tagged="3+", tag=0, ignorable=True,
    )
    #: The monotonically increasing epoch for the finalized features information. Valid values are
    #: >= 0. A value of -1 is special and represents unknown epoch.
    finalized_features_epoch: int = f(INT64, "3+", tagged="3+", tag=1, default=-1, ignorable=True)
    #: List of cluster-wide finalized features. The information is valid only if
    #: FinalizedFeaturesEpoch >= 0.
    finalized_features: list[FinalizedFeatureKey] = f(
        Array(FinalizedFeatureKey), "3+", tagged="3+", tag=2, ignorable=True,
    )
    #: Set by a KRaft controller if the required configurations for ZK migration are present
    zk_migration_ready: bool = f(BOOL, "3+", tagged="3+", tag=3, ignorable=True)
