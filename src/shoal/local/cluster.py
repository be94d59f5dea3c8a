"""A cluster of real `shoal node` processes on this machine: what `shoal cluster up`, `shoal demo`
and the torture test run. Each node gets its own data dir and log file under one root:

    ROOT/n1/        data dir of node 1       ROOT/n1.log   its stderr (INFO logging)
    ROOT/cluster-id    the cluster's random id     ROOT/admin-token, ROOT/peer-secret (mode 0600)
    ROOT/cluster.json  what a supervisor (`shoal cluster up`) runs: pids, command lines, ports,
                       and the address its control port listens on (see ClusterControl)

A cluster's id, admin token and peer secret are random, made when its root is first used and
kept there, so a cluster restarted on the same root is the same cluster. Nodes run with
/faults enabled behind the admin token (`admin_token`); `status` and `faults` send it.

Everything here is synchronous and talks to nodes only the way an operator would: signals to
the processes, GET /status and /faults on their HTTP ports. `shoal cluster stop|start|kill|
restart NODE` reach the supervisor through its control port, so every node process stays its
child, and Ctrl-C there still stops them all."""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..server.config import Member, check_port_free

HOST = "127.0.0.1"
STATE_FILE = "cluster.json"
OPERATIONS = ("stop", "start", "kill", "restart", "pause", "resume")


