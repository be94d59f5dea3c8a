"""The `shoal service` commands (register, list, watch) and `shoal gateway`."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TYPE_CHECKING, Any

import typer

from .common import (
    ENDPOINTS,
    Output,
    console,
    emit_json,
    endpoint_list,
    fail,
    interruptible,
    output_option,
    print_rows,
    run_client,
)

if TYPE_CHECKING:
    from rich.table import Table

    from ..client import Client

app = typer.Typer()
service_app = typer.Typer(no_args_is_help=True, help="Register, list and watch service instances.")
app.add_typer(service_app, name="service")


def _host_port(value: str, option: str) -> str:
    """":8080" means every interface; anything else must be HOST:PORT."""
    from ..registry import parse_address

    address = f"0.0.0.0{value}" if value.startswith(":") else value
    try:
        parse_address(address, listen=True)
    except ValueError as exc:
        raise fail(f"{option}: {exc}", 2) from None
    return address


@service_app.command("register")
def service_register(
    name: str,
    address: str = typer.Option(..., "--address", help="HOST:PORT clients should use"),
    id: str | None = typer.Option(None, "--id", help="instance id (default: from the address)"),
    weight: int = typer.Option(100, "--weight", min=0, help="relative share; 0 = drained"),
    zone: str = typer.Option("", "--zone"),
    version: str = typer.Option("", "--version"),
    tag: list[str] = typer.Option([], "--tag", help="repeatable"),
    ttl: int = typer.Option(10, "--ttl", min=2, help="lease seconds: how long a dead process lingers"),
    endpoints: str = ENDPOINTS,
) -> None:
    """Register an instance and hold it (lease keep-alive) until Ctrl-C, then deregister."""
    from ..registry import Instance, Registration

    instance_id = id or address.replace("[", "").replace("]", "").replace(":", "-")
    try:
        inst = Instance(name, instance_id, address, weight, zone, version, tuple(tag))
    except ValueError as exc:
        raise fail(str(exc), 2) from None

    async def body(client: Client) -> None:
        async with Registration(client, inst, ttl) as reg:
            typer.echo(f"registered {inst.key.decode()} at {address} with lease {reg.lease_id:x} "
                       f"(TTL {ttl} s); Ctrl-C deregisters")
            sys.stdout.flush()
            await interruptible(asyncio.Event().wait())
        typer.echo(f"deregistered {inst.key.decode()}")

    run_client(endpoints, body)


def _instances_table(name: str, instances: tuple, stale: bool) -> Table:  # type: ignore[type-arg]
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"service {name}" + (" (STALE: store unreachable)" if stale else ""),
                  title_justify="left")
    for col in ("id", "address", "weight", "zone", "version", "tags"):
        table.add_column(col, overflow="fold")
    for i in instances:
        table.add_row(*(escape(c) for c in _instance_row(i)))
    return table


def _instance_row(i: Any) -> list[str]:
    return [i.id, i.address, str(i.weight), i.zone, i.version, ",".join(i.tags)]


def _instance_json(i: Any) -> dict[str, Any]:
    return {"id": i.id, "address": i.address, "weight": i.weight, "zone": i.zone,
            "version": i.version, "tags": list(i.tags)}


@service_app.command("list")
def service_list(name: str, endpoints: str = ENDPOINTS,
                 output: Output = output_option(Output.table)) -> None:
    """Print the live instances of NAME."""
    from ..registry import list_instances

    async def body(client: Client) -> None:
        instances = await list_instances(client, name)
        if output is Output.json:
            emit_json({"service": name, "instances": [_instance_json(i) for i in instances]})
        elif output is Output.simple:
            print_rows([_instance_row(i) for i in instances])
        else:
            console().print(_instances_table(name, instances, False))

    run_client(endpoints, body)


@service_app.command("watch")
def service_watch(name: str, endpoints: str = ENDPOINTS,
                  output: Output = output_option(Output.simple)) -> None:
    """Print the instances of NAME, then each change (+ joined, - left, ~ changed) until Ctrl-C.

    With -o json, one JSON object per change and line (JSON lines)."""
    from ..registry import ServiceWatcher

    if output is Output.table:
        raise fail("service watch prints -o simple or -o json: a stream has no table", 2)

    def say(change: str, iid: str, inst: Any | None) -> None:
        if output is Output.json:
            emit_json({"change": change, "id": iid,
                       "instance": _instance_json(inst) if inst is not None else None})
        else:
            typer.echo(f"{change} {iid}" + (f" {inst.address}" if inst is not None else ""))

    async def body(client: Client) -> None:
        async def stream() -> None:
            async with ServiceWatcher(client, name) as watcher:
                before: dict[str, Any] = {}
                stale = False
                async for snap in watcher.changes():
                    now = {i.id: i for i in snap.instances}
                    for iid in sorted(now.keys() - before.keys()):
                        say("+", iid, now[iid])
                    for iid in sorted(before.keys() - now.keys()):
                        say("-", iid, None)
                    for iid in sorted(now.keys() & before.keys()):
                        if now[iid] != before[iid]:
                            say("~", iid, now[iid])
                    if snap.stale != stale:
                        stale = snap.stale
                        if output is Output.json:
                            emit_json({"change": "!", "stale": stale})
                        else:
                            typer.echo("! store unreachable: the list may be stale" if stale
                                       else "! store reachable again")
                    before = dict(now)
                    sys.stdout.flush()

        await interruptible(stream())

    run_client(endpoints, body)


@app.command()
def gateway(
    service: str = typer.Option(..., "--service", help="the registered service to front"),
    lb: str = typer.Option("round-robin", "--lb", help="picker name, see docs/balance.md"),
    listen: str = typer.Option(":8080", "--listen", help="[HOST]:PORT to serve on"),
    admin: str = typer.Option("127.0.0.1:9901", "--admin", help="[HOST]:PORT for /metrics; '' = off"),
    mode: str = typer.Option("http", "--mode", help="http or tcp"),
    hash_header: str | None = typer.Option(None, "--hash-header",
                                           help="hash pickers hash this header (default: client IP)"),
    health: str = typer.Option("tcp", "--health", help="active checks: tcp, http or none"),
    health_path: str = typer.Option("/health", "--health-path"),
    health_interval: float = typer.Option(5.0, "--health-interval", min=0.1),
    deadline: float = typer.Option(15.0, "--deadline", min=0.01, help="seconds per request, retries included"),
    try_timeout: float = typer.Option(5.0, "--try-timeout", min=0.01, help="seconds per attempt"),
    attempts: int = typer.Option(3, "--attempts", min=1, help="first try plus retries"),
    endpoints: str = ENDPOINTS,
) -> None:
    """Run an HTTP/1.1 (or TCP) reverse proxy in front of SERVICE until Ctrl-C."""
    from ..caller import CallPolicy
    from ..client import ClientError
    from ..gateway import Gateway, GatewayConfig
    from ..kv.errors import KVError
    from ..net import install_event_loop
    from ..registry import HealthConfig

    if health not in ("tcp", "http", "none"):
        raise fail(f"--health {health!r}: use tcp, http or none", 2)
    try:
        config = GatewayConfig(
            service=service, endpoints=endpoint_list(endpoints), listen=_host_port(listen, "--listen"),
            admin=_host_port(admin, "--admin") if admin else None, mode=mode, lb=lb,
            hash_header=hash_header,
            health=None if health == "none" else HealthConfig(health, health_interval,
                                                              path=health_path),
            policy=CallPolicy(deadline, try_timeout, attempts))
        loop_name = install_event_loop()
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")

        async def main() -> None:
            async with Gateway(config):
                typer.echo(f"gateway for {service} ({mode}, {lb}, {loop_name}) on "
                           f"{config.listen}" + (f", metrics on {config.admin}" if config.admin
                                                 else ""))
                sys.stdout.flush()
                await interruptible(asyncio.Event().wait())

        asyncio.run(main())
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    except OSError as exc:
        raise fail(str(exc), 2) from None
    except (ClientError, KVError) as exc:  # the store unreachable at start: no cache to serve yet
        raise fail(f"the registry at {endpoints}: {exc}") from None
