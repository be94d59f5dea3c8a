"""The gateway against HAProxy: the same backends, the same load generator (wrk), one run.

`run_gateway_bench()` installs Debian's haproxy and wrk when they are missing, starts N
identical minimal backends (this module, `python -m shoal_bench.gateway backend`), a 1-node
Shoal store where the backends register themselves, the Shoal gateway (one process,
round-robin) and HAProxy (one process, `nbthread 1`, round-robin, keep-alive both ways,
`http-reuse always`) in front of the same backends. Then wrk runs against each proxy in turn,
interleaved (A B, B A, ...) so both see the same noise on a shared machine, and the table
gives medians and the ratios Shoal/HAProxy. Target (issue 17): at least 0.8x HAProxy's
requests per second, p99 within 1.5x.

The backends are a bare asyncio Protocol on uvloop that answers every request head with a
fixed 14-byte body: they cost as little as a Python server can, so the proxies, not the
backends, are what is measured."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from shoal.local.cluster import LocalProcessCluster, free_ports

from .debian import ensure

console = Console()
HOST = "127.0.0.1"
SERVICE = "gwbench"


# ---------------------------------------------------------------------------- tools
def ensure_tools() -> tuple[str, str]:
    """Paths of haproxy and wrk, installing Debian's packages when either is absent."""
    tools = ensure({"haproxy": "haproxy", "wrk": "wrk"})
    return tools["haproxy"], tools["wrk"]


# ---------------------------------------------------------------------------- backend
RESPONSE_BODY = b"hello, world!\n"  # 14 bytes


class _BackendProtocol(asyncio.Protocol):
    """Answers each request head with a fixed response. Requests must have no body (the
    benchmark sends GETs only); pipelined heads get one answer each."""

    __slots__ = ("transport", "buf", "response")

    def __init__(self, response: bytes):
        self.response = response
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        n = buf.count(b"\r\n\r\n")
        if n:
            assert self.transport is not None
            self.transport.write(self.response * n)
            buf = buf[buf.rfind(b"\r\n\r\n") + 4:]
        if len(buf) > 65536:
            assert self.transport is not None
            self.transport.close()
            buf = b""
        self.buf = buf


async def serve_backend(port: int, ident: str, service: str | None, endpoints: list[str]) -> None:
    response = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Backend: %s\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (ident.encode(), len(RESPONSE_BODY),
                                                    RESPONSE_BODY))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _BackendProtocol(response), HOST, port,
                                      backlog=1024)
    print(f"serving {ident} on {HOST}:{port}", flush=True)
    async with server:
        if service is None:
            await asyncio.Event().wait()
            return
        from shoal.client import Client
        from shoal.registry import Instance, Registration

        async with Client(endpoints) as client, Registration(
                client, Instance(service, ident, f"{HOST}:{port}"), 10):
            print(f"registered {ident} in {service}", flush=True)
            await asyncio.Event().wait()


# ---------------------------------------------------------------------------- wrk
@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors plus non-2xx/3xx responses
    requests: int = 0
    cpu_us: float = float("nan")  # the proxy's CPU time (user + system) per request


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """Requests/sec, p50 and p99 (ms) and errors from `wrk --latency` output."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    if not (rps and p50 and p99):
        raise ValueError(f"cannot parse wrk output (was --latency given?):\n{output}")
    errors = 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    total = re.search(r"^\s*(\d+) requests in", output, re.M)
    return WrkResult(float(rps.group(1)), _ms(p50.group(1)), _ms(p99.group(1)), errors,
                     int(total.group(1)) if total else 0)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(wrk: str, url: str, threads: int, connections: int, seconds: float,
            pid: int | None = None) -> WrkResult:
    """One wrk run; with `pid`, also the CPU that process spent per request meanwhile."""
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", url]
    cpu0 = cpu_seconds(pid) if pid else 0.0
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr or proc.stdout}")
    result = parse_wrk(proc.stdout)
    if pid and result.requests:
        cpu = (cpu_seconds(pid) - cpu0) / result.requests * 1e6
        result = dataclasses.replace(result, cpu_us=cpu)
    return result


# ---------------------------------------------------------------------------- haproxy
def haproxy_config(port: int, backends: list[str]) -> str:
    """One process, one thread, round-robin, keep-alive to clients and servers."""
    servers = "\n".join(f"    server b{i} {addr} check inter 5s"
                        for i, addr in enumerate(backends, 1))
    return f"""global
    nbthread 1
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    option forwardfor
    http-reuse always
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s

