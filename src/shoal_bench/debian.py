"""Installing the Debian tools that tests and benchmarks compare against (etcd, etcdctl,
HAProxy, wrk), so a fresh machine needs nothing done by hand."""

from __future__ import annotations

import os
import shutil
import subprocess

APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


class MissingTool(RuntimeError):
    """A tool is absent and could not be installed; the message says how to get it."""


def which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def ensure(binaries: dict[str, str]) -> dict[str, str]:
    """Paths of `binaries` (name -> Debian package), installing the missing packages. On a
    fresh machine the package index may be empty, so a failed install is retried once after
    `apt-get update`."""
    missing = sorted({pkg for name, pkg in binaries.items() if which(name) is None})
    if missing:
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            raise MissingTool(f"{', '.join(missing)} needed: install with apt-get install "
                              f"{' '.join(missing)} (as root)")
        if _apt("install", "-y", "-q", *missing) != 0:
            _apt("update", "-q")
            if _apt("install", "-y", "-q", *missing) != 0:
                raise MissingTool(f"apt-get install {' '.join(missing)} failed")
    found = {name: which(name) for name in binaries}
    absent = [n for n, p in found.items() if p is None]
    if absent:
        raise MissingTool(f"installed {', '.join(missing)} but {', '.join(absent)} is not on PATH")
    return {n: p for n, p in found.items() if p is not None}


def _apt(*args: str) -> int:
    return subprocess.run(["apt-get", *args], env=APT_ENV, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, check=False).returncode
