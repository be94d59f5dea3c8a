"""DescribeConfigs (API key 32): the request and response schemas, versions 0-4.

Transcribed field for field from Kafka's DescribeConfigsRequest.json and
DescribeConfigsResponse.json (names in snake_case; types, versions, nullable, tagged and
flexible versions, defaults and ignorable as declared there), for the interpreter in
schema.py. Flexible versions: request 4+, response 4+.

Request history, as Kafka's DescribeConfigsRequest.json records it:

- Version 1 adds IncludeSynonyms. Version 2 is the same as version 1. Version 4 enables
  flexible versions.

Response history, as Kafka's DescribeConfigsResponse.json records it:

- Version 1 adds ConfigSource and the synonyms. Starting in version 2, on quota violation,
  brokers send out responses before throttling. Version 4 enables flexible versions. Note: the
  v0 default for this field that should be exposed to callers is context-dependent. For
  example, if the resource is a broker, this should default to 4. -1 is just a placeholder
  value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .schema import (
    BOOL,
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
class DescribeConfigsResource(Struct):
    """The resources whose configurations we want to describe."""

    #: The resource type.
    resource_type: int = f(INT8, "0+")
    #: The resource name.
    resource_name: str = f(STRING, "0+")
    #: The configuration keys to list, or null to list all configuration keys.
    configuration_keys: list[str] | None = f(Array(STRING), "0+", nullable="0+")


@dataclass(kw_only=True, slots=True)
class DescribeConfigsSynonym(Struct):
    """The synonyms for this configuration key."""

    #: The synonym name.
    name: str = f(STRING, "1+")
    #: The synonym value.
    value: str | None = f(STRING, "1+", nullable="0+")
    #: The synonym source.
    source: int = f(INT8, "1+")


@dataclass(kw_only=True, slots=True)
class DescribeConfigsResourceResult(Struct):
    """Each listed configuration."""

    #: The configuration name.
    name: str = f(STRING, "0+")
    #: The configuration value.
    value: str | None = f(STRING, "0+", nullable="0+")
    #: True if the configuration is read-only.
    read_only: bool = f(BOOL, "0+")
    #: True if the configuration is not set.
    is_default: bool = f(BOOL, "0")
    #: The configuration source.
    config_source: int = f(INT8, "1+", default=-1, ignorable=True)
    #: True if this configuration is sensitive.
    is_sensitive: bool = f(BOOL, "0+")
    #: The synonyms for this configuration key.
    synonyms: list[DescribeConfigsSynonym] = f(Array(DescribeConfigsSynonym), "1+", ignorable=True)
    #: The configuration data type. Type can be one of the following values - BOOLEAN, STRING, INT,
    #: SHORT, LONG, DOUBLE, LIST, CLASS, PASSWORD
    config_type: int = f(INT8, "3+", ignorable=True)
    #: The configuration documentation.
    documentation: str | None = f(STRING, "3+", nullable="0+", ignorable=True)


@dataclass(kw_only=True, slots=True)
class DescribeConfigsResult(Struct):
    """The results for each resource."""

    #: The error code, or 0 if we were able to successfully describe the configurations.
    error_code: int = f(INT16, "0+")
    #: The error message, or null if we were able to successfully describe the configurations.
    error_message: str | None = f(STRING, "0+", nullable="0+")
    #: The resource type.
    resource_type: int = f(INT8, "0+")
    #: The resource name.
    resource_name: str = f(STRING, "0+")
    #: Each listed configuration.
    configs: list[DescribeConfigsResourceResult] = f(Array(DescribeConfigsResourceResult), "0+")


@dataclass(kw_only=True, slots=True)
class DescribeConfigsRequest(Request):
    """DescribeConfigs request body (API key 32)."""

    API_KEY: ClassVar[int] = 32
    VERSIONS: ClassVar[Versions] = Versions.parse("0-4")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("4+")

    #: The resources whose configurations we want to describe.
    resources: list[DescribeConfigsResource] = f(Array(DescribeConfigsResource), "0+")
    #: True if we should include all synonyms.
    include_synonyms: bool = f(BOOL, "1+")
    #: True if we should include configuration documentation.
    include_documentation: bool = f(BOOL, "3+")


@dataclass(kw_only=True, slots=True)
class DescribeConfigsResponse(Response):
    """DescribeConfigs response body (API key 32)."""

    API_KEY: ClassVar[int] = 32
    VERSIONS: ClassVar[Versions] = Versions.parse("0-4")
    FLEXIBLE: ClassVar[Versions] = Versions.parse("4+")

    #: The duration in milliseconds for which the request was throttled due to a quota violation,
    #: or zero if the request did not violate any quota.
    throttle_time_ms: int = f(INT32, "0+")
    #: The results for each resource.
    results: list[DescribeConfigsResult] = f(Array(DescribeConfigsResult), "0+")
