"""What Python's gRPC server costs before Shoal does anything: a grpc.aio server answering etcd's
KV Put and Range with constant responses, driven by the `--grpc` bench's load generator (aetcd,
the same processes and clients), its CPU per operation read the same way. With `--mux` the
requests pass through the etcd port's front listener (PortMux) as they do on a node; with
`--shoal` the same process serves a 1-node Shoal (fsync off) through its EtcdServer instead,
which is the floor plus Shoal's own path without replication or the disk.

    .venv/bin/python -m shoal_bench.grpc_floor [--mux | --shoal] [--seconds 5]

Compare the figures with `shoal bench --compare-etcd --grpc`: a Shoal cluster's server CPU per
operation cannot fall below this floor (it pays it on the member the client talks to)."""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import grpc

from shoal.etcdapi.pb import rpc_pb2
from shoal.local.cluster import free_ports

from .procs import DriverSpec, run_load_procs


async def _serve(port: int, mux: bool) -> Any:
    header = rpc_pb2.ResponseHeader(cluster_id=1, member_id=1, revision=1, raft_term=1)

    async def put(req: rpc_pb2.PutRequest, ctx: Any) -> rpc_pb2.PutResponse:
        return rpc_pb2.PutResponse(header=header)

    async def range_(req: rpc_pb2.RangeRequest, ctx: Any) -> rpc_pb2.RangeResponse:
        return rpc_pb2.RangeResponse(header=header, count=1,
                                     kvs=[{"key": req.key, "value": b"x" * 256}])

    def handler(fn: Any, cls: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=cls.FromString,
            response_serializer=lambda m: m.SerializeToString())

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("etcdserverpb.KV", {
        "Put": handler(put, rpc_pb2.PutRequest), "Range": handler(range_, rpc_pb2.RangeRequest)}),))
    if not mux:
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        return server
    from aiohttp import web

    from shoal.etcdapi.mux import PortMux

    path = os.path.join(tempfile.mkdtemp(), "grpc.sock")
    server.add_insecure_port(f"unix:{path}")
    await server.start()
    runner = web.AppRunner(web.Application())
    await runner.setup()
    assert runner.server is not None
    front = PortMux(runner.server, path)
    await front.start("127.0.0.1", port)
    return server, front


async def _shoal(port: int) -> Any:
    from shoal.etcdapi.server import EtcdServer
    from shoal.server.config import Member, NodeConfig
    from shoal.server.main import Server

    peer, client, http = free_ports(3)
    me = Member(1, ("127.0.0.1", peer), ("127.0.0.1", client))
    cfg = NodeConfig(id=1, data_dir=Path(tempfile.mkdtemp()) / "n1", members=(me,),
                     http=("127.0.0.1", http), fsync=False).validate()
    server = Server(cfg)
    await server.start()
    while server.node.role != "leader":
        await asyncio.sleep(0.02)
    etcd = EtcdServer(server.node, f"127.0.0.1:{port}")
    await etcd.start()
    return server, etcd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mux", action="store_true", help="through the etcd port's PortMux")
    ap.add_argument("--shoal", action="store_true", help="a 1-node Shoal's EtcdServer instead")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=64)
    args = ap.parse_args()
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop
        loop = uvloop.new_event_loop()  # as a node runs
    except ImportError:
        loop = asyncio.new_event_loop()
    # The server on a thread of this process, so this process's CPU is the server's.
    threading.Thread(target=loop.run_forever, daemon=True).start()
    port = free_ports(1)[0]
    serve = _shoal(port) if args.shoal else _serve(port, args.mux)
    _kept = asyncio.run_coroutine_threadsafe(serve, loop).result()  # (collected, it stops)
    spec = DriverSpec("grpc-floor", "etcd", (f"127.0.0.1:{port}",))
    for mix in ("put", "get"):
        r = run_load_procs(spec, clients=args.clients, seconds=args.seconds, value_size=256,
                           mix=mix, procs=2, server_pids=[os.getpid()])
        print(f"{mix}: {r.throughput:,.0f} ops/s, server {r.server_us_per_op:,.0f} us/op, "
              f"p99 {r.p99_ms:.1f} ms, load generator {r.generator_cores:.2f} cores", flush=True)
    os._exit(0)  # the server's thread and loop go with the process


if __name__ == "__main__":
    main()
