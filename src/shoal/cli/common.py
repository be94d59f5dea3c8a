"""What the command groups share: the `--endpoints` option, one-line failures, running a body
with a connected client, and Ctrl-C handling.

Every command prints etcdctl-like plain lines so it composes in shell scripts; every failure
is one line on stderr and a non-zero exit. This module imports only typer at load time, so
that `shoal --help` stays fast: the client and the store are imported when a command runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import typer

if TYPE_CHECKING:
    from ..client import Client
    from ..kv.requests import RangeResponse

ENDPOINTS = typer.Option("127.0.0.1:2379", "--endpoints", envvar="SHOAL_ENDPOINTS",
                         help="comma-separated client addresses host:port")
T = TypeVar("T")


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


def print_kvs(resp: RangeResponse, keys_only: bool = False) -> None:
    for kv in resp.kvs:
        typer.echo(text(kv.key))
        if not keys_only:
            typer.echo(text(kv.value))


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
