"""Can one request hold a leader's event loop past the election timeout? (issue 10, finding 4)

Starts a real 3-node cluster (LocalProcessCluster), then sends the leader, one at a time:

  client-arrays   a 1.6 MB client frame of empty msgpack arrays
  client-mapkey   a client frame whose map has an array as a key
  peer-arrays     an 8 MiB peer frame of empty arrays, after a valid peer handshake
  etcd-range      an etcd Range over 100k keys (14 MB of response), three times
  shoal-range     the same range through Shoal's client port
  etcd-nested     an etcd Txn of 128 nested txns of 128 ranges each

For each: the reply time, elections (how far the highest term moved), the leader's peak RSS
growth, the slowest /health answer while it ran (measured from outside, every 20 ms), and
what the leader's /status says of its own loop over the last 10 to 20 s (the longest stall
past a tick's due time, the longest gap between two rounds of ticks).

    python -m shoal_bench.stall_probe [--keys 100000] [--only etcd-range,peer-arrays]
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import msgpack

from shoal.etcdapi.pb import rpc_pb2, rpc_pb2_grpc
from shoal.local.cluster import HOST, LocalProcessCluster
from shoal.net import frames

CLIENT_FRAME = 1_600_000
PEER_FRAME = frames.MAX_FRAME


def _empty_arrays(size: int) -> bytes:
    """A msgpack array32 of empty arrays, `size` bytes in all."""
    n = size - 5
    return b"\xdd" + n.to_bytes(4, "big") + b"\x90" * n


class HealthPinger:
    """GET /health on one node every 20 ms from a thread; the slowest answer since reset()."""

    def __init__(self, port: int):
        self.port, self.worst, self._stop = port, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                with urllib.request.urlopen(f"http://{HOST}:{self.port}/health", timeout=30) as r:
                    r.read()
            except OSError:
                pass  # an unhealthy answer (503) is an answer: its time counts all the same
            self.worst = max(self.worst, time.monotonic() - t)
            self._stop.wait(0.02)

    def reset(self) -> None:
        self.worst = 0.0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _recv_frame(sock: socket.socket) -> Any:
    def exactly(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    return msgpack.unpackb(exactly(int.from_bytes(exactly(4), "big")), strict_map_key=False)


def client_frame(cluster: LocalProcessCluster, leader: int, payload: bytes) -> str:
    with socket.create_connection(cluster.member(leader).client, timeout=30) as s:
        s.sendall(len(payload).to_bytes(4, "big") + payload)
        try:
            answer = _recv_frame(s)
        except (ConnectionError, TimeoutError) as exc:
            return f"no answer ({exc})"
    return f"{answer[1]}: {str(answer[2].get('message', ''))[:70]}"


def peer_frame(cluster: LocalProcessCluster, leader: int, payload: bytes) -> str:
    """Shake hands as node 99 of the cluster (with its peer secret, when it has one), then
    send one message frame of group 0 holding `payload`."""
    secret_file = cluster.root / "peer-secret"
    secret = frames.PeerSecret.from_file(secret_file) if hasattr(frames, "PeerSecret") and \
        secret_file.exists() else None
    hello = frames.Handshake(cluster.cluster_id, 99, "raft")
    with socket.create_connection(cluster.member(leader).peer, timeout=30) as s:
        mine = hello if secret is None else secret.hello(hello)
        s.sendall(mine.encode())
        head = s.recv(4)
        body = b""
        while len(body) < int.from_bytes(head, "big"):
            body += s.recv(4096)
        theirs = frames.Handshake.decode(body)
        if secret is not None:
            s.sendall(frames.frame(secret.proof("dialer", mine, theirs), frames.MAX_HANDSHAKE))
        s.sendall(frames.message_frame(0, payload, frames.MAX_FRAME))
        s.settimeout(30)
        try:
            closed = s.recv(1) == b""
        except (ConnectionError, TimeoutError):
            closed = True
    return "connection closed by the leader" if closed else "connection left open"


def load_keys(cluster: LocalProcessCluster, n: int) -> None:
    """n keys k/000000.. with 100-byte values, 128 puts per txn, through etcd's API."""
    leader = cluster.wait_leader()
    with grpc.insecure_channel(cluster.etcd_endpoints[leader - 1]) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        for lo in range(0, n, 128):
            puts = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
                key=b"k/%08d" % i, value=b"v" * 100)) for i in range(lo, min(n, lo + 128))]
            kv.Txn(rpc_pb2.TxnRequest(success=puts), timeout=30)


