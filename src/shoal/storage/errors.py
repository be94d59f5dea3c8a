"""Errors of the storage layer. Every one names the file (and, for a corrupt log, the byte
offset) so an operator can look at the bytes themselves."""

from __future__ import annotations

import errno
from pathlib import Path


class StorageError(Exception):
    """Persisting or recovering failed; the node must not go on as if it had succeeded."""


class CorruptWAL(StorageError):
    """A log record that is not a torn tail is damaged: refusing to guess what it held."""

    def __init__(self, path: Path, offset: int, reason: str):
        super().__init__(
            f"corrupt WAL: {path} at byte offset {offset}: {reason} "
            "(start with repair=True / `shoal node --repair` to drop it and everything after)"
        )
        self.path = path
        self.offset = offset
        self.reason = reason


class CorruptSnapshot(StorageError):
    def __init__(self, path: Path, reason: str):
        super().__init__(f"corrupt snapshot {path}: {reason}")
        self.path = path


class WrongIdentity(StorageError):
    """The data dir was created for another cluster or node: using it would mix two logs."""


def io_error(e: OSError, doing: str, path: Path) -> StorageError:
    """Turn an OSError into a StorageError that says what we were doing to which file."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(f"disk full while {doing} {path}")
    return StorageError(f"I/O error while {doing} {path}: {e.strerror or e}")
