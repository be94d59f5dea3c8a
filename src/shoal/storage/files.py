"""Whole-file helpers: checksummed blobs written atomically (the metadata record and the
snapshots), and the low-level write/sync calls every storage file goes through.

All writes use os.write on raw descriptors: there is no hidden user-space buffer whose
flushing could fail later, and tests can inject failures in one place."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from .errors import StorageError, io_error

# magic, crc32 of the body, body length. The length lets us tell a truncated file from a
# damaged one, and the CRC catches everything else.
BLOB_HEADER = struct.Struct("<4sIQ")


def write_all(fd: int, data: bytes | bytearray | memoryview, path: Path) -> None:
    """os.write may write less than asked (a nearly full disk does): loop until done."""
    view = memoryview(data)
    try:
        while view:
            n = os.write(fd, view)
            view = view[n:]
    except OSError as e:
        raise io_error(e, "writing", path) from e


def sync_fd(fd: int, path: Path) -> None:
    # fdatasync flushes the data and the size, which is all a reader needs; not the mtime.
    try:
        os.fdatasync(fd)
    except OSError as e:
        raise io_error(e, "syncing", path) from e


def sync_dir(path: Path) -> None:
    """Make creations, renames and deletions in `path` durable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise io_error(e, "syncing directory", path) from e


def pack_blob(magic: bytes, body: bytes) -> bytes:
    assert len(magic) == 4
    return BLOB_HEADER.pack(magic, zlib.crc32(body), len(body)) + body


def unpack_blob(magic: bytes, data: bytes) -> bytes:
    """The body of a blob, or ValueError saying what is wrong with it."""
    if len(data) < BLOB_HEADER.size:
        raise ValueError(f"{len(data)} bytes is shorter than the {BLOB_HEADER.size}-byte header")
    got_magic, crc, length = BLOB_HEADER.unpack_from(data)
    if got_magic != magic:
        raise ValueError(f"magic {got_magic!r}, expected {magic!r}")
    body = data[BLOB_HEADER.size :]
    if len(body) != length:
        raise ValueError(f"header says {length} body bytes, file has {len(body)}")
    if zlib.crc32(body) != crc:
        raise ValueError("CRC mismatch")
    return body


def write_atomic(path: Path, data: bytes) -> None:
    """Temp file, fsync, rename, directory fsync: after a crash `path` holds either its old
    content or all of `data`, never a mix."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as e:
        raise io_error(e, "creating", tmp) from e
    try:
        try:
            write_all(fd, data, tmp)
            sync_fd(fd, tmp)
        finally:
            os.close(fd)
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise io_error(e, "renaming", tmp) from e
    except StorageError:
        tmp.unlink(missing_ok=True)  # a half-written temp file is never read, but takes space
        raise
    sync_dir(path.parent)


def truncate_file(path: Path, size: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise io_error(e, "truncating", path) from e
