"""`shoal failover run|status|write|read`: primary-backup members of a replicated service
(shoal.failover, docs/failover.md).

`run` is one member process; it logs to stderr and prints one JSON line on stdout once its
port listens ({"member", "service", "addr", "pid"}). `status` reads the service's keys in the
store and asks every member for its own figures (-o json: the shape in docs/failover.md)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from .common import (
    ENDPOINTS,
    Output,
    client_options,
    emit_json,
    endpoint_list,
    fail,
    interruptible,
    output_option,
    print_rows,
    print_table,
    run_client,
)

if TYPE_CHECKING:
    from ..client import Client
    from ..failover import Secret

app = typer.Typer()
failover_app = typer.Typer(no_args_is_help=True,
                           help="Primary-backup replicated services: run members, see status.")
app.add_typer(failover_app, name="failover")

SECRET = typer.Option(None, "--secret-file", help="shared secret of the service's member ports "
                      "(HMAC challenge; members refuse peers and clients without it)")


def _secret(path: Path | None) -> Secret | None:
    from ..failover import Secret

    if path is None:
        return None
    try:
        return Secret.from_file(path)
    except (OSError, ValueError) as exc:
        raise fail(f"--secret-file: {exc}") from None


def _hostport(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise fail(f"{what} {text!r}: write host:port")
    return host or "127.0.0.1", int(port)


@failover_app.command("run")
def run(
    service: str = typer.Option(..., "--service", help="the service's name"),
    member_id: int = typer.Option(..., "--id", help="this member's id (1, 2, ...)"),
    mode: str = typer.Option("sync", "--mode", help="sync, semi or async"),
    data_dir: Path = typer.Option(..., "--dir", help="where the log and snapshot live"),
    listen: str = typer.Option("127.0.0.1:0", "--listen", help="host:port of the member port"),
    advertise: str | None = typer.Option(None, "--advertise", help="host:port others dial "
                                         "(default: the bound listen address)"),
    app_name: str = typer.Option("kv", "--app", help="the example state machine: kv or counter"),
    ttl: int = typer.Option(2, "--ttl", min=1, help="lease seconds: how long a dead primary "
                            "keeps the role"),
    snapshot_every: int = typer.Option(10_000, "--snapshot-every", min=1,
                                       help="entries between snapshots (the log's bound)"),
    sync_timeout: float = typer.Option(1.0, "--sync-timeout", help="seconds a sync-set backup "
                                       "may hold a write up before it is dropped from the set"),
    secret_file: Path | None = SECRET,
    allow_faults: bool = typer.Option(False, "--allow-faults", help="accept the `isolate` "
                                      "fault request (benchmarks)"),
    endpoints: str = ENDPOINTS,
) -> None:
    """Run one member of SERVICE until Ctrl-C or SIGTERM."""
    from ..client import Client
    from ..failover import APPS, MODES, Member, MemberConfig, StorageError

    if mode not in MODES:
        raise fail(f"--mode {mode!r}: use one of {', '.join(MODES)}")
    if app_name not in APPS:
        raise fail(f"--app {app_name!r}: use one of {', '.join(APPS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = MemberConfig(service, member_id, mode, data_dir, _hostport(listen, "--listen"),
                       advertise, ttl, _secret(secret_file), snapshot_every,
                       sync_timeout=sync_timeout, allow_faults=allow_faults)
    try:
        cfg.check()
    except ValueError as exc:
        raise fail(str(exc)) from None
    eps = endpoint_list(endpoints)

    async def main() -> None:
        async with Client(eps, timeout=5.0, **client_options()) as store:
            member = Member(cfg, store, APPS[app_name]())
            await member.start()
            emit_json({"member": member_id, "service": service, "addr": member.addr,
                       "pid": os.getpid()})
            try:
                await interruptible(asyncio.Event().wait())
            finally:
                await member.stop()

    try:
        asyncio.run(main())
    except (StorageError, OSError, ValueError) as exc:
        raise fail(str(exc)) from None


@failover_app.command("status")
def status(
    service: str = typer.Option(..., "--service", help="the service's name"),
    secret_file: Path | None = SECRET,
    endpoints: str = ENDPOINTS,
    output: Output = output_option(Output.table),
) -> None:
    """Roles, fencing tokens, applied index and lag of SERVICE's members."""
    secret = _secret(secret_file)

    async def body(client: Client) -> int:
        report = await service_status(client, service, secret)
        if output is Output.json:
            emit_json(report)
            return 0
        rows = [[str(m["id"]), m["role"], m["addr"], str(m["token"]), str(m["applied"]),
                 "" if m["lag"] is None else str(m["lag"]),
                 "" if m["heard_s"] is None else f"{m['heard_s']:.2f}s",
                 "yes" if m["in_syncset"] else "", m["state"]] for m in report["members"]]
        if output is Output.simple:
            print_rows(rows)
            return 0
        p = report["primary"]
        ss = report["syncset"] or {}
        title = (f"service {service}: primary {p['id']} (token {p['token']}), "
                 f"{ss.get('mode', '?')} mode, sync set {ss.get('members', [])}" if p
                 else f"service {service}: no primary now (last token {report['term']})")
        print_table(["id", "role", "address", "token", "applied", "lag", "heard", "sync set",
                     "state"], rows, title=title, right=("id", "token", "applied", "lag"))
        return 0

    run_client(endpoints, body)


