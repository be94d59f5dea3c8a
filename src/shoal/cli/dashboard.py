"""`shoal dashboard`: the live page of a whole cluster (shoal.web.aggregator), served until
Ctrl-C; `--once` prints one view of it instead (`-o json`: the view the page draws)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from .common import (
    Output,
    client_options,
    emit_json,
    endpoint_list,
    fail,
    interruptible,
    note,
    output_option,
)

if TYPE_CHECKING:
    from ..web.aggregator import Aggregator

app = typer.Typer()


@app.command()
def dashboard(
    endpoints: str | None = typer.Option(
        None, "--endpoints", help="the nodes' HTTP addresses host:port, comma-separated"),
    root: Path | None = typer.Option(
        None, "--dir", help="a `shoal cluster up` directory: its nodes, its admin token, and "
                            "kill/pause/resume/restart through its supervisor"),
    admin_token_file: Path | None = typer.Option(
        None, "--admin-token-file", help="the nodes' admin token (with --endpoints); viewers "
                                         "must enter it too"),
    gateways: str = typer.Option(
        "", "--gateways", help="gateways' admin addresses host:port, comma-separated: their "
                               "traffic, backends, breakers and ejections"),
    listen: str = typer.Option("127.0.0.1:8090", "--listen", help="HOST:PORT to serve the page on"),
    interval: float = typer.Option(0.5, "--interval", min=0.05, help="seconds between polls"),
    once: bool = typer.Option(False, "--once", help="print one view of the cluster and exit"),
    output: Output = output_option(Output.table),
) -> None:
    """Serve a live web dashboard of every node, its groups, links and faults."""
    from ..local.cluster import running_roots
    from ..server.config import ConfigError, parse_addr
    from ..server.http import read_admin_token
    from ..web.aggregator import Aggregator

    if root is None and endpoints is None:
        roots = running_roots()
        if len(roots) != 1:
            raise fail("give --endpoints (the nodes' HTTP addresses) or --dir (a `shoal cluster "
                       f"up` directory); {len(roots)} running `shoal cluster up` found", 2)
        root = roots[0]
    watched = [g.strip() for g in gateways.split(",") if g.strip()]
    try:
        if root is not None:
            if endpoints is not None or admin_token_file is not None:
                raise fail("--dir names the nodes and their token: not with --endpoints or "
                           "--admin-token-file", 2)
            agg = Aggregator.of_cluster(root, interval_s=interval, client_options=client_options(),
                                        gateways=watched)
        else:
            assert endpoints is not None
            token = read_admin_token(admin_token_file)
            agg = Aggregator(endpoint_list(endpoints), token.decode() if token else None,
                             interval_s=interval, client_options=client_options(),
                             gateways=watched)
        host, port = parse_addr(listen, "--listen")
    except (RuntimeError, ConfigError, OSError) as exc:
        raise fail(str(exc), 2) from None
    if once:
        raise typer.Exit(asyncio.run(_once(agg, output)))
    try:
        asyncio.run(_serve(agg, host, port))
    except OSError as exc:
        raise fail(f"cannot serve on {listen}: {exc.strerror or exc}", 2) from None


async def _once(agg: Aggregator, output: Output) -> int:
    await agg.start()
    try:
        view = await agg.view()
    finally:
        await agg.stop()
    if output == Output.json:
        emit_json(view)
    else:
        from .common import print_rows, print_table

        rows = [[str(n["id"] or "?"), n["endpoint"], "up" if n["up"] else "down",
                 (n["status"] or {}).get("role", "-"), str((n["status"] or {}).get("leader", "-")),
                 str((n["status"] or {}).get("term", "-")), n["error"] or ""]
                for n in view["nodes"].values()]
        if output == Output.simple:
            print_rows(rows)
        else:
            print_table(["node", "http", "state", "role", "leader", "term", "error"], rows)
    return 0 if all(n["up"] for n in view["nodes"].values()) else 1


async def _serve(agg: Aggregator, host: str, port: int) -> None:
    from aiohttp import web

    runner = web.AppRunner(agg.app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        note(f"dashboard of {len(agg.targets)} nodes on http://{host}:{bound}/dashboard")
        typer.echo(f"http://{host}:{bound}/dashboard")
        sys.stdout.flush()
        await interruptible(asyncio.Event().wait())
    finally:
        await runner.cleanup()
