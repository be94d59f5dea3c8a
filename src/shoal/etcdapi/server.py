"""The etcd v3 API of one Shoal node on one port, as etcd serves it: gRPC, the JSON gateway,
`/version`, `/health` and `/metrics` on the same address (mux.py tells them apart), with
optional TLS (client certificates required when a CA is given).

`EtcdServer` runs next to a `shoal.server.node.Node` in the same event loop. The gRPC server
listens on a unix socket in a private directory behind the front listener; aiohttp serves the
HTTP side in-process. `gateway_addr` adds an HTTP-only listener, as etcd's
`--listen-client-http-urls` does."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from ..kv.errors import KVError
from ..server.config import Member
from ..server.node import Node, NodeError
from . import errors as E
from .api import Call, EtcdAPI, default_client_urls
from .gateway import make_gateway
from .mux import PortMux
from .pb import rpc_pb2, v3election_pb2, v3lock_pb2

log = logging.getLogger("shoal.etcdapi")

GRPC_OVERHEAD = 512 * 1024  # etcd's grpcOverheadBytes: room around a maximal request
MAX_UNIX_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on the BSDs

# (generated module, service, {method: kind}); kinds: uu unary, us server stream, ss bidi.
# A method of etcd's not listed here (Maintenance.Downgrade) answers UNIMPLEMENTED.
SERVICES: list[tuple[Any, str, dict[str, str]]] = [
    (rpc_pb2, "KV", {m: "uu" for m in ("Range", "Put", "DeleteRange", "Txn", "Compact")}),
    (rpc_pb2, "Watch", {"Watch": "ss"}),
    (rpc_pb2, "Lease", {"LeaseGrant": "uu", "LeaseRevoke": "uu", "LeaseKeepAlive": "ss",
                             "LeaseTimeToLive": "uu", "LeaseLeases": "uu"}),
    (rpc_pb2, "Cluster", {m: "uu" for m in ("MemberAdd", "MemberRemove", "MemberUpdate",
                                                 "MemberList", "MemberPromote")}),
    (rpc_pb2, "Maintenance", {"Alarm": "uu", "Status": "uu", "Defragment": "uu",
                                   "Hash": "uu", "HashKV": "uu", "Snapshot": "us",
                                   "MoveLeader": "uu"}),
    (rpc_pb2, "Auth", {m: "uu" for m in (
        "AuthEnable", "AuthDisable", "AuthStatus", "Authenticate", "UserAdd", "UserGet",
        "UserList", "UserDelete", "UserChangePassword", "UserGrantRole", "UserRevokeRole",
        "RoleAdd", "RoleGet", "RoleList", "RoleDelete", "RoleGrantPermission",
        "RoleRevokePermission")}),
    (v3lock_pb2, "Lock", {"Lock": "uu", "Unlock": "uu"}),
    (v3election_pb2, "Election", {"Campaign": "uu", "Proclaim": "uu", "Leader": "uu",
                                       "Observe": "us", "Resign": "uu"}),
]


@dataclass(frozen=True)
class TLSFiles:
    cert: Path
    key: Path
    ca: Path | None = None  # given: clients must present a certificate signed by it

    def ssl_context(self) -> ssl.SSLContext:
        """The front listener's TLS. ALPN prefers http/1.1 to h2: a client offering both (curl)
        gets HTTP/1.1, which the gateway speaks; one offering only h2 (gRPC) gets h2."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        if self.ca is not None:
            ctx.load_verify_locations(self.ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols(["http/1.1", "h2"])
        return ctx


def _call(context: grpc.aio.ServicerContext) -> Call:
    for key, value in context.invocation_metadata() or ():
        if key in ("token", "authorization"):
            return Call(value if isinstance(value, str) else value.decode())
    return Call()


def to_etcd_error(exc: BaseException) -> E.EtcdError:
    if isinstance(exc, E.EtcdError | KVError | NodeError):
        return E.from_exception(exc)
    log.exception("etcd API request failed unexpectedly", exc_info=exc)
    return E.EtcdError(E.C.INTERNAL, f"etcdserver: internal error: {type(exc).__name__}")


class EtcdServer:
    def __init__(self, node: Node, addr: str, *, tls: TLSFiles | None = None,
                 gateway_addr: tuple[str, int] | None = None,
                 client_urls: Callable[[Member], list[str]] = default_client_urls,
                 timeout: float = 5.0, progress_interval: float = 600.0,
                 sniff_timeout_s: float = 10.0):
        self.node, self.addr, self.tls = node, addr, tls
        self.gateway_addr = gateway_addr
        self.sniff_timeout_s = sniff_timeout_s
        self.api = EtcdAPI(node, timeout=timeout, client_urls=client_urls,
                           peer_scheme="https" if node.cfg.tls_cert else "http")
        self.max_request_bytes = node.cfg.max_request_bytes
        self.progress_interval = progress_interval
        self.port = 0
        self.gateway_port = 0
        self._server: grpc.aio.Server | None = None
        self._runner: web.AppRunner | None = None
        self.mux: PortMux | None = None
        self._socket_dir: Path | None = None
        self._progress: asyncio.Task[None] | None = None

    async def start(self) -> None:
        limit = self.max_request_bytes + GRPC_OVERHEAD
        server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", 2**31 - 1),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ])
        server.add_generic_rpc_handlers(tuple(
            self._service(module, service, methods) for module, service, methods in SERVICES))
        self._socket_dir = _private_dir(Path(self.node.cfg.data_dir))
        grpc_path = str(self._socket_dir / "grpc.sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(grpc_path)  # left by a process that died
        server.add_insecure_port(f"unix:{grpc_path}")
        os.chmod(grpc_path, 0o600)  # the directory already keeps others out; this says so too
        await server.start()
        self._server = server
        self._runner = web.AppRunner(make_gateway(self.api, self.max_request_bytes),
                                     access_log=None, handler_cancellation=True,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        assert self._runner.server is not None
        ssl_ctx = self.tls.ssl_context() if self.tls is not None else None
        cfg = self.node.cfg
        self.mux = PortMux(self._runner.server, grpc_path, ssl_context=ssl_ctx,
                            sniff_timeout_s=self.sniff_timeout_s,
                            max_connections=cfg.max_connections,
                            max_per_address=cfg.max_connections_per_address)
        host, _, port = self.addr.rpartition(":")
        self.port = await self.mux.start(host.strip("[]"), int(port))
        if self.gateway_addr is not None:
            site = web.TCPSite(self._runner, *self.gateway_addr, ssl_context=ssl_ctx)
            await site.start()
            self.gateway_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._progress = asyncio.create_task(self._progress_loop())

    async def stop(self) -> None:
        if self._progress is not None:
            self._progress.cancel()
        if self.mux is not None:
            self.mux.stop_listening()
        if self._server is not None:
            await self._server.stop(grace=0.2)  # its connections close, and so their clients'
        if self.mux is not None:
            self.mux.abort_all()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        await self.api.backend.close()

    async def _progress_loop(self) -> None:
        while True:
            await asyncio.sleep(self.progress_interval)
            with contextlib.suppress(Exception):
                self.node.progress_notify()

    # ------------------------------------------------------------------ services
    def _service(self, module: Any, service: str, methods: dict[str, str]) -> Any:
        sd = module.DESCRIPTOR.services_by_name[service]
        handlers = {}
        for name, kind in methods.items():
            md = sd.methods_by_name[name]
            decode = _safe_decoder(getattr(module, md.input_type.name))
            make = {"uu": grpc.unary_unary_rpc_method_handler,
                    "us": grpc.unary_stream_rpc_method_handler,
                    "ss": grpc.stream_stream_rpc_method_handler}[kind]
            handlers[name] = make(self._handler(getattr(self.api, name), kind),
                                  request_deserializer=decode,
                                  response_serializer=_serialize)
        return grpc.method_handlers_generic_handler(sd.full_name, handlers)

    def _handler(self, fn: Callable[..., Any], kind: str) -> Any:
        max_bytes = self.max_request_bytes

        def check(request: Any) -> None:
            if isinstance(request, _Undecodable):
                raise E.EtcdError(E.C.INTERNAL, f"grpc: error unmarshalling request: {request.error}")
            if request.ByteSize() > max_bytes:
                raise E.REQUEST_TOO_LARGE

        if kind == "uu":
            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    check(request)
                    return await fn(request, _call(context))
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as exc:  # noqa: BLE001 - every failure becomes an etcd error
                    err = to_etcd_error(exc)
                    await context.abort(err.code, err.message)
            return unary

        if kind == "us":
            async def server_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    check(request)
                    async for item in fn(request, _call(context)):
                        yield item
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as exc:  # noqa: BLE001
                    err = to_etcd_error(exc)
                    await context.abort(err.code, err.message)
            return server_stream

        async def bidi(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            async def checked() -> Any:
                async for request in requests:
                    check(request)
                    yield request
            try:
                async for item in fn(checked(), _call(context)):
                    yield item
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:  # noqa: BLE001
                err = to_etcd_error(exc)
                await context.abort(err.code, err.message)
        return bidi


@dataclass(frozen=True)
class _Undecodable:
    error: str


def _safe_decoder(cls: Any) -> Callable[[bytes], Any]:
    """Bytes that are not the expected message become a value the handler refuses with
    grpc-go's INTERNAL "error unmarshalling request" (what etcd answers), not a server log."""
    def decode(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except Exception as exc:  # noqa: BLE001 - DecodeError and friends
            return _Undecodable(str(exc))
    return decode


def _serialize(msg: Any) -> bytes:
    return bytes(msg.SerializeToString())


def _private_dir(data_dir: Path) -> Path:
    """A directory for the gRPC server's socket that only this user may enter (0700), so the
    socket is reached through the front listener alone: in the data dir when the socket's path
    fits in a sockaddr_un, else a fresh one under the temporary directory."""
    path = data_dir / "etcd-grpc"
    if len(str(path / "grpc.sock")) > MAX_UNIX_PATH:
        return Path(tempfile.mkdtemp(prefix="shoal-etcd-"))  # made 0700
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)  # mkdir's mode is masked by the umask, and an old one may be looser
    return path
