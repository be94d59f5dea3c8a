"""A CRDT node: one asyncio process hosting a `Replica`, its peers over TCP, and a small HTTP
API through which a client writes to this replica locally. The only I/O of shoal.crdt.

    python -m shoal.crdt.node --id 1 --listen 127.0.0.1:7101 --http 127.0.0.1:8101 \\
        --peer 2=127.0.0.1:7102 --peer 3=127.0.0.1:7103 [--allow-faults]

How it works:
- **Peers** talk over Shoal's peer transport (shoal.net, docs/net.md) with a codec of its own,
  "crdt": each frame carries one anti-entropy message as msgpack `[src, dst, message]`, so the
  transport's framing, handshake (cluster id, node id, optional peer secret or TLS), per-peer
  bounded queues, reconnecting with backoff, and fault plan all come for free. A frame is at
  most MAX_FRAME bytes and decodes within MAX_VALUES values: a whole state that outgrows it
  cannot be sent (logged), which bounds what one node holds for a peer.
- **Anti-entropy** is the Replica's (replica.py): every `tick` seconds the node sends what
  `tick()` returns, and answers every message with what `on_message` returns. Node n's replica
  id is "n<id>". Messages lost to a cut link are simply resent, grown, by later ticks, and a
  peer that fell behind the bounded delta log gets the full state; a digest round every
  `digest_every` ticks repairs anything else. The replica's incarnation is the start time in
  ms, so a restarted node (empty memory) is recognised as new and sent full states.
- **Clients** use HTTP (aiohttp): GET/POST /counter/NAME (a PN-counter: {"add": n}), /set/NAME
  (an add-wins OR-Set: {"add": e} or {"remove": e}), /register/NAME (last-writer-wins by
  hybrid logical clock: {"value": v}). Every write is applied here and acknowledged at once:
  available whatever the network does, and converging once it heals. GET /state gives every
  object's value and a digest of the whole state (equal digests: equal states), /status the
  peers and the delta log.
- **Faults** for tests: with --allow-faults, GET/POST /faults reads or changes the transport's
  FaultPlan exactly as a Shoal node's /faults does ({"block_to": [2], "block_from": [2]}, or
  {"heal": true}), behind --admin-token-file if one is given.

`CrdtProcessCluster` starts n such processes on this machine for tests and `shoal cap`."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from aiohttp import web

from ..consensus.messages import LocalProtocolError, RemoteProtocolError
from ..net import Codec, NetConfig, Transport, register_codec
from ..net.codec import MAX_UINT
from ..wire import bounded
from ..wire.bounded import TooComplex
from . import wire
from .base import CRDT
from .counters import PNCounter
from .errors import ClockDriftError, CRDTError, MergeError, WireError
from .hlc import HLC
from .registers import LWWRegister
from .replica import Message, Replica
from .sets import ORSet

log = logging.getLogger("shoal.crdt.node")

HOST = "127.0.0.1"
MAX_FRAME = 4 * 1024 * 1024  # one message (a full state included) per frame, at most
MAX_VALUES = 1_000_000  # plain values in one decoded message
MAX_CONTAINERS = 250_000  # maps and lists in one decoded message
MAX_BODY = 64 * 1024  # bytes of one HTTP request body
GROUP = 0  # the transport's group id; one replica per process
KINDS: dict[str, type[CRDT]] = {"counter": PNCounter, "set": ORSet, "register": LWWRegister}
Address = tuple[str, int]


# ---------------------------------------------------------------------- the wire


@dataclass(frozen=True, slots=True)
class Envelope:
    """One anti-entropy message between node `src` and node `dst` (what the codec carries)."""

    src: int
    dst: int
    body: Message


def _encode(e: Envelope) -> bytes:
    try:
        return msgpack.packb([e.src, e.dst, e.body])
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"crdt message not encodable: {exc}") from None


def _decode(payload: bytes) -> Envelope:
    try:
        raw = bounded.unpackb(payload, MAX_VALUES, MAX_CONTAINERS, max_len=MAX_VALUES,
                              use_list=True, raw=False)
    except TooComplex as exc:
        raise RemoteProtocolError(f"crdt message: too large ({exc})") from None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise RemoteProtocolError(f"crdt message: not valid msgpack ({exc})") from None
    if not isinstance(raw, list) or len(raw) != 3:
        raise RemoteProtocolError("crdt message: expected [src, dst, message]")
    src, dst, body = raw
    for name, v in (("src", src), ("dst", dst)):
        if type(v) is not int or not 0 < v <= MAX_UINT:
            raise RemoteProtocolError(f"crdt message field {name!r}: expected a node id, got {v!r:.40}")
    if not isinstance(body, dict):
        raise RemoteProtocolError(f"crdt message: expected a map, got {wire.kind(body)}")
    return Envelope(src, dst, body)


CRDT_CODEC = Codec("crdt", _encode, _decode)
register_codec(CRDT_CODEC)


def replica_name(node_id: int) -> str:
    return f"n{node_id}"


def _node_of(replica: str) -> int:
    return int(replica[1:])


# ---------------------------------------------------------------------- the node


@dataclass
class NodeConfig:
    node_id: int
    listen: Address  # the peer port
    http: Address  # the client API
    peers: dict[int, Address]
    cluster_id: str = "crdt"
    tick: float = 0.1  # seconds between anti-entropy rounds
    max_buffered: int = 64  # delta log entries kept for peers behind (then: full state)
    digest_every: int = 5  # ticks between digest rounds
    allow_faults: bool = False
    admin_token: str | None = None  # required on /faults when set
    peer_secret_file: Path | None = None
    incarnation: int = field(default_factory=lambda: time.time_ns() // 1_000_000)

    def check(self) -> NodeConfig:
        if self.node_id < 1 or self.node_id in self.peers:
            raise ValueError(f"node id {self.node_id} must be >= 1 and not one of its peers")
        if not 0.001 <= self.tick <= 60:
            raise ValueError(f"tick must be in [0.001, 60] seconds, got {self.tick}")
        return self


class CrdtNode:
    """The replica, its transport, its tick loop and its HTTP API, on one event loop."""

    def __init__(self, cfg: NodeConfig):
        self.cfg = cfg.check()
        self.id = replica_name(cfg.node_id)
        self.replica = Replica(self.id, [replica_name(p) for p in cfg.peers],
                               incarnation=cfg.incarnation, max_buffered=cfg.max_buffered,
                               digest_every=cfg.digest_every)
        self.clock = HLC(self.id)
        self.transport = Transport(
            cfg.node_id, cfg.listen, dict(cfg.peers), cfg.cluster_id, self._on_message,
            codec=CRDT_CODEC, peer_secret_file=cfg.peer_secret_file,
            config=NetConfig(max_frame=MAX_FRAME, max_queue_msgs=256,
                             max_queue_bytes=4 * MAX_FRAME))
        self.refused = 0  # peer messages the replica refused (malformed, another type)
        self._ticker: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        await self.transport.start()
        self._runner = web.AppRunner(self._app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, *self.cfg.http).start()
        self._ticker = asyncio.create_task(self._tick_loop())
        log.info("crdt node %s: peers on %s:%d, clients on http://%s:%d", self.id,
                 *self.transport.address, *self.cfg.http)

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.transport.stop()

    # ---- anti-entropy

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.tick)
            self._send(self.replica.tick())

    def _send(self, out: list[tuple[str, Message]]) -> None:
        for peer, msg in out:
            try:
                self.transport.send(GROUP, Envelope(self.cfg.node_id, _node_of(peer), msg))
            except LocalProtocolError as exc:  # bigger than a frame: cannot replicate it
                log.error("crdt node %s: cannot send a %s message to %s: %s", self.id,
                          msg.get("t"), peer, exc)

    def _on_message(self, group: int, env: Any) -> None:
        assert isinstance(env, Envelope)
        try:
            answers = self.replica.on_message(replica_name(env.src), env.body)
        except WireError as exc:
            raise RemoteProtocolError(f"crdt message from node {env.src}: {exc}") from None
        except CRDTError as exc:  # another type under one name, not a peer, too many objects
            self.refused += 1
            if self.refused <= 10 or self.refused % 1000 == 0:  # bounded logging
                log.warning("crdt node %s: refused a message from node %d (%d so far): %s",
                            self.id, env.src, self.refused, exc)
            return
        self._send(answers)

    # ---- local operations (what the HTTP API calls)

    def _object(self, kind: str, name: str) -> CRDT | None:
        obj = self.replica.get(name)
        if obj is not None and not isinstance(obj, KINDS[kind]):
            raise _Conflict(f"{name!r} is a {_kind_of(obj)}, not a {kind}")
        return obj

    def read(self, kind: str, name: str) -> dict[str, Any]:
        obj = self._object(kind, name)
        out: dict[str, Any] = {"name": name, "value": _value_json(kind, obj)}
        if kind == "register":
            ts = obj.timestamp if isinstance(obj, LWWRegister) else None
            out["timestamp"] = list(ts) if ts is not None else None
        return out

    def write(self, kind: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self._object(kind, name)  # a type conflict is refused before anything changes
        me = self.id
        if kind == "counter":
            n = body.get("add", 1)
            if type(n) is not int or set(body) - {"add"}:
                raise WireError('a counter takes {"add": <int>}')
            self.replica.apply(name, lambda c: c.increment(me, n), PNCounter)
        elif kind == "set":
            if len(body) != 1 or not set(body) <= {"add", "remove"}:
                raise WireError('a set takes {"add": <element>} or {"remove": <element>}')
            (op, raw), = body.items()
            element = _key(raw)
            if op == "add":
                self.replica.apply(name, lambda s: s.add(me, element), ORSet)
            else:
                self.replica.apply(name, lambda s: s.remove(element), ORSet)
        else:
            if set(body) != {"value"}:
                raise WireError('a register takes {"value": <any JSON>}')
            value = body["value"]
            self.replica.apply(name, lambda r: r.write(value, self.clock, _now_ms()), LWWRegister)
        return self.read(kind, name)

    def state(self) -> dict[str, Any]:
        """Every object's value and one digest of the whole state (canonical wire forms)."""
        objects: dict[str, Any] = {}
        h = hashlib.blake2b(digest_size=16)
        for name in self.replica.names:
            obj = self.replica.get(name)
            assert obj is not None
            kind = _kind_of(obj)
            objects[name] = {"type": kind, "value": _value_json(kind, obj)}
            h.update(msgpack.packb([name, obj.to_wire()]))
        return {"id": self.id, "objects": objects, "digest": h.hexdigest()}

    def status(self) -> dict[str, Any]:
        stats = self.transport.stats()
        peers = {}
        for p in self.replica.peers:
            ps = stats.peers.get(_node_of(p))
            peers[p] = {"connected": bool(ps and ps.connected), "buffered": self.replica.buffered(p),
                        "needs_full": self.replica.needs_full(p),
                        "fault_dropped": ps.fault_dropped if ps else 0}
        return {"id": self.id, "incarnation": self.replica.incarnation,
                "objects": len(self.replica.names), "log": self.replica.log_size,
                "refused": self.refused, "peers": peers, "faults": self.transport.faults.as_dict()}

    # ---- HTTP

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)

        async def health(_: web.Request) -> web.Response:
            return web.json_response({"ok": True, "id": self.id})

        async def status(_: web.Request) -> web.Response:
            return web.json_response(self.status())

        async def state(_: web.Request) -> web.Response:
            return web.json_response(self.state())

        async def get_object(req: web.Request) -> web.Response:
            kind, name = _route(req)
            try:
                return web.json_response(self.read(kind, name))
            except _Conflict as exc:
                return _error(409, str(exc))

        async def post_object(req: web.Request) -> web.Response:
            kind, name = _route(req)
            try:
                body = _json_object(await req.read())
                return web.json_response(self.write(kind, name, body))
            except _Conflict as exc:
                return _error(409, str(exc))
            except ClockDriftError as exc:
                return _error(503, str(exc))
            except MergeError as exc:
                return _error(409, str(exc))
            except (CRDTError, ValueError) as exc:  # WireError, and a malformed body
                return _error(400, str(exc))

        async def faults(req: web.Request) -> web.Response:
            if not self.cfg.allow_faults:
                return _error(404, "fault injection is off on this node; start it with "
                                   "--allow-faults")
            if self.cfg.admin_token is not None and not _bearer_ok(req, self.cfg.admin_token):
                return _error(401, "this needs the admin token: Authorization: Bearer <token>")
            if req.method == "POST":
                try:
                    body = _json_object(await req.read())
                    if body == {"heal": True}:
                        self.transport.faults.heal()
                    elif "heal" in body:
                        raise ValueError('heal must be true and alone: {"heal": true}')
                    else:
                        self.transport.faults.update(**body)
                except ValueError as exc:
                    return _error(400, str(exc))
            return web.json_response(self.transport.faults.as_dict())

        app.add_routes([web.get("/health", health), web.get("/status", status),
                        web.get("/state", state), web.get("/faults", faults),
                        web.post("/faults", faults)])
        for kind in KINDS:
            app.add_routes([web.get(f"/{kind}/{{name}}", get_object),
                            web.post(f"/{kind}/{{name}}", post_object)])
        return app


