"""A full or failing disk (issue 10, finding 6): a write that cannot be persisted is neither
acknowledged nor voted on, fails fast with the cause, raises NOSPACE, makes /health false, is
logged once, and the member recovers by itself once space returns, losing nothing it
acknowledged.

The storage layer's retry is tested with injected OSErrors (exact bytes compared with a run
that never failed). The member's behaviour is tested on a real full filesystem: `shoal node`
processes whose data dirs are small tmpfs mounts, filled by a file the test then deletes
(needs the right to mount; skipped without it)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster import free_ports, run
from shoal.client.aio import Client
from shoal.client.errors import ClientError
from shoal.consensus.messages import Entry, EntryKind, HardState, Ready
from shoal.kv.requests import PutRequest, encode_command
from shoal.storage import Storage
from shoal.storage.errors import StorageError


def ents(first: int, n: int, term: int = 1, size: int = 10) -> list[Entry]:
    return [Entry(term, i, EntryKind.NORMAL, bytes([i % 256]) * size) for i in range(first, first + n)]


def readies() -> list[Ready]:
    return [Ready(entries=ents(i, 3), hard_state=HardState(1, 1, i), must_sync=True)
            for i in range(1, 40, 3)]


def wal_bytes(dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(dir.glob("*.wal"))}


def clean_run(dir: Path, segment_bytes: int) -> dict[str, bytes]:
    s, _ = Storage.open(dir, cluster_id=1, node_id=1, segment_bytes=segment_bytes)
    for rd in readies():
        s.save(rd)
    s.close()
    return wal_bytes(dir)


class Failing:
    """Wraps an os function: raises OSError(code) while `on`, otherwise calls through."""

    def __init__(self, real, code: int):
        self.real, self.code, self.on, self.calls = real, code, False, 0

    def __call__(self, *args):
        if self.on:
            self.calls += 1
            raise OSError(self.code, os.strerror(self.code))
        return self.real(*args)


@pytest.mark.parametrize("what,code", [("write", errno.ENOSPC), ("fdatasync", errno.EIO),
                                       ("fsync", errno.ENOSPC)])
def test_a_refused_save_is_retried_until_it_goes_through_and_the_wal_is_as_if_it_never_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str, code: int) -> None:
    """Every Ready is first saved while the call fails (a write, an fsync after the write
    went through, or a directory fsync, which only rolling to a new segment needs), and saved
    again where that was refused: the files end up byte for byte those of a run that never
    failed, so no record is lost or doubled."""
    segment_bytes = 300  # rolls every few Readies, so directory fsyncs happen too
    want = clean_run(tmp_path / "clean", segment_bytes)
    fault = Failing(getattr(os, what), code)
    monkeypatch.setattr(os, what, fault)
    s, _ = Storage.open(tmp_path / "d", cluster_id=1, node_id=1, segment_bytes=segment_bytes)
    refused = 0
    for rd in readies():
        fault.on = True
        try:
            s.save(rd)
            continue
        except StorageError as exc:
            refused += 1
            assert ("disk full" if code == errno.ENOSPC else "I/O error") in str(exc)
        finally:
            fault.on = False
        s.save(rd)
    s.close()
    assert refused >= 3 and fault.calls >= 3
    assert wal_bytes(tmp_path / "d") == want
    _, durable = Storage.open(tmp_path / "d", cluster_id=1, node_id=1)
    assert [e.index for e in durable.entries] == list(range(1, 40))


def test_a_failed_snapshot_save_leaves_no_file_behind_and_can_be_saved_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shoal.consensus.messages import ConfState, Snapshot, SnapshotMeta

    s, _ = Storage.open(tmp_path, cluster_id=1, node_id=1)
    s.save(Ready(entries=ents(1, 5), must_sync=True))
    snap = Snapshot(SnapshotMeta(3, 1, ConfState(frozenset({1}))), b"s" * 5000)
    fault = Failing(os.fdatasync, errno.ENOSPC)
    with monkeypatch.context() as m:
        m.setattr(os, "fdatasync", fault)
        fault.on = True
        with pytest.raises(StorageError, match="disk full"):
            s.save_snapshot(snap)
    assert not list(tmp_path.glob("*.snap*")) and s.snapshot_index == 0
    s.save_snapshot(snap)
    s.save(Ready(entries=ents(6, 1), must_sync=True))
    s.close()
    _, durable = Storage.open(tmp_path, cluster_id=1, node_id=1)
    assert durable.snapshot == snap and [e.index for e in durable.entries] == [4, 5, 6]


# ---------------------------------------------------------------- a real full filesystem
@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[list[Path]]:
    """Three 16 MiB tmpfs mounts under tmp_path (skipped where mounting is not allowed)."""
    made: list[Path] = []
    try:
        for i in range(3):
            p = tmp_path / f"fs{i + 1}"
            p.mkdir()
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(p)],
                                  capture_output=True, text=True)
            if done.returncode:
                pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
            made.append(p)
        yield made
    finally:
        for p in made:
            subprocess.run(["umount", "-l", str(p)], capture_output=True)


def fill(fs: Path, leave: int) -> Path:
    """Take all but `leave` bytes of the filesystem with one file."""
    filler = fs / "filler"
    st = os.statvfs(fs)
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


class Proc:
    def __init__(self, i: int, spec: str, fs: Path, http: int, log: Path):
        self.i, self.spec, self.fs, self.http, self.log = i, spec, fs, http, log
        self.p: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = open(self.log, "ab")  # outside the full filesystem, so the log can be read
        self.p = subprocess.Popen(
            [sys.executable, "-m", "shoal", "node", "--id", str(self.i), "--data-dir",
             str(self.fs / "data"), "--members", self.spec, "--http", f"127.0.0.1:{self.http}",
             "--tick-ms", "20"], stdout=out, stderr=out)

    def kill(self) -> None:
        if self.p is not None and self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
            self.p.wait(10)

    def get(self, path: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=2) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def lines(self, text: str) -> int:
        return sum(text in line for line in self.log.read_text().splitlines())


def wait(pred, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if got := pred():
                return got
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def start_cluster(mounts: list[Path], tmp_path: Path, n: int) -> tuple[list[Proc], list[str]]:
    ports = free_ports(3 * n)
    spec = ",".join(f"{i + 1}=127.0.0.1:{ports[3 * i]}/127.0.0.1:{ports[3 * i + 1]}"
                    for i in range(n))
    procs = [Proc(i + 1, spec, mounts[i], ports[3 * i + 2], tmp_path / f"n{i + 1}.log")
             for i in range(n)]
    for p in procs:
        p.start()
    wait(lambda: all(p.get("/health")[0] == 200 for p in procs), 20, "a healthy cluster")
    return procs, [f"127.0.0.1:{ports[3 * i + 1]}" for i in range(n)]


async def put_once(client: Client, key: bytes, value: bytes) -> tuple[bool, str, float]:
    """One attempt, no retry: (acknowledged, error message, seconds it took)."""
    t = time.monotonic()
    try:
        await client.call("kv", {"cmd": encode_command(PutRequest(key, value))}, retry=False)
        return True, "", time.monotonic() - t
    except ClientError as exc:
        return False, str(exc), time.monotonic() - t


def test_a_member_on_a_full_disk_refuses_writes_at_once_then_recovers_by_itself(
        mounts: list[Path], tmp_path: Path) -> None:
    """The finding's setup, one member on a small filesystem written until it is full."""
    procs, endpoints = start_cluster(mounts, tmp_path, 1)
    node = procs[0]
    try:
        filler = fill(mounts[0], leave=400_000)
        value = b"v" * 8_000

        async def until_full() -> tuple[list[bytes], list[tuple[str, float]]]:
            async with Client(endpoints, timeout=5) as c:
                acked, refused = [], []
                for k in range(400):
                    ok, err, took = await put_once(c, b"k%03d" % k, value)
                    if ok:
                        acked.append(b"k%03d" % k)
                    else:
                        refused.append((err, took))
                        if len(refused) == 20:
                            break
                # Reads go on: the acknowledged data, straight from this member's store.
                got = await c.get(acked[-1], serializable=True)
                assert got.kvs[0].value == value
                return acked, refused

        acked, refused = run(until_full())
        assert 10 < len(acked) < 400 and len(refused) == 20
        for err, took in refused:  # each names the cause, and none waited for a timeout
            assert "disk full" in err and took < 2.0, (err, took)
        code, health = node.get("/health")
        assert code == 503 and any("disk full" in r for r in health["reasons"]), health
        assert [1, "NOSPACE"] in node.get("/status")[1]["alarms"]
        assert node.lines("cannot persist") == 1  # one line, not one per refused write

        filler.unlink()  # space returns; nobody restarts anything

        async def after() -> None:
            async with Client(endpoints, timeout=5) as c:
                end = time.monotonic() + 10
                while not (await put_once(c, b"after", b"1"))[0]:
                    assert time.monotonic() < end, "writes did not resume once space returned"
                for k in acked:
                    assert (await c.get(k)).kvs[0].value == value

        run(after())
        assert node.get("/health")[0] == 200 and node.get("/status")[1]["alarms"] == []
        assert node.lines("persists again") == 1
        # Nothing acknowledged was lost, and the log on disk is whole: after a SIGKILL the
        # member recovers all of it.
        node.kill()
        node.start()
        wait(lambda: node.get("/health")[0] == 200, 20, "the restarted member")

        async def reread() -> None:
            async with Client(endpoints, timeout=5) as c:
                for k in [*acked, b"after"]:
                    assert (await c.get(k)).kvs, k

        run(reread())
    finally:
        for p in procs:
            p.kill()


