"""`shoal app`: run an application as one process (`run`), as process groups on this machine
(`deploy`), and see what runs (`status`); `proto` and `manifests` come from app_export.py."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import typer

from . import app_export
from .common import Output, emit_json, fail, interruptible, note, output_option, print_table

app = typer.Typer()
app_group = typer.Typer(no_args_is_help=True, help="Components: run an application as a "
                        "monolith or as services.")
app.add_typer(app_group, name="app")
app_export.register(app_group)


def _load(target: str) -> Any:
    from ..app.component import load_app

    try:
        return load_app(target)
    except (ValueError, TypeError) as exc:
        raise fail(str(exc), 2) from None


@contextlib.contextmanager
def _store(endpoints: str | None) -> Any:
    """The given cluster's endpoints, or a local 3-node one for the command's life."""
    if endpoints:
        yield [e.strip() for e in endpoints.split(",") if e.strip()]
        return
    from ..local.cluster import LocalProcessCluster

    note("no --endpoints: starting a local 3-node Shoal")
    with LocalProcessCluster(3) as cluster:
        cluster.start()
        yield cluster.endpoints


@app_group.command("run")
def run(target: str = typer.Argument(..., help="the application, as module:App"),
        endpoints: str | None = typer.Option(None, "--endpoints", envvar="SHOAL_ENDPOINTS",
                                             help="the store (default: a local cluster)"),
        check_args: bool = typer.Option(False, "--check-args",
                                        help="validate every call's arguments, as RPC would")) -> None:
    """Run every component in this process: calls are plain method calls. Ctrl-C stops."""
    from ..app.monolith import Monolith
    from ..client import Client
    from ..net.loop import install_event_loop

    application = _load(target)
    with _store(endpoints) as eps:
        async def main() -> None:
            async def serve() -> None:  # says it runs once Ctrl-C is handled, not before
                note(f"{application.name}: {', '.join(application.components)} running in "
                     f"one process (store {','.join(eps)}); Ctrl-C stops")
                await asyncio.Event().wait()

            async with Client(eps) as client, Monolith(application, client,
                                                       check_args=check_args):
                await interruptible(serve())

        install_event_loop()
        asyncio.run(main())


@app_group.command("deploy")
def deploy(target: str | None = typer.Argument(None, help="module:App (default: [app] main)"),
           config: Path = typer.Option(..., "--config", help="the deploy file"),
           endpoints: str | None = typer.Option(None, "--endpoints", envvar="SHOAL_ENDPOINTS",
                                                help="the store (default: the file's, else a "
                                                     "local 3-node cluster)"),
           root: Path | None = typer.Option(None, "--root", help="logs, traces and state "
                                            "(default: a new temporary directory)")) -> None:
    """Run the deploy file's process groups here, each process registering its components.
    Ctrl-C stops them all."""
    import signal

    from ..app.config import ConfigError
    from ..app.deploy import Deployment

    try:
        dep = Deployment(target, config, root=root,
                         endpoints=[e for e in (endpoints or "").split(",") if e] or None)
    except (ConfigError, ValueError) as exc:
        raise fail(str(exc), 2) from None
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        dep.start()
        for (group, i), ready in dep.ready.items():
            note(f"{group}-{i}: {', '.join(ready['components'])} at {ready['rpc']} "
                 f"(http {ready['http']}, pid {ready['pid']})")
        note(f"deployed {dep.app_path}; state in {dep.root}; Ctrl-C stops")
        import time

        while not stop:
            time.sleep(0.2)
    except RuntimeError as exc:
        raise fail(str(exc)) from None
    finally:
        dep.stop()


@app_group.command("status")
def status(endpoints: str | None = typer.Option(None, "--endpoints", envvar="SHOAL_ENDPOINTS",
                                                help="the store (default: the newest local "
                                                     "deployment's)"),
           name: str | None = typer.Option(None, "--app", help="only this application"),
           output: Output = output_option(Output.table)) -> None:
    """Every component, its replicas and their health."""
    import json

    from ..app.deploy import running_deployments
    from ..app.status import app_status
    from ..client import Client
    from .common import DEFAULT_ENDPOINTS

    if endpoints is None:
        states = running_deployments()
        endpoints = (",".join(json.loads(states[0].read_text())["endpoints"]) if states
                     else DEFAULT_ENDPOINTS)
    eps = [e for e in endpoints.split(",") if e]

    async def main() -> list[dict[str, Any]]:
        async with Client(eps, timeout=5) as client:
            return await app_status(client, name)

    try:
        rows = asyncio.run(main())
    except Exception as exc:  # noqa: BLE001 - one line, whatever the store said
        raise fail(f"cannot read the registry at {endpoints}: {exc}") from None
    if output is Output.json:
        emit_json({"replicas": rows})
        return
    table = [[r["app"], r["component"], r["replica"], r["rpc"], r["health"],
              str(r["running_calls"] if r["running_calls"] is not None else "-")] for r in rows]
    if output is Output.simple:
        for row in table:
            typer.echo("\t".join(row))
        return
    print_table(["app", "component", "replica", "rpc", "health", "calls"], table,
                right=("calls",))