frontend fe
    bind {HOST}:{port}
    default_backend be

backend be
    balance roundrobin
{servers}
"""


# ---------------------------------------------------------------------------- the run
@dataclass
class GatewayBenchPlan:
    backends: int = 2
    connections: int = 64
    threads: int = 1
    seconds: float = 10.0
    repeat: int = 3
    warmup_s: float = 2.0


@dataclass
class SystemResult:
    name: str
    runs: list[WrkResult]

    @property
    def rps(self) -> float:
        return statistics.median(r.rps for r in self.runs)

    @property
    def p50(self) -> float:
        return statistics.median(r.p50_ms for r in self.runs)

    @property
    def p99(self) -> float:
        return statistics.median(r.p99_ms for r in self.runs)

    @property
    def cpu_us(self) -> float:
        return statistics.median(r.cpu_us for r in self.runs)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.runs)


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path,
               timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise RuntimeError(f"{what} exited with status {proc.returncode}; {log}:\n{tail}")
        try:
            with socket.create_connection((HOST, port), 0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {HOST}:{port} within {timeout:g} s")


def _wait_routes(url: str, backends: int, what: str, timeout: float = 20.0) -> None:
    """Until requests through `url` reach every backend."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                seen.add(resp.headers.get("X-Backend", ""))
        except OSError:
            time.sleep(0.1)
            continue
        if len(seen - {""}) >= backends:
            return
    raise RuntimeError(f"{what} reached only {sorted(seen)} of {backends} backends "
                       f"within {timeout:g} s")