def free_ports(n: int) -> list[int]:
    """n ports the kernel says are free now (held open together, so they are distinct)."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def plan_ports(n: int, base_port: int | None) -> list[tuple[int, int, int, int, int]]:
    """(client, peer, http, etcd, kafka) port of each node. From base B: clients B+i, peers
    B+100+i, http B+200+i, etcd's API B+300+i, Kafka's protocol B+400+i, for node i = 1..n, so
    the numbers say which node they belong to. None = any free."""
    if base_port is None or base_port == 0:
        p = free_ports(5 * n)
        return [tuple(p[5 * i:5 * i + 5]) for i in range(n)]  # type: ignore[misc]
    return [(base_port + i, base_port + 100 + i, base_port + 200 + i, base_port + 300 + i,
             base_port + 400 + i) for i in range(1, n + 1)]


class LocalProcessCluster:
    """`with LocalProcessCluster(3) as c: c.start(); ...` — n node processes (ids 1..n).

    `root` defaults to a fresh temporary directory, removed on exit; a given root is kept.
    `cluster_id` defaults to the one in the root, or a new random one.
    `node_args` are appended to every node's command line (e.g. ["--tick-ms", "20"])."""

    def __init__(self, n: int = 3, root: Path | None = None, base_port: int | None = None,
                 cluster_id: str | None = None, node_args: Sequence[str] = ()):
        if not 1 <= n <= 9:
            raise ValueError(f"a local cluster has 1 to 9 nodes, not {n}")
        self.n, self.node_args = n, list(node_args)
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="shoal-cluster-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        self.admin_token_file = self.root / "admin-token"
        self.peer_secret_file = self.root / "peer-secret"
        self.cluster_id = cluster_id or _kept_secret(self.root / "cluster-id")
        self.admin_token = _kept_secret(self.admin_token_file)
        _kept_secret(self.peer_secret_file)
        ports = plan_ports(n, base_port)
        self.members = tuple(Member(i, (HOST, peer), (HOST, client), (HOST, etcd), (HOST, kafka))
                             for i, (client, peer, _, etcd, kafka) in enumerate(ports, 1))
        self.http_ports = {i: http for i, (_, _, http, _, _) in enumerate(ports, 1)}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------------ addresses
    @property
    def ids(self) -> list[int]:
        return [m.id for m in self.members]

    @property
    def endpoints(self) -> list[str]:
        """Client addresses, for `Client(...)` and `--endpoints`."""
        return [f"{m.client[0]}:{m.client[1]}" for m in self.members]

    @property
    def peer_endpoints(self) -> list[str]:
        return [f"{m.peer[0]}:{m.peer[1]}" for m in self.members]

    @property
    def etcd_endpoints(self) -> list[str]:
        return [f"{m.etcd[0]}:{m.etcd[1]}" for m in self.members if m.etcd]

    @property
    def kafka_bootstrap(self) -> list[str]:
        """Each node's Kafka address, for Kafka clients' bootstrap.servers."""
        return [f"{m.kafka[0]}:{m.kafka[1]}" for m in self.members if m.kafka]

    @property
    def http_endpoints(self) -> list[str]:
        return [f"{HOST}:{self.http_ports[i]}" for i in self.ids]

    def member(self, i: int) -> Member:
        return self.members[i - 1]

    def data_dir(self, i: int) -> Path:
        return self.root / f"n{i}"

    def log_path(self, i: int) -> Path:
        return self.root / f"n{i}.log"

    def pid(self, i: int) -> int | None:
        p = self.procs.get(i)
        return p.pid if p is not None else None

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 20.0) -> int:
        """Start every node and return the leader's id once one is elected."""
        for i in self.ids:  # all ports first: fail before any process starts
            self._check_ports(i)
        for i in self.ids:
            self.start_node(i)
        return self.wait_leader(timeout)

    def start_node(self, i: int, *, join: bool = False) -> None:
        """Start node i (its ports must be free). `join` starts it as a new member of a
        running cluster instead of bootstrapping, e.g. after wipe(i) and a member add."""
        if self.alive(i):
            raise RuntimeError(f"node {i} is already running (pid {self.pid(i)})")
        self._check_ports(i)
        cmd = self.command(i, join=join)
        with open(self.log_path(i), "ab") as log:
            # A session of its own: a Ctrl-C at the terminal reaches only us, and we stop
            # the nodes in order rather than all at once.
            self.procs[i] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)

    def command(self, i: int, *, join: bool = False) -> list[str]:
        """Node i's command line: what `start_node` runs, and what a person can run by hand."""
        spec = ",".join(m.describe() for m in self.members)
        return [sys.executable, "-m", "shoal", "node", "--id", str(i),
                "--data-dir", str(self.data_dir(i)), "--members", spec,
                "--http", f"{HOST}:{self.http_ports[i]}", "--cluster-id", self.cluster_id,
                "--allow-faults", "--admin-token-file", str(self.admin_token_file),
                "--peer-secret-file", str(self.peer_secret_file),
                *(["--join"] if join else []), *self.node_args]

    def alive(self, i: int) -> bool:
        p = self.procs.get(i)
        return p is not None and p.poll() is None

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Send a signal to node i. SIGKILL waits until the process is gone; SIGSTOP/SIGCONT
        pause and resume it; SIGTERM asks for a graceful stop (see stop_node to wait)."""
        p = self.procs.get(i)
        if p is None or p.poll() is not None:
            raise RuntimeError(f"node {i} is not running")
        p.send_signal(sig)
        if sig == signal.SIGKILL:
            p.wait()

    def stop_node(self, i: int, timeout: float = 5.0) -> int | None:
        """SIGTERM (graceful: leadership is handed over), then SIGKILL after `timeout`.
        Returns the exit code, or None if the node was not running."""
        p = self.procs.get(i)
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)  # a paused node cannot act on SIGTERM
            p.terminate()
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return p.returncode

    def restart(self, i: int, *, join: bool = False, timeout: float = 5.0) -> None:
        self.stop_node(i, timeout)
        self.start_node(i, join=join)

    def wipe(self, i: int) -> None:
        """Delete node i's data dir (the node must be stopped): a disk replaced."""
        if self.alive(i):
            raise RuntimeError(f"node {i} is running; stop or kill it before wiping its data")
        shutil.rmtree(self.data_dir(i), ignore_errors=True)

    def stop(self, timeout: float = 5.0) -> dict[int, int | None]:
        """Stop every node: SIGTERM to all at once, then wait (SIGKILL after `timeout`).
        Returns each node's exit code (0 = clean; -9 = had to be killed)."""
        running = [i for i in self.ids if self.alive(i)]
        for i in running:
            self.procs[i].send_signal(signal.SIGCONT)
            self.procs[i].terminate()
        deadline = time.monotonic() + timeout
        for i in running:
            try:
                self.procs[i].wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.procs[i].kill()
                self.procs[i].wait()
        return {i: p.returncode for i, p in self.procs.items()}

    def close(self) -> None:
        """Stop everything; remove the root if we created it."""
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalProcessCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ observing
    @property
    def admin_headers(self) -> dict[str, str]:
        """What /status and /faults need on these nodes."""
        return {"Authorization": f"Bearer {self.admin_token}"}

    def status(self, i: int, timeout: float = 1.0) -> dict[str, Any] | None:
        """Node i's GET /status, or None if it does not answer."""
        if not self.alive(i):
            return None
        try:
            return self._admin_request(i, "/status", None, timeout)
        except (OSError, ValueError):
            return None

    def faults(self, i: int, changes: dict[str, Any] | None = None,
               timeout: float = 2.0) -> dict[str, Any]:
        """Node i's fault plan after POSTing `changes` to /faults (GET if None), e.g.
        `{"block_to": [2, 3]}` or `{"heal": True}`. urllib.error.HTTPError on a refusal;
        OSError if the node does not answer."""
        return self._admin_request(i, "/faults", changes, timeout)

    def _admin_request(self, i: int, path: str, body: dict[str, Any] | None,
                       timeout: float) -> dict[str, Any]:
        headers = dict(self.admin_headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(f"http://{HOST}:{self.http_ports[i]}{path}", data=data,
                                     headers=headers, method="GET" if body is None else "POST")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
            return answer

    def statuses(self, timeout: float = 1.0) -> dict[int, dict[str, Any] | None]:
        return {i: self.status(i, timeout) for i in self.ids}

    def leader(self) -> int | None:
        """The node that says it leads, at the highest term any answering node reports."""
        leaders = [(st["term"], i) for i, st in self.statuses().items()
                   if st is not None and st["role"] == "leader"]
        return max(leaders)[1] if leaders else None

    def wait_leader(self, timeout: float = 20.0, not_: int | None = None) -> int:
        """Wait until some node (other than `not_`) leads; its id. A node that exits early
        (a bad flag, a port taken) fails this at once, pointing at its log."""
        deadline = time.monotonic() + timeout
        while True:
            for i, p in self.procs.items():
                if p.poll() is not None and p.returncode not in (0, -signal.SIGKILL):
                    raise RuntimeError(f"node {i} exited with code {p.returncode}: "
                                       f"{_last_line(self.log_path(i))} (log {self.log_path(i)})")
            leader = self.leader()
            if leader is not None and leader != not_:
                return leader
            if time.monotonic() > deadline:
                raise TimeoutError(f"no leader elected within {timeout:.0f}s; logs in {self.root}")
            time.sleep(0.05)

    def wait_serving(self, i: int, timeout: float = 20.0) -> None:
        """Wait until node i answers /status (it need not have a leader)."""
        deadline = time.monotonic() + timeout
        while self.status(i) is None:
            p = self.procs[i]
            if p.poll() is not None:
                raise RuntimeError(f"node {i} exited with code {p.returncode}: "
                                   f"{_last_line(self.log_path(i))} (log {self.log_path(i)})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {i} did not serve within {timeout:.0f}s; "
                                   f"see {self.log_path(i)}")
            time.sleep(0.05)

    def wait_caught_up(self, i: int, timeout: float = 30.0) -> None:
        """Wait until node i follows a leader and has applied what that leader had committed
        when we asked: back in the cluster, not merely started."""
        self.wait_serving(i, timeout)
        deadline = time.monotonic() + timeout
        while True:
            leader = self.leader()
            st, lead = self.status(i), self.status(leader) if leader is not None else None
            if st is not None and lead is not None and st.get("leader") == leader \
                    and int(st.get("applied") or 0) >= int(lead.get("commit") or 0):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {i} did not catch up within {timeout:.0f}s; "
                                   f"see {self.log_path(i)}")
            time.sleep(0.05)

    # ------------------------------------------------------------------ the state file
    def state(self, control: str | None) -> dict[str, Any]:
        """What ROOT/cluster.json holds (shape: docs/cli.md)."""
        nodes = []
        for m in self.members:
            i = m.id
            nodes.append({
                "id": i, "pid": self.pid(i) if self.alive(i) else None, "running": self.alive(i),
                "command": self.command(i), "client": f"{HOST}:{m.client[1]}",
                "peer": f"{HOST}:{m.peer[1]}", "http": f"{HOST}:{self.http_ports[i]}",
                "etcd": f"{HOST}:{m.etcd[1]}" if m.etcd else None,
                "kafka": f"{HOST}:{m.kafka[1]}" if m.kafka else None,
                "data_dir": str(self.data_dir(i)), "log": str(self.log_path(i))})
        return {"root": str(self.root), "cluster_id": self.cluster_id,
                "supervisor_pid": os.getpid() if control else None, "control": control,
                "endpoints": self.endpoints, "nodes": nodes}

    def write_state(self, control: str | None) -> None:
        """Write ROOT/cluster.json (atomically: a reader never sees half of it)."""
        tmp = self.root / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(self.state(control), indent=2) + "\n")
        tmp.replace(self.root / STATE_FILE)

    def _check_ports(self, i: int) -> None:
        m = self.member(i)
        for addr, what in ((m.client, f"node {i} client"), (m.peer, f"node {i} peer"),
                           ((HOST, self.http_ports[i]), f"node {i} http"), (m.etcd, f"node {i} etcd"),
                           (m.kafka, f"node {i} kafka")):
            if addr is not None:
                check_port_free(addr, what)