class _Conflict(Exception):
    """An object of another type already holds the name."""


def _route(req: web.Request) -> tuple[str, str]:
    kind = req.path.split("/")[1]
    name = req.match_info["name"]
    if not name or len(name) > wire.MAX_ID:
        raise web.HTTPBadRequest(text=f"an object name has 1 to {wire.MAX_ID} characters")
    return kind, name


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _bearer_ok(req: web.Request, token: str) -> bool:
    scheme, _, given = req.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _json_object(raw: bytes) -> dict[str, Any]:
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON value")

    try:
        body = json.loads(raw or b"{}", parse_constant=refuse)
    except RecursionError:
        raise ValueError("the body nests too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError(f"the body must be a JSON object, not {type(body).__name__}")
    return body


def _key(raw: Any) -> wire.Key:
    """A set element from JSON: a list stands for a tuple (JSON has no tuples)."""
    if isinstance(raw, list):
        return tuple(_key(x) for x in raw)
    return wire.key(raw, "element")


def _key_json(k: wire.Key) -> Any:
    if isinstance(k, tuple):
        return [_key_json(x) for x in k]
    if isinstance(k, bytes):
        return k.decode("utf-8", "backslashreplace")
    return k


def _kind_of(obj: CRDT) -> str:
    return next((k for k, t in KINDS.items() if isinstance(obj, t)), obj.TYPE)


def _value_json(kind: str, obj: CRDT | None) -> Any:
    if obj is None:
        return {"counter": 0, "set": [], "register": None}.get(kind)
    if isinstance(obj, ORSet):
        return [_key_json(k) for k in sorted(obj.value(), key=wire.key_order)]
    return obj.value()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# ---------------------------------------------------------------------- the process


def _address(text: str, what: str) -> Address:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{what} must be host:port, got {text!r}")
    return host or HOST, int(port)


def _peer(text: str) -> tuple[int, Address]:
    ident, sep, addr = text.partition("=")
    if not sep or not ident.isdigit() or int(ident) < 1:
        raise argparse.ArgumentTypeError(f"a peer is ID=host:port, got {text!r}")
    return int(ident), _address(addr, f"peer {ident}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m shoal.crdt.node",
                                 description="One active-active CRDT replica (docs/failover.md).")
    ap.add_argument("--id", type=int, required=True)
    ap.add_argument("--listen", type=lambda s: _address(s, "--listen"), required=True,
                    help="the peer port, host:port")
    ap.add_argument("--http", type=lambda s: _address(s, "--http"), required=True,
                    help="the client API, host:port")
    ap.add_argument("--peer", type=_peer, action="append", default=[], help="ID=host:port")
    ap.add_argument("--cluster-id", default="crdt")
    ap.add_argument("--tick", type=float, default=0.1, help="seconds between rounds")
    ap.add_argument("--allow-faults", action="store_true")
    ap.add_argument("--admin-token-file", type=Path)
    ap.add_argument("--peer-secret-file", type=Path)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    token = a.admin_token_file.read_text().strip() if a.admin_token_file else None
    try:
        cfg = NodeConfig(a.id, a.listen, a.http, dict(a.peer), a.cluster_id, a.tick,
                         allow_faults=a.allow_faults, admin_token=token,
                         peer_secret_file=a.peer_secret_file).check()
    except ValueError as exc:
        ap.error(str(exc))

    async def serve() -> None:
        node = CrdtNode(cfg)
        await node.start()
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        await done.wait()
        await node.stop()

    asyncio.run(serve())


# ---------------------------------------------------------------------- local processes


class CrdtProcessCluster:
    """`with CrdtProcessCluster(3) as c: c.start(); c.post(1, "/counter/x", {"add": 1})` —
    n CRDT node processes on this machine (ids 1..n), faults allowed behind an admin token,
    peers behind a peer secret, logs in ROOT/c<i>.log."""

    def __init__(self, n: int = 3, root: Path | None = None, tick: float = 0.1):
        if not 1 <= n <= 9:
            raise ValueError(f"a local CRDT cluster has 1 to 9 nodes, not {n}")
        from ..local.cluster import free_ports

        self.n, self.tick = n, tick
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="shoal-crdt-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        self.admin_token = secrets.token_hex(16)
        for name, value in (("crdt-admin-token", self.admin_token),
                            ("crdt-peer-secret", secrets.token_hex(16))):
            path = self.root / name
            path.write_text(value + "\n")
            path.chmod(0o600)
        ports = free_ports(2 * n)
        self.peer_ports = {i: ports[2 * (i - 1)] for i in self.ids}
        self.http_ports = {i: ports[2 * (i - 1) + 1] for i in self.ids}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def ids(self) -> list[int]:
        return list(range(1, self.n + 1))

    def url(self, i: int) -> str:
        return f"http://{HOST}:{self.http_ports[i]}"

    def command(self, i: int) -> list[str]:
        peers = [f"--peer={j}={HOST}:{self.peer_ports[j]}" for j in self.ids if j != i]
        # Not `-m shoal.crdt.node`: the module would run as __main__ and, imported again under
        # its own name, register its codec twice.
        return [sys.executable, "-c", "from shoal.crdt.node import main; main()", "--id", str(i),
                "--listen", f"{HOST}:{self.peer_ports[i]}", "--http", f"{HOST}:{self.http_ports[i]}",
                *peers, "--tick", str(self.tick), "--allow-faults",
                "--admin-token-file", str(self.root / "crdt-admin-token"),
                "--peer-secret-file", str(self.root / "crdt-peer-secret")]

    def start(self, timeout: float = 20.0) -> None:
        for i in self.ids:
            self.start_node(i)
        for i in self.ids:
            self.wait_serving(i, timeout)

    def start_node(self, i: int) -> None:
        with open(self.root / f"c{i}.log", "ab") as logf:
            self.procs[i] = subprocess.Popen(self.command(i), stdin=subprocess.DEVNULL,
                                             stdout=logf, stderr=subprocess.STDOUT,
                                             start_new_session=True)

    def wait_serving(self, i: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            p = self.procs[i]
            if p.poll() is not None:
                raise RuntimeError(f"crdt node {i} exited with code {p.returncode}; see "
                                   f"{self.root / f'c{i}.log'}")
            try:
                self.get(i, "/health", timeout=1.0)
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"crdt node {i} did not serve within {timeout:.0f}s; see "
                                   f"{self.root / f'c{i}.log'}")
            time.sleep(0.05)

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        p = self.procs[i]
        p.send_signal(sig)
        if sig == signal.SIGKILL:
            p.wait()

    def stop(self, timeout: float = 5.0) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
        deadline = time.monotonic() + timeout
        for p in self.procs.values():
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def close(self) -> None:
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> CrdtProcessCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- requests (urllib.error.HTTPError carries a refusal; OSError: no answer)

    def get(self, i: int, path: str, timeout: float = 2.0) -> dict[str, Any]:
        return self._request(i, path, None, timeout)

    def post(self, i: int, path: str, body: dict[str, Any], timeout: float = 2.0) -> dict[str, Any]:
        return self._request(i, path, body, timeout)

    def _request(self, i: int, path: str, body: dict[str, Any] | None,
                 timeout: float) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url(i) + path, data=data, headers=headers,
                                     method="GET" if body is None else "POST")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
            return answer

    def isolate(self, i: int) -> None:
        """Cut node i off from every other node, both ways (on node i's side)."""
        others = [j for j in self.ids if j != i]
        self.post(i, "/faults", {"block_to": others, "block_from": others})

    def heal(self) -> None:
        for i in self.ids:
            if self.procs[i].poll() is None:
                self.post(i, "/faults", {"heal": True})

    def states(self) -> dict[int, dict[str, Any] | None]:
        out: dict[int, dict[str, Any] | None] = {}
        for i in self.ids:
            try:
                out[i] = self.get(i, "/state")
            except (OSError, ValueError):
                out[i] = None
        return out

    def wait_converged(self, timeout: float, among: list[int] | None = None,
                       until: Callable[[dict[int, dict[str, Any]]], bool] | None = None) -> float:
        """Seconds until nodes `among` (default all) hold the same state (and `until` holds
        of their states); TimeoutError naming the differing states after `timeout`."""
        nodes = among or self.ids
        start = time.monotonic()
        while True:
            states = self.states()
            got = {i: s for i, s in states.items() if i in nodes and s is not None}
            if len(got) == len(nodes) and len({s["digest"] for s in got.values()}) == 1 and (
                    until is None or until(got)):
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                shown = {i: (s or {}).get("objects") for i, s in states.items() if i in nodes}
                raise TimeoutError(f"crdt nodes {nodes} did not converge within {timeout:.1f}s: "
                                   f"{shown}")
            time.sleep(0.05)


if __name__ == "__main__":
    main()