def _spawn(stack: ExitStack, cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    stack.callback(_stop, proc)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_gateway_bench(plan: GatewayBenchPlan | None = None,
                      root: Path | None = None) -> dict[str, SystemResult]:
    """Run the comparison and print the table. Returns the results by system name."""
    plan = plan or GatewayBenchPlan()
    haproxy, wrk = ensure_tools()
    own_root = root is None
    root = root or Path(tempfile.mkdtemp(prefix="shoal-gwbench-"))
    py = sys.executable
    with ExitStack() as stack:
        store = stack.enter_context(LocalProcessCluster(1))
        with console.status("starting a 1-node Shoal store for the registry..."):
            store.start()
        endpoints = ",".join(store.endpoints)
        ports = free_ports(plan.backends + 3)
        backend_ports, gw_port, gw_admin, ha_port = (ports[:plan.backends], *ports[plan.backends:])
        addrs = [f"{HOST}:{p}" for p in backend_ports]
        with console.status(f"starting {plan.backends} backends..."):
            procs = [_spawn(stack, [py, "-m", "shoal_bench.gateway", "backend", "--port", str(p),
                                    "--id", f"b{i}", "--register", SERVICE,
                                    "--endpoints", endpoints], root / f"backend{i}.log")
                     for i, p in enumerate(backend_ports, 1)]
            for i, (p, proc) in enumerate(zip(backend_ports, procs, strict=True), 1):
                _wait_port(p, proc, f"backend b{i}", root / f"backend{i}.log")
        with console.status("starting the Shoal gateway and HAProxy..."):
            gw = _spawn(stack, [py, "-m", "shoal", "gateway", "--service", SERVICE,
                                "--lb", "round-robin", "--listen", f"{HOST}:{gw_port}",
                                "--admin", f"{HOST}:{gw_admin}", "--endpoints", endpoints],
                        root / "gateway.log")
            cfg = root / "haproxy.cfg"
            cfg.write_text(haproxy_config(ha_port, addrs))
            ha = _spawn(stack, [haproxy, "-db", "-f", str(cfg)], root / "haproxy.log")
            _wait_port(gw_port, gw, "the Shoal gateway", root / "gateway.log")
            _wait_port(ha_port, ha, "HAProxy", root / "haproxy.log")
            urls = {"shoal gateway": f"http://{HOST}:{gw_port}/",
                    "haproxy": f"http://{HOST}:{ha_port}/"}
            _wait_routes(urls["shoal gateway"], plan.backends, "the Shoal gateway")
            _wait_routes(urls["haproxy"], plan.backends, "HAProxy")
        pids = {"shoal gateway": gw.pid, "haproxy": ha.pid}
        results = {name: SystemResult(name, []) for name in urls}
        with console.status("warming up..."):
            for url in urls.values():
                run_wrk(wrk, url, plan.threads, plan.connections, plan.warmup_s)
        order = list(urls)
        for r in range(plan.repeat):
            for name in order if r % 2 == 0 else order[::-1]:  # A B, B A, ...: same noise
                with console.status(f"run {r + 1}/{plan.repeat}: wrk against {name}..."):
                    results[name].runs.append(run_wrk(wrk, urls[name], plan.threads,
                                                      plan.connections, plan.seconds,
                                                      pids[name]))
        connects = _gateway_connects(gw_admin)
    if own_root:  # kept (with the processes' logs) only when something failed
        shutil.rmtree(root, ignore_errors=True)
    print_table(plan, results, connects)
    return results


def _gateway_connects(admin_port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{admin_port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    m = re.search(r"^shoal_gateway_backend_connects_total (\S+)", text, re.M)
    return int(float(m.group(1))) if m else None


def print_table(plan: GatewayBenchPlan, results: dict[str, SystemResult],
                connects: int | None = None) -> None:
    t = Table(title=f"gateway vs HAProxy: wrk -t{plan.threads} -c{plan.connections} "
                    f"-d{plan.seconds:g}s --latency, {plan.backends} backends, "
                    f"medians of {plan.repeat}")
    for col in ("system", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "errors"):
        t.add_column(col, justify="left" if col == "system" else "right")
    for r in results.values():
        t.add_row(r.name, f"{r.rps:,.0f}", f"{r.p50:.2f}", f"{r.p99:.2f}", f"{r.cpu_us:.1f}",
                  str(r.errors))
    s, h = results["shoal gateway"], results["haproxy"]
    rps_ratio, p99_ratio = s.rps / h.rps, s.p99 / h.p99
    t.add_row("Shoal / HAProxy", f"{rps_ratio:.2f}x", f"{s.p50 / h.p50:.2f}x",
              f"{p99_ratio:.2f}x", f"{s.cpu_us / h.cpu_us:.2f}x", "", style="bold")
    console.print(t)
    ok_rps, ok_p99 = rps_ratio >= 0.8, p99_ratio <= 1.5  # issue 17's target
    console.print(f"target: req/s ratio >= 0.80 ({'met' if ok_rps else 'NOT met'}), "
                  f"p99 ratio <= 1.50 ({'met' if ok_p99 else 'NOT met'})")
    console.print("[dim]CPU µs/req: the proxy process's user + system time per request, which "
                  "depends less on what else the machine runs than req/s does[/dim]")
    if connects is not None:
        total = sum(r.rps for r in s.runs) * plan.seconds
        console.print(f"[dim]the gateway opened {connects} backend connections for about "
                      f"{total:,.0f} measured requests[/dim]")


# ---------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description="the Shoal gateway against HAProxy, or a backend")
    sub = p.add_subparsers(dest="cmd")
    b = sub.add_parser("backend", help="serve the minimal benchmark backend")
    b.add_argument("--port", type=int, required=True)
    b.add_argument("--id", required=True)
    b.add_argument("--register", metavar="SERVICE")
    b.add_argument("--endpoints", default="127.0.0.1:2379")
    r = sub.add_parser("run", help="run the comparison")
    r.add_argument("--backends", type=int, default=2)
    r.add_argument("--connections", type=int, default=64)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--seconds", type=float, default=10.0)
    r.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    if args.cmd == "backend":
        from shoal.net import install_event_loop

        install_event_loop()
        try:
            asyncio.run(serve_backend(args.port, args.id, args.register,
                                      args.endpoints.split(",")))
        except KeyboardInterrupt:
            pass
    elif args.cmd == "run":
        run_gateway_bench(GatewayBenchPlan(args.backends, args.connections, args.threads,
                                           args.seconds, args.repeat))
    else:
        p.print_help()


if __name__ == "__main__":
    main()
