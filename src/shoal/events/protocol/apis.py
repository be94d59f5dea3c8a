"""The API table (key -> request and response schemas, advertised versions) and whole frames.

A Kafka frame is an int32 size, a header, and a body; `encode_request`/`decode_request` and
`encode_response`/`decode_response` do the header and body (and the size prefix on the way
out) for a given API version. Which header version goes with which request is derived here,
from the API's flexible versions (see headers.py), because the wire does not say.

Two version ranges exist per API and are kept apart on purpose:

- The *schema* range, `Api.request.VERSIONS`: every version Kafka's JSON defines, which the
  codec can encode and decode (and which tests round-trip).
- The *advertised* range, `Api.min_version`..`Api.max_version`: what a Shoal server answers
  ApiVersions with by default, and so what clients will use. It stops below versions whose
  meaning a simple server cannot honour yet (topic ids replacing names, KIP-848's consumer
  protocol, KIP-890's transaction protocol), and above versions that require converting old
  message formats. `KafkaConnection(supported=...)` narrows or widens it per server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from . import (
    api_versions,
    create_topics,
    delete_topics,
    describe_configs,
    fetch,
    find_coordinator,
    heartbeat,
    init_producer_id,
    join_group,
    leave_group,
    list_offsets,
    metadata,
    offset_commit,
    offset_fetch,
    produce,
    sync_group,
)
from .exceptions import LocalProtocolError, RemoteProtocolError
from .headers import RequestHeader, ResponseHeader
from .primitives import Reader, Writer
from .schema import Request, Response, read_struct, write_struct

API_VERSIONS_KEY = 18


@dataclass(frozen=True, slots=True)
class Api:
    """One API: its key and name, its schemas, and the versions advertised by default."""

    key: int
    name: str
    request: type[Request]
    response: type[Response]
    min_version: int
    max_version: int

    def __post_init__(self) -> None:
        assert self.request.API_KEY == self.response.API_KEY == self.key, self
        assert self.min_version in self.request.VERSIONS, self
        assert self.max_version in self.request.VERSIONS, self

    def request_header_version(self, version: int) -> int:
        return 2 if version in self.request.FLEXIBLE else 1

    def response_header_version(self, version: int) -> int:
        if self.key == API_VERSIONS_KEY:
            return 0  # always v0, so a client can read it whatever version it sent
        return 1 if version in self.response.FLEXIBLE else 0


def _api(key: int, name: str, req: type[Request], resp: type[Response], lo: int, hi: int) -> Api:
    return Api(key, name, req, resp, lo, hi)


# The advertised ranges, and why each stops where it does (docs/kafka-protocol.md has the
# same table). Minimums are 0 except where a version implies the legacy message formats.
APIS: dict[int, Api] = {a.key: a for a in (
    _api(0, "Produce", produce.ProduceRequest, produce.ProduceResponse, 3, 10),
    _api(1, "Fetch", fetch.FetchRequest, fetch.FetchResponse, 4, 12),
    _api(2, "ListOffsets", list_offsets.ListOffsetsRequest, list_offsets.ListOffsetsResponse,
         0, 7),
    _api(3, "Metadata", metadata.MetadataRequest, metadata.MetadataResponse, 0, 12),
    _api(8, "OffsetCommit", offset_commit.OffsetCommitRequest,
         offset_commit.OffsetCommitResponse, 0, 8),
    _api(9, "OffsetFetch", offset_fetch.OffsetFetchRequest, offset_fetch.OffsetFetchResponse,
         0, 8),
    _api(10, "FindCoordinator", find_coordinator.FindCoordinatorRequest,
         find_coordinator.FindCoordinatorResponse, 0, 4),
    _api(11, "JoinGroup", join_group.JoinGroupRequest, join_group.JoinGroupResponse, 0, 9),
    _api(12, "Heartbeat", heartbeat.HeartbeatRequest, heartbeat.HeartbeatResponse, 0, 4),
    _api(13, "LeaveGroup", leave_group.LeaveGroupRequest, leave_group.LeaveGroupResponse, 0, 5),
    _api(14, "SyncGroup", sync_group.SyncGroupRequest, sync_group.SyncGroupResponse, 0, 5),
    _api(18, "ApiVersions", api_versions.ApiVersionsRequest, api_versions.ApiVersionsResponse,
         0, 4),
    _api(19, "CreateTopics", create_topics.CreateTopicsRequest,
         create_topics.CreateTopicsResponse, 0, 7),
    _api(20, "DeleteTopics", delete_topics.DeleteTopicsRequest,
         delete_topics.DeleteTopicsResponse, 0, 5),
    _api(22, "InitProducerId", init_producer_id.InitProducerIdRequest,
         init_producer_id.InitProducerIdResponse, 0, 4),
    _api(32, "DescribeConfigs", describe_configs.DescribeConfigsRequest,
         describe_configs.DescribeConfigsResponse, 0, 4),
)}

DEFAULT_SUPPORTED: dict[int, tuple[int, int]] = {
    k: (a.min_version, a.max_version) for k, a in APIS.items()
}


def api_for(body: Request | Response) -> Api:
    api = APIS.get(type(body).API_KEY)
    if api is None or not isinstance(body, (api.request, api.response)):
        raise LocalProtocolError(f"{type(body).__name__} is not a known API message")
    return api


def check_supported(supported: Mapping[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
    """Validate a server's advertised ranges against the schemas (our misuse if wrong)."""
    out: dict[int, tuple[int, int]] = {}
    for key, (lo, hi) in supported.items():
        api = APIS.get(key)
        if api is None:
            raise LocalProtocolError(f"API key {key} has no schema here")
        if not (lo <= hi and lo in api.request.VERSIONS and hi in api.request.VERSIONS):
            raise LocalProtocolError(f"{api.name} versions {lo}-{hi} outside its schema")
        out[key] = (lo, hi)
    if API_VERSIONS_KEY not in out:
        raise LocalProtocolError("ApiVersions must be supported: clients start with it")
    return out


