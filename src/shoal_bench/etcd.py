"""The reference system: a local 3-member etcd (Debian's etcd-server, installed if missing) and
a driver for it through an independent asyncio etcd client (aetcd)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from shoal.server.config import Member

from .debian import ensure


def ensure_etcd() -> str:
    """Path of the etcd binary, installing Debian's etcd-server when absent."""
    return ensure({"etcd": "etcd-server"})["etcd"]


class EtcdCluster:
    """Three etcd members on loopback, each with its own data dir (fsync on, etcd defaults)."""

    def __init__(self, members: tuple[Member, ...], root: Path | None = None):
        self.members = members
        self.root = root or Path(tempfile.mkdtemp(prefix="shoal-bench-etcd-"))
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def endpoints(self) -> list[str]:
        return [f"{m.client[0]}:{m.client[1]}" for m in self.members]

    def start(self) -> None:
        etcd = ensure_etcd()
        initial = ",".join(f"e{m.id}=http://{m.peer[0]}:{m.peer[1]}" for m in self.members)
        for m in self.members:
            log = open(self.root / f"e{m.id}.log", "wb")  # noqa: SIM115 - closed with the process
            self.procs.append(subprocess.Popen([
                etcd, "--name", f"e{m.id}", "--data-dir", str(self.root / f"e{m.id}"),
                "--listen-client-urls", f"http://{m.client[0]}:{m.client[1]}",
                "--advertise-client-urls", f"http://{m.client[0]}:{m.client[1]}",
                "--listen-peer-urls", f"http://{m.peer[0]}:{m.peer[1]}",
                "--initial-advertise-peer-urls", f"http://{m.peer[0]}:{m.peer[1]}",
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", "shoal-bench", "--logger", "zap",
                "--log-outputs", "stderr"], stdout=log, stderr=log))

    async def wait_leader(self, timeout: float = 30.0) -> str:
        import aetcd

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for ep in self.endpoints:
                host, _, port = ep.rpartition(":")
                try:
                    async with aetcd.Client(host, int(port), timeout=2) as c:
                        st = await c.status()
                        if st.leader is not None and st.leader.client_urls:
                            return str(st.leader.client_urls[0]).removeprefix("http://")
                except Exception:  # noqa: BLE001 - not up yet
                    pass
            await asyncio.sleep(0.2)
        raise TimeoutError("etcd elected no leader")

    def pids(self) -> list[int]:
        """The member processes, whose CPU the benchmark reads."""
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        # Killed, not terminated: the data is deleted next, and a SIGTERMed member spends
        # seconds handing over leadership to members that are stopping too.
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
        shutil.rmtree(self.root, ignore_errors=True)


class EtcdDriver:
    name = "etcd"

    def __init__(self, endpoint: str):
        import aetcd

        host, _, port = endpoint.rpartition(":")
        self._c: Any = aetcd.Client(host, int(port), timeout=10)

    async def put(self, key: bytes, value: bytes) -> None:
        await self._c.put(key, value)

    async def get(self, key: bytes) -> None:
        await self._c.get(key)

    async def close(self) -> None:
        await self._c.close()
