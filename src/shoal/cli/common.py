"""What the command groups share: the `--endpoints` and `-o/--output` options, one-line
failures, running a body with a connected client, Ctrl-C handling, and the consoles output
goes through.

Every command that prints data offers `-o table|json|simple` (shapes: docs/cli.md): data goes
to stdout, progress and status lines to stderr, and every failure is one line on stderr and a
non-zero exit. Printed to a pipe or a file, nothing is cut or wrapped at the terminal's width.
This module imports only typer at load time, so that `shoal --help` stays fast: the client,
the store and rich are imported when a command runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from ..client import Client
    from ..kv.keyvalue import KeyValue
    from ..kv.requests import RangeResponse

# `shoal cluster up` puts node i's client port at BASE_PORT + i: the defaults meet there.
BASE_PORT = 23790
DEFAULT_ENDPOINTS = ",".join(f"127.0.0.1:{BASE_PORT + i}" for i in (1, 2, 3))
ENDPOINTS = typer.Option(DEFAULT_ENDPOINTS, "--endpoints", envvar="SHOAL_ENDPOINTS",
                         show_default=False,
                         help="comma-separated client addresses host:port (default: "
                              f"127.0.0.1:{BASE_PORT + 1}-{BASE_PORT + 3}, `shoal cluster up`'s)")
T = TypeVar("T")


class Output(StrEnum):
    table = "table"
    json = "json"
    simple = "simple"


def output_option(default: Output) -> Any:
    """`-o/--output`, defaulting to what the command printed before the option existed."""
    return typer.Option(default, "--output", "-o", case_sensitive=False,
                        help="table, json (shapes in docs/cli.md) or simple (tab-separated)")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one clear line on stderr; `raise fail(...)` ends the command with `code`."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def text(b: bytes) -> str:
    return b.decode("utf-8", errors="backslashreplace")


def endpoint_list(endpoints: str) -> list[str]:
    """The comma-separated `--endpoints` value as a list; an empty one is an error."""
    eps = [e.strip() for e in endpoints.split(",") if e.strip()]
    if not eps:
        raise fail("--endpoints is empty")
    return eps


def client_options() -> dict[str, Any]:
    """Credentials and TLS for a client, from the environment (as etcdctl's ETCDCTL_USER, so a
    password stays out of `ps`): SHOAL_USER=name:password, SHOAL_CACERT, SHOAL_CERT, SHOAL_KEY."""
    from ..client.tls import client_context

    opts: dict[str, Any] = {}
    if user := os.environ.get("SHOAL_USER"):
        name, sep, password = user.partition(":")
        if not sep:
            raise fail("SHOAL_USER must be name:password")
        opts.update(user=name, password=password)
    if ca := os.environ.get("SHOAL_CACERT"):
        opts["tls"] = client_context(ca, os.environ.get("SHOAL_CERT"), os.environ.get("SHOAL_KEY"))
    return opts


def run_client(endpoints: str, body: Callable[[Client], Awaitable[int | None]],
               timeout: float = 10.0) -> None:
    """Run `body` with a connected client; turn every client or store error into one line."""
    from ..client import Client, ClientError
    from ..kv.errors import KVError

    eps = endpoint_list(endpoints)

    async def main() -> int | None:
        async with Client(eps, timeout=timeout, **client_options()) as client:
            return await body(client)

    try:
        code = asyncio.run(main())
    except (ClientError, KVError, ValueError, OSError) as exc:
        raise fail(str(exc) or type(exc).__name__) from None
    raise typer.Exit(code or 0)


async def interruptible(aw: Awaitable[T]) -> T | None:
    """Await `aw` unless Ctrl-C (or SIGTERM) comes first; then cancel it and return None."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.ensure_future(aw)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def forever() -> None:
    await asyncio.Event().wait()


@contextlib.contextmanager
def ignore_interrupts() -> Iterator[None]:
    """Ignore Ctrl-C while a child process (which hears it itself) runs."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def console(stderr: bool = False) -> Console:
    """A rich console for stdout (or stderr). Off a terminal it neither wraps nor cuts: rich
    would otherwise assume 80 columns, folding prose and truncating table cells to `127.0.…`."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr, soft_wrap=True)
    return Console(stderr=stderr, soft_wrap=True, width=1 << 16, highlight=False)


def note(message: str) -> None:
    """A progress or status line: stderr, so that stdout holds only data."""
    typer.echo(message, err=True)


def emit_json(obj: object) -> None:
    """One JSON document on one line (so that a stream of them is JSON lines)."""
    import json

    typer.echo(json.dumps(obj, separators=(", ", ": ")))
    sys.stdout.flush()


def kv_json(kv: KeyValue, keys_only: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"key": text(kv.key)}
    if not keys_only:
        out["value"] = text(kv.value)
    out.update(create_revision=kv.create_revision, mod_revision=kv.mod_revision,
               version=kv.version, lease=kv.lease)
    return out


def range_json(resp: RangeResponse, keys_only: bool = False) -> dict[str, Any]:
    return {"revision": resp.header.revision, "count": resp.count, "more": resp.more,
            "kvs": [kv_json(kv, keys_only) for kv in resp.kvs]}


def print_kvs(resp: RangeResponse, keys_only: bool = False) -> None:
    """etcdctl's simple form: the key, then the value, on lines of their own."""
    for kv in resp.kvs:
        typer.echo(text(kv.key))
        if not keys_only:
            typer.echo(text(kv.value))


def print_table(columns: list[str], rows: list[list[Any]], title: str | None = None,
                right: tuple[str, ...] = ()) -> None:
    """A rich table on stdout; `right` names the columns of numbers. A str cell is shown as
    it is (a key like `[x]` is not markup); pass a rich Text for colour."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left", overflow="fold")
    for row in rows:
        table.add_row(*(escape(c) if isinstance(c, str) else c for c in row))
    console().print(table)


def print_rows(rows: list[list[str]]) -> None:
    """The simple form of a table: tab-separated fields, no header, for `cut` and `awk`."""
    for row in rows:
        typer.echo("\t".join(row))


def duration(text: str) -> float:
    """Seconds in `60`, `60s`, `5m` or `1h`."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise typer.BadParameter(f"{text!r} is not a duration like 60s or 5m") from None


def size(n: int) -> str:
    """Bytes for people: 512 B, 3 KiB, 1.5 GiB."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} GiB"
