"""Kafka's wire protocol as a sans-I/O codec: bytes in, typed events out (docs/kafka-protocol.md).

The pieces, a module per idea:

- `connection`: `KafkaConnection`, the server's half of a connection (frames, headers,
  typed `RequestReceived` / `UnsupportedRequest` events, ordered responses), and
  `KafkaClientConnection`, its mirror for clients and tests.
- `apis`: the API table (`APIS`, advertised `DEFAULT_SUPPORTED` ranges) and whole-frame
  `encode_request` / `decode_request` / `encode_response` / `decode_response`.
- `schema`: the declarative field model and its single interpreter; `headers`: the request and
  response headers; one module per API with its request and response schemas (`metadata`,
  `produce`, `fetch`, ...), transcribed from Kafka's message JSON.
- `records`: v2 record batches (CRC-32C, restamping for the log), `compression`: the codecs,
  `legacy`: magic 0/1 message sets.
- `primitives`: the bounded Reader and the Writer; `error_codes`: Kafka's error codes;
  `exceptions`: who broke the protocol; `murmur2`: Kafka's default partitioner hash.

Supported APIs and versions (schema = what the codec reads and writes, advertised = what
ApiVersions offers by default):

| API | key | schema | advertised |
| --- | --- | --- | --- |
| Produce | 0 | 0-11 | 3-10 |
| Fetch | 1 | 0-17 | 4-12 |
| ListOffsets | 2 | 0-9 | 0-7 |
| Metadata | 3 | 0-12 | 0-12 |
| OffsetCommit | 8 | 0-9 | 0-8 |
| OffsetFetch | 9 | 0-9 | 0-8 |
| FindCoordinator | 10 | 0-6 | 0-4 |
| JoinGroup | 11 | 0-9 | 0-9 |
| Heartbeat | 12 | 0-4 | 0-4 |
| LeaveGroup | 13 | 0-5 | 0-5 |
| SyncGroup | 14 | 0-5 | 0-5 |
| ApiVersions | 18 | 0-4 | 0-4 |
| CreateTopics | 19 | 0-7 | 0-7 |
| DeleteTopics | 20 | 0-6 | 0-5 |
| InitProducerId | 22 | 0-5 | 0-4 |
| DescribeConfigs | 32 | 0-4 | 0-4 |

Where an advertised range stops short of the schema, the next version needs server
semantics beyond a codec: Produce v0-2 and Fetch v0-3 mean legacy message formats (Kafka 4.0
dropped them too); Produce v11, InitProducerId v5 and FindCoordinator v5 are KIP-890's
transaction protocol; Fetch v13 and DeleteTopics v6 address topics by id; OffsetCommit v9
and OffsetFetch v9 are KIP-848's consumer protocol; ListOffsets v8+ add tiered-storage
offset specs; FindCoordinator v6 is share groups. ListOffsets v10 is unstable in Kafka's JSON
and left out of the schema.
"""

from __future__ import annotations

from .apis import (
    APIS,
    DEFAULT_SUPPORTED,
    Api,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from .compression import Codec
from .connection import (
    CLOSED,
    DEFAULT_MAX_REQUEST_SIZE,
    NEED_DATA,
    KafkaClientConnection,
    KafkaConnection,
    RequestReceived,
    ResponseReceived,
    Signal,
    UnsupportedRequest,
)
from .error_codes import ErrorCode
from .exceptions import (
    CorruptRecord,
    FrameTooLarge,
    LocalProtocolError,
    ProtocolError,
    RecordError,
    RecordTooLarge,
    RemoteProtocolError,
    UnsupportedCompression,
)
from .murmur2 import murmur2, partition_for_key, to_positive
from .records import (
    BatchHeader,
    NewRecord,
    Record,
    RecordBatch,
    TimestampType,
    build_batch,
    decode_batches,
    iter_batches,
    restamp,
    set_log_append_time,
)
from .schema import Message, Request, Response, Struct

__all__ = [
    "APIS", "CLOSED", "DEFAULT_MAX_REQUEST_SIZE", "DEFAULT_SUPPORTED", "NEED_DATA", "Api",
    "BatchHeader", "Codec", "CorruptRecord", "ErrorCode", "FrameTooLarge",
    "KafkaClientConnection", "KafkaConnection", "LocalProtocolError", "Message", "NewRecord",
    "ProtocolError", "Record", "RecordBatch", "RecordError", "RecordTooLarge",
    "RemoteProtocolError", "Request", "RequestReceived", "Response", "ResponseReceived",
    "Signal", "Struct", "TimestampType", "UnsupportedCompression", "UnsupportedRequest",
    "build_batch", "decode_batches", "decode_request", "decode_response", "encode_request",
    "encode_response", "iter_batches", "murmur2", "partition_for_key", "restamp",
    "set_log_append_time", "to_positive",
]