async def service_status(client: Client, service: str,
                         secret: Secret | None = None) -> dict[str, Any]:
    """What `shoal failover status -o json` prints."""
    from ..failover import ServiceClient

    svc = ServiceClient(client, service, secret)
    try:
        found = await svc.members()
        ss = found["syncset"] or {}
        lives: dict[int, dict[str, Any] | str] = {}

        async def ask(info: dict[str, Any]) -> None:
            try:
                lives[info["id"]] = await asyncio.wait_for(svc.status_of(info["addr"]), 2.0)
            except Exception as exc:  # noqa: BLE001 - any failure: shown as unreachable
                lives[info["id"]] = f"unreachable: {exc}"

        await asyncio.gather(*(ask(m) for m in found["members"]))
    finally:
        await svc.close()
    members = []
    top = 0
    for info in found["members"]:
        live = lives.get(info["id"])
        if isinstance(live, dict) and live.get("role") == "primary":
            top = max(top, live["applied"])
    for info in sorted(found["members"], key=lambda m: m["id"]):
        live = lives.get(info["id"])
        d = live if isinstance(live, dict) else info
        members.append({
            "id": info["id"], "addr": info["addr"], "role": d["role"], "token": d["token"],
            "applied": d["applied"], "retired": d["retired"],
            "lag": (top - d["applied"]) if top else None,
            "heard_s": d.get("heard_s") if isinstance(live, dict) else None,
            "in_syncset": info["id"] in ss.get("members", []),
            "state": "live" if isinstance(live, dict) else str(live),
            "counters": d.get("counters", {})})
    return {"service": service, "revision": found["revision"], "primary": found["primary"],
            "term": found["term"], "syncset": found["syncset"], "beacon": found["beacon"],
            "members": members}


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise fail(f"{what} is not JSON: {exc}") from None


@failover_app.command("write")
def write(
    op: str = typer.Argument(..., help='the operation as JSON, e.g. \'{"put": "a", "value": 1}\''),
    service: str = typer.Option(..., "--service"),
    secret_file: Path | None = SECRET,
    endpoints: str = ENDPOINTS,
) -> None:
    """Send one write to SERVICE's primary; print {"result", "index", "token"}."""
    value = _json_arg(op, "the operation")
    secret = _secret(secret_file)

    async def body(client: Client) -> int:
        from ..failover import ServiceClient, ServiceError

        svc = ServiceClient(client, service, secret)
        try:
            emit_json(await svc.write(value))
        except ServiceError as exc:
            raise fail(f"{exc.code}: {exc}") from None
        finally:
            await svc.close()
        return 0

    run_client(endpoints, body)


@failover_app.command("read")
def read(
    query: str = typer.Argument(..., help='the read as JSON, e.g. \'{"get": "a"}\''),
    service: str = typer.Option(..., "--service"),
    member: str | None = typer.Option(None, "--member", help="a member's host:port (default: "
                                      "the primary)"),
    secret_file: Path | None = SECRET,
    endpoints: str = ENDPOINTS,
) -> None:
    """Read from SERVICE (a backup with --member); print the result with its staleness."""
    value = _json_arg(query, "the read")
    secret = _secret(secret_file)

    async def body(client: Client) -> int:
        from ..failover import ServiceClient, ServiceError

        svc = ServiceClient(client, service, secret)
        try:
            emit_json(await svc.read(value, member=member))
        except (ServiceError, OSError) as exc:
            raise fail(str(exc)) from None
        finally:
            await svc.close()
        return 0

    run_client(endpoints, body)
