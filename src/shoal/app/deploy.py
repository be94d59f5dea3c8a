"""`shoal app deploy`: the process groups of a deploy file as processes on this machine.

    with Deployment("examples.shop:App", "deploy.toml") as dep:
        dep.start()                  # a local 3-node Shoal if the file names no cluster
        dep.kill("back", 0)          # kill -9 one replica
        dep.restart("back", 0)

Each replica is `python -m shoal.app.process` (see there), a child of this supervisor, its
stderr in ROOT/<group>-<replica>.log. `start` returns once every replica printed its ready
line (it has registered). ROOT/deploy.json records what runs (pids, addresses, the store's
endpoints) for `shoal app status`; ROOT/app-token (mode 0600) the deployment's secret, which every RPC call
to its replicas must carry (`Deployed(..., token=dep.token)`). The supervisor talks to its processes only the way an
operator would: signals, and their HTTP /health."""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .config import DeployConfig, load_deploy

STATE_FILE = "deploy.json"
READY_TIMEOUT_S = 60.0  # six interpreters starting at once on a busy machine take a while


class Deployment:
    def __init__(self, app_path: str | None, config_path: str | Path, *,
                 root: Path | None = None, ttl: int = 5, env: dict[str, str] | None = None,
                 endpoints: list[str] | None = None):
        self.config_path = Path(config_path).resolve()
        self.config: DeployConfig = load_deploy(self.config_path)
        main = app_path or self.config.main
        if not main:
            raise ValueError("no application: give mymod:App or set [app] main in "
                             f"{self.config_path}")
        self.app_path, self.ttl = main, ttl
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="shoal-app-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, **(env or {})}
        # The deployment's secret: its replicas refuse RPC calls (and /metrics) without it.
        self.token = self.env.get("SHOAL_APP_TOKEN") or secrets.token_hex(16)
        self.env["SHOAL_APP_TOKEN"] = self.token
        token_file = self.root / "app-token"
        token_file.touch(mode=0o600)
        token_file.write_text(self.token)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [os.getcwd(), *filter(None, [self.env.get("PYTHONPATH", "")])])
        self.cluster: Any = None
        self.endpoints = list(endpoints or self.config.endpoints)  # empty: a local cluster
        self.procs: dict[tuple[str, int], subprocess.Popen[bytes]] = {}
        self.ready: dict[tuple[str, int], dict[str, Any]] = {}

    # ------------------------------------------------------------------ life
    def start(self) -> None:
        """The store if needed, then every replica; all stopped again if one fails."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        if not self.endpoints:
            from ..local.cluster import LocalProcessCluster

            self.cluster = LocalProcessCluster(3, root=self.root / "cluster",
                                               node_args=["--tick-ms", "20"])
            self.cluster.start()
            self.endpoints = self.cluster.endpoints
        for group, g in self.config.groups.items():
            for i in range(g.replicas):
                self.start_replica(group, i, wait=False)
        for key in list(self.procs):
            self._wait_ready(key)
        self.write_state()

    def start_replica(self, group: str, replica: int, *, wait: bool = True) -> None:
        key = (group, replica)
        log = open(self.root / f"{group}-{replica}.log", "ab")  # noqa: SIM115 - the child's
        cmd = [sys.executable, "-m", "shoal.app.process", "--app", self.app_path,
               "--config", str(self.config_path), "--group", group, "--replica", str(replica),
               "--endpoints", ",".join(self.endpoints), "--root", str(self.root),
               "--ttl", str(self.ttl)]
        self.procs[key] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log,
                                           env=self.env)
        log.close()
        if wait:
            self._wait_ready(key)
            self.write_state()

    def _wait_ready(self, key: tuple[str, int]) -> None:
        proc = self.procs[key]
        assert proc.stdout is not None
        end = time.monotonic() + READY_TIMEOUT_S
        line = b""
        while not line.endswith(b"\n"):
            left = end - time.monotonic()
            if proc.poll() is not None or left <= 0:
                tail = (self.root / f"{key[0]}-{key[1]}.log").read_text()[-2000:]
                raise RuntimeError(f"replica {key[0]}-{key[1]} did not come up "
                                   f"(exit {proc.poll()}):\n{tail}")
            ready, _, _ = select.select([proc.stdout], [], [], min(left, 0.2))
            if ready:
                line += os.read(proc.stdout.fileno(), 4096)
        self.ready[key] = json.loads(line.splitlines()[0])

    def kill(self, group: str, replica: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[(group, replica)]
        proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            proc.wait(10)

    def restart(self, group: str, replica: int) -> None:
        if self.procs[(group, replica)].poll() is None:
            self.kill(group, replica, signal.SIGTERM)
        self.start_replica(group, replica)

    def stop(self, timeout: float = 10.0) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        end = time.monotonic() + timeout
        for p in self.procs.values():
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
        if self.cluster is not None:
            self.cluster.stop()
        (self.root / STATE_FILE).unlink(missing_ok=True)

    def close(self) -> None:
        self.stop()
        if self._own_root:
            import shutil

            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ state
    def write_state(self) -> None:
        state = {"app": self.app_path, "config": str(self.config_path),
                 "endpoints": self.endpoints, "supervisor": os.getpid(),
                 "replicas": [{**self.ready.get(k, {}), "group": k[0], "replica": k[1],
                               "pid": p.pid} for k, p in self.procs.items()]}
        tmp = self.root / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.root / STATE_FILE)


def running_deployments() -> list[Path]:
    """State files of deployments under the temporary directory, newest first."""
    base = Path(tempfile.gettempdir())
    found = [p for p in base.glob(f"shoal-app-*/{STATE_FILE}")]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)
