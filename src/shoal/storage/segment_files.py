"""A partition's segment files on disk: the real `Directory` of events/segments.py.

The directory is created at the first write, so a group that is no event-log partition
leaves none. Appends and reads keep a few descriptors open (a partition appends to one `.log`
and its two indexes, and fetches read the same few files); whole-file writes go through write_atomic; `sync` fdatasyncs every file
written since the last sync, then the directory, so creations and deletions are durable too."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import io_error
from .files import sync_dir, sync_fd, write_atomic

OPEN_FILES = 8  # appends go to the active segment's three files; older descriptors close


class SegmentFiles:
    def __init__(self, dir: Path):
        self.dir = dir
        self._fds: dict[str, int] = {}  # appending
        self._readers: dict[str, int] = {}  # reading (fetches hit the same few files)
        self._dirty: set[str] = set()
        self._dir_dirty = False

    def names(self) -> list[str]:
        try:
            return sorted(p.name for p in self.dir.iterdir() if not p.name.endswith(".tmp"))
        except FileNotFoundError:
            return []

    def size(self, name: str) -> int:
        try:
            return (self.dir / name).stat().st_size
        except FileNotFoundError:
            return 0

    def read(self, name: str, offset: int = 0, size: int = -1) -> bytes:
        path = self.dir / name
        try:
            fd = self._readers.pop(name, None)
            if fd is None:
                fd = os.open(path, os.O_RDONLY)
                while len(self._readers) >= OPEN_FILES:
                    os.close(self._readers.pop(next(iter(self._readers))))
            self._readers[name] = fd  # (most recent last)
            if size < 0:
                size = max(0, os.fstat(fd).st_size - offset)
            return os.pread(fd, size, offset)
        except FileNotFoundError:
            return b""
        except OSError as e:
            raise io_error(e, "reading", path) from e

    def append(self, name: str, *data: bytes | memoryview) -> None:
        """The pieces in one writev (a batch goes as its new header and the rest, uncopied)."""
        fd, views = self._fd(name), [memoryview(d) for d in data]
        try:
            while views:
                n = os.writev(fd, views)
                while views and n >= len(views[0]):  # a short write (a nearly full disk)
                    n -= len(views.pop(0))
                if views:
                    views[0] = views[0][n:]
        except OSError as e:
            raise io_error(e, "writing", self.dir / name) from e
        self._dirty.add(name)

    def truncate(self, name: str, size: int) -> None:
        path = self.dir / name
        try:
            os.truncate(path, size)
        except OSError as e:
            raise io_error(e, "truncating", path) from e
        self._dirty.add(name)

    def write(self, name: str, data: bytes) -> None:
        self._close(name)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.dir / name, data)

    def delete(self, name: str) -> None:
        self._close(name)
        self._dirty.discard(name)
        try:
            (self.dir / name).unlink()
        except FileNotFoundError:
            return
        except OSError as e:
            raise io_error(e, "deleting", self.dir / name) from e
        self._dir_dirty = True

    def sync(self) -> None:
        for name in sorted(self._dirty):
            sync_fd(self._fd(name), self.dir / name)
        self._dirty.clear()
        if self._dir_dirty:
            sync_dir(self.dir)
            self._dir_dirty = False

    def close(self) -> None:
        for name in [*self._fds, *self._readers]:
            self._close(name)

    def _fd(self, name: str) -> int:
        fd = self._fds.pop(name, None)
        if fd is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            path = self.dir / name
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as e:
                raise io_error(e, "opening", path) from e
            self._dir_dirty = True
            while len(self._fds) >= OPEN_FILES:
                self._close(next(iter(self._fds)))
        self._fds[name] = fd  # (re-inserted: the dict keeps the most recent last)
        return fd

    def _close(self, name: str) -> None:
        """Close `name`'s descriptors: before it is replaced (a reader would keep reading the
        old file) or deleted."""
        for fds in (self._fds, self._readers):
            fd = fds.pop(name, None)
            if fd is not None:
                os.close(fd)