def _frame(w: Writer) -> bytes:
    size = len(w) - 4
    w.buf[0:4] = size.to_bytes(4, "big", signed=True)
    return w.getvalue()


def encode_request(
    body: Request, version: int, correlation_id: int, client_id: str | None = "shoal",
) -> bytes:
    """A whole request frame (size prefix, header, body): what a client sends."""
    api = api_for(body)
    if version not in api.request.VERSIONS:
        raise LocalProtocolError(f"{api.name} request has no version {version}")
    hv = api.request_header_version(version)
    w = Writer()
    w.raw(b"\0\0\0\0")
    header = RequestHeader(request_api_key=api.key, request_api_version=version,
                           correlation_id=correlation_id, client_id=client_id)
    write_struct(header, w, hv, hv in RequestHeader.FLEXIBLE)
    write_struct(body, w, version, version in api.request.FLEXIBLE)
    return _frame(w)


def encode_response(body: Response, version: int, correlation_id: int) -> bytes:
    """A whole response frame (size prefix, header, body): what a server sends."""
    api = api_for(body)
    if version not in api.response.VERSIONS:
        raise LocalProtocolError(f"{api.name} response has no version {version}")
    hv = api.response_header_version(version)
    w = Writer()
    w.raw(b"\0\0\0\0")
    write_struct(ResponseHeader(correlation_id=correlation_id), w, hv, hv == 1)
    write_struct(body, w, version, version in api.response.FLEXIBLE)
    return _frame(w)


def decode_request_header(r: Reader, api: Api | None, version: int) -> RequestHeader:
    """The header of a frame whose first 4 bytes (key and version) are already known.

    For an API we have no schema for, v1 is assumed: it is a prefix of v2, and all a server
    needs from it is the correlation id to answer with."""
    hv = 1 if api is None else api.request_header_version(version)
    return read_struct(RequestHeader, r, hv, hv in RequestHeader.FLEXIBLE)


def decode_request(payload: bytes) -> tuple[RequestHeader, Request]:
    """Header and body of one request frame (without its size prefix), at the version its
    header names, which must be in the schema. Servers use KafkaConnection instead, which
    also answers versions outside the advertised ranges."""
    r = Reader(payload)
    key, version = r.int16(), r.int16()
    api = APIS.get(key)
    if api is None or version not in api.request.VERSIONS:
        raise r.fail(f"no schema for API key {key} version {version}")
    r = Reader(payload)
    header = decode_request_header(r, api, version)
    return header, api.request.decode(r, version)


def decode_response(payload: bytes, api_key: int, version: int) -> tuple[int, Response]:
    """(correlation id, body) of one response frame for a request of `api_key` at `version`
    (a client remembers both by correlation id; the response does not repeat them).

    An ApiVersions response that does not parse at the version asked for is parsed at v0, as
    Kafka's client does: a broker that does not know the version answers v0 with
    UNSUPPORTED_VERSION and the ranges it does support."""
    api = APIS.get(api_key)
    if api is None or version not in api.response.VERSIONS:
        raise LocalProtocolError(f"no schema for API key {api_key} version {version}")
    r = Reader(payload)
    hv = api.response_header_version(version)
    header = read_struct(ResponseHeader, r, hv, hv == 1)
    start = r.pos
    try:
        return header.correlation_id, api.response.decode(r, version)
    except RemoteProtocolError:
        if api_key != API_VERSIONS_KEY or version == 0:
            raise
    return header.correlation_id, api.response.decode(Reader(payload, start), 0)