def test_a_leader_whose_disk_fills_stops_leading_and_catches_up_once_space_returns(
        mounts: list[Path], tmp_path: Path) -> None:
    """Three members, each on its own filesystem; the leader's fills. It acknowledges
    nothing it could not persist and claims no leadership meanwhile, so the other two elect a
    leader and go on taking writes; freed, it rejoins and catches up."""
    procs, endpoints = start_cluster(mounts, tmp_path, 3)
    try:
        lead = wait(lambda: next((p for p in procs if p.get("/status")[1]["role"] == "leader"),
                                 None), 10, "a leader")
        fill(lead.fs, leave=0)

        async def writes() -> int:
            async with Client(endpoints, timeout=10) as c:  # retries, as clients do
                for k in range(50):
                    await c.put(b"w%02d" % k, b"x" * 1000)
                return (await c.get(b"w49")).header.revision

        revision = run(writes())
        others = [p for p in procs if p is not lead]
        new = {p.get("/status")[1]["leader"] for p in others}
        assert len(new) == 1 and lead.i not in new, new
        code, health = lead.get("/health")
        assert code == 503 and any("disk full" in r for r in health["reasons"]), health
        assert lead.lines("cannot persist") == 1

        (lead.fs / "filler").unlink()
        wait(lambda: lead.get("/health")[0] == 200 and
             lead.get("/status")[1]["revision"] >= revision, 15, "the old leader to catch up")
        assert lead.get("/status")[1]["alarms"] == [] and lead.lines("persists again") == 1
    finally:
        for p in procs:
            p.kill()