class ClusterControl:
    """The supervisor's end of `shoal cluster stop|start|kill|restart NODE`: a TCP port on
    127.0.0.1 taking one JSON line, {"token": ADMIN_TOKEN, "op": OP, "node": ID}, and answering
    one, {"ok": bool, "message": str}. The token (ROOT/admin-token, mode 0600) keeps other
    users of the machine out. Each request is handled to its end before the next is read."""

    def __init__(self, cluster: LocalProcessCluster):
        self.cluster = cluster
        self._sock = socket.create_server((HOST, 0))
        self.address = f"{HOST}:{self._sock.getsockname()[1]}"

    def serve(self, timeout: float) -> tuple[str, int, str] | None:
        """Handle one request if one comes within `timeout` seconds: (op, node, message) of
        one carried out, for the supervisor to report; None if none came or it was refused."""
        if not select.select([self._sock], [], [], timeout)[0]:
            return None
        conn, _ = self._sock.accept()
        with conn:
            conn.settimeout(5.0)
            try:
                request = json.loads(conn.makefile("rb").readline())
                op, node, token = request["op"], int(request["node"]), request["token"]
            except (OSError, ValueError, KeyError, TypeError):
                return None  # not one of ours, or it hung up: nothing to do or say
            done: tuple[str, int, str] | None = None
            if not secrets.compare_digest(str(token), self.cluster.admin_token):
                answer = {"ok": False, "message": "wrong admin token"}
            else:
                try:
                    done = (op, node, self._carry_out(op, node))
                    answer = {"ok": True, "message": done[2]}
                except (RuntimeError, TimeoutError, ValueError) as exc:
                    answer = {"ok": False, "message": str(exc)}
                self.cluster.write_state(self.address)
            try:
                conn.sendall(json.dumps(answer).encode() + b"\n")
            except OSError:
                pass  # the asker gave up; what was done is in cluster.json
            return done

    def _carry_out(self, op: str, i: int) -> str:
        c = self.cluster
        if i not in c.ids:
            raise ValueError(f"no node {i}: this cluster has nodes {', '.join(map(str, c.ids))}")
        if op in ("stop", "kill") and not c.alive(i):
            raise RuntimeError(f"node {i} is not running")
        if op == "stop":
            return f"node {i} stopped (exit code {c.stop_node(i)})"
        if op == "kill":
            c.kill(i)
            return f"node {i} killed (SIGKILL)"
        if op in ("pause", "resume"):  # the dashboard's fault panel: a process frozen, thawed
            if not c.alive(i):
                raise RuntimeError(f"node {i} is not running")
            c.kill(i, signal.SIGSTOP if op == "pause" else signal.SIGCONT)
            return f"node {i} {op}d ({'SIGSTOP' if op == 'pause' else 'SIGCONT'})"
        if op not in ("start", "restart"):
            raise ValueError(f"unknown operation {op!r}: use one of {', '.join(OPERATIONS)}")
        from ..server.config import ConfigError

        try:
            if op == "restart":
                c.restart(i)
            else:
                c.start_node(i)
        except ConfigError as exc:  # a port someone else took meanwhile
            raise RuntimeError(str(exc)) from None
        c.wait_serving(i)
        return f"node {i} {op}ed (pid {c.pid(i)})"

    def close(self) -> None:
        self._sock.close()


