"""The codec's exceptions: whose fault it was decides what the server does next.

As in h11, a failure is typed by who broke the protocol, because the right reaction differs:

- `RemoteProtocolError`: the peer sent bytes that are not Kafka (a truncated field, a length
  past the end of the frame, a varint longer than its type, bytes left over after the last
  field, a size prefix over the limit). Kafka closes the connection on these, and so should
  the server: the stream can no longer be trusted to be in step. `FrameTooLarge` is the one
  raised for a size prefix over `max_request_size`, before any of the frame is buffered.
- `LocalProtocolError`: our own code asked for something the protocol cannot say (a field
  set to a non-default value in a version that does not carry it, an int out of its range,
  None for a field not nullable at that version, a response for a request that was not
  pending). It is a bug in the caller, raised before any byte is produced.
- `RecordError` and its subclasses: a record batch inside an otherwise well-formed request is
  bad (CRC mismatch, lengths that disagree, a codec that fails or inflates past the limit).
  Kafka answers these per partition with the error code the exception carries
  (`CORRUPT_MESSAGE`, `MESSAGE_TOO_LARGE`, `UNSUPPORTED_COMPRESSION_TYPE`) and keeps the
  connection, so they are raised by the records module, which the server calls on the raw
  `records` bytes of a partition, never by request decoding itself.

An unsupported api key or version is none of these: it is a request the server answers
(`UnsupportedRequest` in the connection module), not an exception.
"""

from __future__ import annotations

from .error_codes import ErrorCode


class ProtocolError(Exception):
    """Base of the codec's errors. `error_code` is the Kafka code that best describes it."""

    error_code: ErrorCode = ErrorCode.INVALID_REQUEST

    def __init__(self, message: str, error_code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if error_code is not None:
            self.error_code = error_code


class RemoteProtocolError(ProtocolError):
    """The peer's bytes are malformed; the connection should be closed."""


class FrameTooLarge(RemoteProtocolError):
    """A size prefix above the connection's `max_request_size` (refused before buffering)."""


class LocalProtocolError(ProtocolError):
    """Our caller asked the codec to write something the protocol cannot express."""


class RecordError(RemoteProtocolError):
    """A record batch is unusable; answer its partition with `error_code`."""

    error_code = ErrorCode.CORRUPT_MESSAGE


class CorruptRecord(RecordError):
    """A batch's CRC, magic, lengths or record framing are wrong."""

    error_code = ErrorCode.CORRUPT_MESSAGE


class RecordTooLarge(RecordError):
    """A batch, or what it decompresses to, is larger than the configured bound."""

    error_code = ErrorCode.MESSAGE_TOO_LARGE


class UnsupportedCompression(RecordError):
    """A batch names a compression codec this build cannot (or, by its magic, may not) use."""

    error_code = ErrorCode.UNSUPPORTED_COMPRESSION_TYPE
