"""`shoal node`: run one member of a cluster in this process."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from .common import fail

app = typer.Typer()


@app.command()
def node(
    id: int | None = typer.Option(None, "--id", help="this node's member id"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="WAL and snapshots live here"),
    members: str | None = typer.Option(
        None, "--members", help="initial cluster: ID=HOST:PEER_PORT/HOST:CLIENT_PORT,..."),
    http: str | None = typer.Option(None, "--http", help="HOST:PORT for /health /status /metrics"),
    config: Path | None = typer.Option(None, "--config", help="TOML file; flags override it"),
    cluster_id: str | None = typer.Option(None, "--cluster-id", help="the cluster's name"),
    join: bool = typer.Option(False, "--join", help="join a running cluster (no bootstrap)"),
    repair: bool = typer.Option(False, "--repair", help="drop a corrupt WAL tail and go on"),
    tick_ms: int | None = typer.Option(None, "--tick-ms"),
    election_ticks: int | None = typer.Option(None, "--election-ticks"),
    snapshot_entries: int | None = typer.Option(None, "--snapshot-entries"),
    auto_compact: int | None = typer.Option(None, "--auto-compact",
                                            help="revisions of history to keep (0 = keep all)"),
    engine: str | None = typer.Option(None, "--engine", help="consensus engine: raft or paxos"),
    no_fsync: bool = typer.Option(False, "--no-fsync", help="unsafe: do not fsync the WAL"),
    tls_cert: Path | None = typer.Option(None, "--tls-cert"),
    tls_key: Path | None = typer.Option(None, "--tls-key"),
    tls_ca: Path | None = typer.Option(None, "--tls-ca"),
    allow_faults: bool = typer.Option(
        False, "--allow-faults", help="serve /faults (fault injection); needs --admin-token-file"),
    admin_token_file: Path | None = typer.Option(
        None, "--admin-token-file", help="file holding the bearer token /faults and /status need"),
    peer_secret_file: Path | None = typer.Option(
        None, "--peer-secret-file", help="file holding the secret every member of the cluster shares"),
    quota_backend_bytes: int | None = typer.Option(
        None, "--quota-backend-bytes", help="past this much data, writes that add data fail"),
) -> None:
    """Run one node until SIGTERM or Ctrl-C.

    On the way out it hands leadership over. Exits 2 on a bad configuration, a port in use,
    or a data dir that belongs to another cluster or node (or is corrupt)."""
    from ..server.config import ConfigError, load
    from ..server.main import run
    from ..storage import StorageError, WrongIdentity

    overrides = {
        "id": id, "data_dir": data_dir, "members": members, "http": http,
        "cluster_id": cluster_id, "join": join or None, "repair": repair or None,
        "tick_ms": tick_ms, "election_ticks": election_ticks,
        "snapshot_entries": snapshot_entries, "fsync": False if no_fsync else None,
        "engine": engine, "auto_compact_revisions": auto_compact,
        "tls_cert": tls_cert, "tls_key": tls_key, "tls_ca": tls_ca,
        "allow_faults": allow_faults or None, "admin_token_file": admin_token_file,
        "peer_secret_file": peer_secret_file, "quota_backend_bytes": quota_backend_bytes,
    }
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load(config, overrides)
        run(cfg)
    except ConfigError as exc:
        raise fail(f"configuration: {exc}", 2) from None
    except WrongIdentity as exc:
        raise fail(f"data dir: {exc}{_identity_hint(str(exc), cfg.data_dir, cfg.cluster_id)}",
                   2) from None
    except StorageError as exc:
        raise fail(f"data dir: {exc}", 2) from None
    except OSError as exc:  # a port taken between the check and the bind
        raise fail(str(exc), 2) from None


def _identity_hint(message: str, data_dir: Path, cluster_id: str) -> str:
    """The flag that fixes a refused data dir. A data dir keeps only its cluster's number, but
    one made by `shoal cluster up` has the cluster's name in a file beside it."""
    from ..server.node import cluster_number

    kept = data_dir.parent / "cluster-id"
    try:
        name = kept.read_text().strip()
    except OSError:
        name = ""
    if name and name != cluster_id and f"belongs to cluster {cluster_number(name)} " in message:
        return f"; start it with --cluster-id {name} (the name in {kept})"
    return "; start it with the --cluster-id and --id it was created with"
