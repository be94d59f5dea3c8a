"""`shoal app proto` and `shoal app manifests`: what an application is written out as for the
world outside Python, a .proto for gRPC clients and Kubernetes manifests for a cluster.

`register(group)` adds them to the `shoal app` group. Both only import the application's
module and write text; neither starts anything."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import fail


def proto(target: str = typer.Argument(..., help="the interface, as module:Interface")) -> None:
    """Print the .proto that `grpc = true` serves an interface with."""
    from ..app.component import load_object
    from ..app.grpc_bridge import proto_for
    from ..app.interface import interface_spec

    try:
        text = proto_for(interface_spec(load_object(target)))
    except (TypeError, ValueError) as e:
        raise fail(str(e)) from None
    typer.echo(text, nl=False)


def manifests(
    target: str = typer.Argument(..., help="the application, as module:App"),
    config: Path = typer.Option(..., "--config", help="the deploy file (deploy.toml)"),
    out: Path = typer.Option(..., "--out", help="the directory to write them into"),
    name: str | None = typer.Option(None, "--name", help="the app's name in Kubernetes "
                                    "(default: the Application's name)"),
    nodes: int = typer.Option(3, "--nodes", help="Shoal nodes in the StatefulSet (odd)"),
    node_storage: str = typer.Option("1Gi", "--node-storage", help="each node's volume"),
) -> None:
    """Write Kubernetes manifests and a Containerfile for the deploy file's process groups."""
    from ..app.component import load_app
    from ..app.config import load_deploy
    from ..app.manifests import render

    try:
        application = load_app(target)
        files = render(load_deploy(config), target, name=name or application.name.lower(),
                       components=application.components, nodes=nodes,
                       node_storage=node_storage)
    except (ValueError, TypeError) as e:  # ConfigError, ManifestError, a bad app or module
        raise fail(str(e)) from None
    out.mkdir(parents=True, exist_ok=True)
    for file_name, text in files.items():
        (out / file_name).write_text(text)
        typer.echo(out / file_name)


def register(group: typer.Typer) -> None:
    group.command("proto")(proto)
    group.command("manifests")(manifests)