def etcd_range(cluster: LocalProcessCluster, leader: int) -> str:
    with grpc.insecure_channel(cluster.etcd_endpoints[leader - 1], options=[
            ("grpc.max_receive_message_length", 256 << 20)]) as ch:
        resp = rpc_pb2_grpc.KVStub(ch).Range(
            rpc_pb2.RangeRequest(key=b"k/", range_end=b"k0"), timeout=30)
    return f"{resp.count} keys, {resp.ByteSize() / 1e6:.1f} MB"


def shoal_range(cluster: LocalProcessCluster, leader: int) -> str:
    from shoal.client.sync import SyncClient

    with SyncClient(cluster.endpoints[leader - 1], timeout=30) as c:
        resp = c.get(b"k/", range_end=b"k0")
    return f"{len(resp.kvs)} keys"


def etcd_nested(cluster: LocalProcessCluster, leader: int) -> str:
    ranges = [rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"k/%08d" % i))
              for i in range(128)]
    inner = rpc_pb2.RequestOp(request_txn=rpc_pb2.TxnRequest(success=ranges))
    try:
        with grpc.insecure_channel(cluster.etcd_endpoints[leader - 1]) as ch:
            rpc_pb2_grpc.KVStub(ch).Txn(rpc_pb2.TxnRequest(success=[inner] * 128), timeout=10)
    except grpc.RpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    return "answered"


def probe(cluster: LocalProcessCluster, pinger: HealthPinger, name: str,
          send: Callable[[int], str]) -> dict[str, Any]:
    leader = cluster.wait_leader()
    pinger.port = cluster.http_ports[leader]
    time.sleep(0.5)
    terms = {i: st["term"] for i, st in cluster.statuses().items() if st}
    pid = cluster.pid(leader) or 0
    rss = _rss_kb(pid, "VmRSS")
    pinger.reset()
    t = time.monotonic()
    answer = send(leader)
    took = time.monotonic() - t
    time.sleep(1.5)  # room for an election the stall may have started
    after = cluster.statuses(timeout=5)
    st = after.get(leader) or {}
    row = {
        "probe": name, "leader": leader, "answer": answer, "reply_s": round(took, 2),
        "elections": max((s["term"] for s in after.values() if s), default=0)
        - max(terms.values()),
        "leader_now": cluster.leader(), "rss_peak_growth_mb": round(
            (_rss_kb(pid, "VmHWM") - rss) / 1024, 1) if cluster.alive(leader) else None,
        "worst_health_ms": round(pinger.worst * 1000),
        "loop_stall_ms": st.get("recent_loop_stall_ms"),
        "tick_gap_ms": st.get("recent_tick_gap_ms"),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--only", default="")
    ap.add_argument("--runs", type=int, default=3, help="of each range probe")
    args = ap.parse_args()
    only = set(args.only.split(",")) - {""}
    probes: list[tuple[str, Callable[[LocalProcessCluster, int], str]]] = [
        ("client-arrays", lambda c, n: client_frame(c, n, _empty_arrays(CLIENT_FRAME))),
        ("client-mapkey", lambda c, n: client_frame(c, n, msgpack.packb(
            [1, "status", {(1, 2): 3}]))),
        ("peer-arrays", lambda c, n: peer_frame(c, n, _empty_arrays(PEER_FRAME - 16))),
        *[("etcd-range", etcd_range)] * args.runs,
        *[("shoal-range", shoal_range)] * args.runs,
        ("etcd-nested", etcd_nested),
    ]
    with LocalProcessCluster(3) as cluster:
        leader = cluster.start()
        pinger = HealthPinger(cluster.http_ports[leader])
        try:
            if not only or only & {"etcd-range", "shoal-range", "etcd-nested"}:
                t = time.monotonic()
                load_keys(cluster, args.keys)
                print(f"# loaded {args.keys} keys in {time.monotonic() - t:.0f} s", flush=True)
            for name, send in probes:
                if not only or name in only:
                    probe(cluster, pinger, name, partial(send, cluster))
            unhandled = sum(cluster.log_path(i).read_text().count("Unhandled exception")
                            for i in cluster.ids)
            print(json.dumps({"unhandled_exceptions_in_logs": unhandled}), flush=True)
        finally:
            pinger.stop()


if __name__ == "__main__":
    main()
