"""`shoal app proto` and `shoal app manifests`: what an application is written out as for the
world outside Python, a .proto for gRPC clients and Kubernetes manifests for a cluster.

`register(group)` adds them to the `shoal app` group. Both only import the application's
module and write text; neither starts anything."""

from __future__ import annotations

import importlib
from typing import Any

import typer

from .common import fail


def load_object(target: str) -> Any:
    """`module:Name` -> the object, or a one-line failure naming what is missing."""
    module_name, sep, name = target.partition(":")
    if not sep or not module_name or not name:
        raise fail(f"{target!r}: expected module:Name")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise fail(f"cannot import {module_name}: {e}") from None
    try:
        return getattr(module, name)
    except AttributeError:
        raise fail(f"module {module_name} has no attribute {name!r}") from None


def proto(target: str = typer.Argument(..., help="the interface, as module:Interface")) -> None:
    """Print the .proto that `grpc = true` serves an interface with."""
    from ..app.grpc_bridge import proto_for
    from ..app.interface import interface_spec

    iface = load_object(target)
    try:
        text = proto_for(interface_spec(iface))
    except TypeError as e:
        raise fail(str(e)) from None
    typer.echo(text, nl=False)


def register(group: typer.Typer) -> None:
    group.command("proto")(proto)