def ask_supervisor(root: Path, op: str, node: int, timeout: float = 60.0) -> str:
    """Have the `shoal cluster up` running on ROOT carry out `op` on `node`; its report.
    RuntimeError says why not (no such cluster, none running, the operation failed)."""
    state = read_state(root)
    if not state.get("control"):
        raise RuntimeError(f"the cluster in {root} is not running (its `shoal cluster up` has "
                           "exited); start it again with `shoal cluster up --dir` on it")
    host, _, port = state["control"].rpartition(":")
    request = {"token": (root / "admin-token").read_text().strip(), "op": op, "node": node}
    try:
        with socket.create_connection((host, int(port)), timeout=5.0) as conn:
            conn.settimeout(timeout)
            conn.sendall(json.dumps(request).encode() + b"\n")
            answer = json.loads(conn.makefile("rb").readline() or b"null")
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"the `shoal cluster up` of {root} (pid {state['supervisor_pid']}) "
                           f"does not answer on {state['control']}: {exc}") from None
    if not isinstance(answer, dict) or not answer.get("ok"):
        raise RuntimeError(answer.get("message", "no answer") if isinstance(answer, dict)
                           else "no answer")
    return str(answer["message"])


def read_state(root: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((root / STATE_FILE).read_text())
    except FileNotFoundError:
        raise RuntimeError(f"{root} holds no {STATE_FILE}: not a `shoal cluster up` directory") \
            from None
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"unreadable {root / STATE_FILE}: {exc}") from None
    return state


def running_roots() -> list[Path]:
    """The directories of the `shoal cluster up` runs alive now that use a temporary
    directory (those given --dir are found only through it)."""
    found = []
    for path in sorted(Path(tempfile.gettempdir()).glob(f"shoal-cluster-*/{STATE_FILE}")):
        try:
            pid = json.loads(path.read_text()).get("supervisor_pid")
            if pid:
                os.kill(pid, 0)
                found.append(path.parent)
        except (OSError, ValueError, AttributeError):
            continue
    return found


def _kept_secret(path: Path) -> str:
    """The random value kept in `path`, made (readable by this user only) if it is not there."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    value = secrets.token_hex(16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"
