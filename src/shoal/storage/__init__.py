"""Durable Raft state on real disks: a segmented write-ahead log and snapshot files."""

from .errors import CorruptSnapshot, CorruptWAL, StorageError, WrongIdentity
from .storage import Storage

__all__ = ["CorruptSnapshot", "CorruptWAL", "Storage", "StorageError", "WrongIdentity"]
