"""A real browser for the page tests: headless Chromium from Debian (installed by
shoal_bench.debian when absent), driven by selenium through chromedriver.

`chromium()` starts one; `wait_until` polls a condition on the page with a deadline (no
sleeps); `dashboard_process` runs `shoal dashboard` on a free port for a LocalProcessCluster,
and `supervisor` serves that cluster's control port as `shoal cluster up` would."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service

from shoal.local.cluster import ClusterControl, LocalProcessCluster, free_ports
from shoal_bench.debian import ensure

T = TypeVar("T")


def chromium(width: int = 1280, height: int = 1000) -> webdriver.Chrome:
    paths = ensure({"chromium": "chromium", "chromedriver": "chromium-driver"})
    opts = webdriver.ChromeOptions()
    opts.binary_location = paths["chromium"]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(paths["chromedriver"]), options=opts)


@contextlib.contextmanager
def session(width: int = 1280, height: int = 1000) -> Iterator[webdriver.Chrome]:
    """A browser for a `with` block (a module's fixture), quit at its end."""
    driver = chromium(width, height)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(probe: Callable[[], T], timeout: float, what: str) -> T:
    """The first truthy value `probe` returns within `timeout` seconds; AssertionError naming
    `what` otherwise. Elements redrawn between lookups are looked up again."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
            if last:
                return last
        except (StaleElementReferenceException, WebDriverException) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.1f}s (last: {last!r})")
        time.sleep(0.02)


@contextlib.contextmanager
def dashboard_process(cluster: LocalProcessCluster, interval: float = 0.25,
                      gateways: Sequence[str] = (), supervised: bool = False) -> Iterator[str]:
    """`shoal dashboard` watching `cluster` (and the gateways' admin ports); yields its URL.
    `supervised`: through the cluster's root (`--dir`), whose supervisor answers there."""
    port = free_ports(1)[0]
    nodes = ["--dir", str(cluster.root)] if supervised else [
        "--endpoints", ",".join(cluster.http_endpoints), "--admin-token-file",
        str(cluster.admin_token_file)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoal", "dashboard", *nodes, "--listen", f"127.0.0.1:{port}",
         "--interval", str(interval), "--gateways", ",".join(gateways)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://"), f"shoal dashboard did not start: {proc.stderr.read() if proc.stderr else ''}"
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def supervisor(cluster: LocalProcessCluster) -> Iterator[None]:
    """What `shoal cluster up` does for `cluster`: its control port served (on a thread),
    its ROOT/cluster.json naming it, so `--dir` tools can stop, kill or pause its nodes."""
    control = ClusterControl(cluster)
    cluster.write_state(control.address)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            control.serve(0.05)

    thread = threading.Thread(target=serve, name="cluster-control", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(5)
        control.close()


def enter_token(driver: webdriver.Chrome, token: str) -> None:
    box = driver.find_element("id", "token")
    box.send_keys(token)
    driver.find_element("id", "token-go").click()
