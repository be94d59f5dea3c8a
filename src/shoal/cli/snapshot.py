"""`shoal snapshot save|status|restore`: a consistent copy of the key-value store in a file,
what is in one, and a new data dir made from one (etcdctl's save, etcdutl's status and
restore).

A snapshot file is a replica's `snapshot_data()` (the store, with its own checksum, and the
member table), as `shoal snapshot save` writes it; a file `etcdctl snapshot save` wrote from
Shoal's etcd API (those bytes in etcd's framing) is read too."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from .common import (
    ENDPOINTS,
    Output,
    emit_json,
    fail,
    note,
    output_option,
    print_rows,
    print_table,
    run_client,
    size,
)

if TYPE_CHECKING:
    from ..client import Client
    from ..kv import KVStore

app = typer.Typer()
snapshot_app = typer.Typer(no_args_is_help=True,
                           help="Save, inspect and restore snapshots of the key-value store.")
app.add_typer(snapshot_app, name="snapshot")


@snapshot_app.command("save")
def snapshot_save(file: Path, endpoints: str = ENDPOINTS) -> None:
    """Write a consistent snapshot of the store to FILE."""
    async def body(client: Client) -> None:
        index, data = await client.snapshot()
        tmp = file.with_name(file.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(file)  # never leave a half-written snapshot under the real name
        note(f"snapshot at applied index {index} saved to {file} ({size(len(data))})")

    run_client(endpoints, body, timeout=60.0)


def _read(file: Path) -> tuple[bytes, KVStore, dict[int, str]]:
    """The file's snapshot bytes, its store and its member table; a one-line failure if it
    cannot be read or is not an intact snapshot."""
    from ..etcdapi.api import SNAPSHOT_MAGIC, unframe_snapshot
    from ..kv import CorruptSnapshot
    from ..replica.replica import snapshot_contents

    try:
        data = file.read_bytes()
        if data.startswith(SNAPSHOT_MAGIC):
            data = unframe_snapshot(data)
        store, members = snapshot_contents(data)
    except OSError as exc:
        raise fail(f"{file}: {exc.strerror or exc}") from None
    except (ValueError, CorruptSnapshot) as exc:
        raise fail(f"{file} is not an intact Shoal snapshot: {exc}") from None
    return data, store, members


def _all_keys(store: KVStore) -> int:
    from ..kv.requests import RangeRequest

    return store.range(RangeRequest(b"\0", b"\0", count_only=True)).count


@snapshot_app.command("status")
def snapshot_status(file: Path, output: Output = output_option(Output.table)) -> None:
    """What FILE holds: its revision, applied index, number of keys, size and hash (a CRC-32
    of the file's snapshot bytes), after checking the store's checksum."""
    data, store, members = _read(file)
    info: dict[str, Any] = {"hash": zlib.crc32(data), "revision": store.revision,
                            "index": store.applied_index, "keys": _all_keys(store),
                            "size": len(data), "members": sorted(members)}
    if output is Output.json:
        emit_json(info)
        return
    row = [f"{info['hash']:08x}", *(str(info[k]) for k in ("revision", "index", "keys", "size")),
           ",".join(map(str, info["members"]))]
    if output is Output.simple:
        print_rows([row])
    else:
        print_table(["hash", "revision", "index", "keys", "size", "members"], [row],
                    right=("revision", "index", "keys", "size"))


@snapshot_app.command("restore")
def snapshot_restore(
    file: Path,
    data_dir: Path = typer.Option(..., "--data-dir", help="the new data dir (must not exist)"),
    id: int = typer.Option(..., "--id", help="the member id of the node that will run on it"),
    members: str = typer.Option(
        ..., "--members", help="the new cluster: ID=HOST:PEER_PORT/HOST:CLIENT_PORT,..."),
    cluster_id: str = typer.Option("shoal", "--cluster-id", help="the new cluster's name"),
) -> None:
    """Make a new data dir holding FILE's keys, for a new cluster (etcdutl's restore).

    Start the node with the same --id, --members and --cluster-id, without --join. The old
    cluster's membership is not kept: the new one is --members (one member: a single-node
    cluster). History, leases and revisions are those of the snapshot."""
    from ..consensus.messages import ConfState, HardState, Ready, Snapshot, SnapshotMeta
    from ..replica.replica import rebase_snapshot
    from ..server.config import ConfigError, parse_members
    from ..server.node import cluster_number
    from ..storage import Storage, StorageError

    try:
        specs = {m.id: m.describe() for m in parse_members(members)}
    except ConfigError as exc:
        raise fail(f"--members: {exc}", 2) from None
    if id not in specs:
        raise fail(f"--id {id} is not in --members (ids {', '.join(map(str, specs))})", 2)
    if data_dir.exists():
        raise fail(f"{data_dir} already exists: restore makes a new data dir", 2)
    data, store, _ = _read(file)
    # The log of the new cluster starts after the snapshot, in term 1, committed up to it.
    index = max(store.applied_index, 1)
    snap = Snapshot(SnapshotMeta(index, 1, ConfState(voters=frozenset(specs))),
                    rebase_snapshot(data, specs))
    try:
        storage, _ = Storage.open(data_dir, cluster_id=cluster_number(cluster_id), node_id=id)
        with storage:
            storage.save(Ready(hard_state=HardState(term=1, commit=index), snapshot=snap,
                               must_sync=True))
    except StorageError as exc:
        raise fail(f"data dir: {exc}") from None
    note(f"restored {file} (revision {store.revision}, {_all_keys(store)} keys) into "
         f"{data_dir} for member {id} of cluster {cluster_id!r}")
