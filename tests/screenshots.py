"""The screenshots in docs/img/, taken in headless Chromium (tests/browser.py):

    .venv/bin/python tests/screenshots.py [--nodes 3] [--groups 0]

dashboard.png: `shoal dashboard` over a local cluster with one link cut by a fault;
dashboard-down.png: the same after the leader is killed; timeline.png and
timeline-violation.png: `shoal sim --timeline` pages of a healthy seed, stepped a while, and
of a seed that breaks with a planted bug, at its violation. With --groups N, N more groups
are created and the shots are dashboard-NODESxN*.png, without the timelines. Either way it
prints what the page cost: the size of a view, redraw times, the JS heap, and how soon a
killed leader was shown down and its successor shown."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from browser import chromium, dashboard_process, enter_token, wait_until
from shoal.client import SyncClient as Client
from shoal.local.cluster import LocalProcessCluster

IMG = Path(__file__).resolve().parent.parent / "docs" / "img"


def dashboard_shots(nodes: int, groups: int) -> None:
    """The dashboard's screenshots, and what it costs at this size: printed."""
    name = f"dashboard-{nodes}x{groups}" if groups else "dashboard"
    with LocalProcessCluster(nodes, node_args=["--tick-ms", "20"] if not groups else []) as c:
        leader = c.start(timeout=120)
        with Client(c.endpoints) as client:
            for g in range(1, groups + 1):
                client.create_group(g, min(3, nodes), timeout=20)
        with dashboard_process(c, interval=0.5) as url:
            driver = chromium(1400, 1500)
            try:
                driver.get(url)
                enter_token(driver, c.admin_token)
                wait_until(lambda: driver.find_element("id", "leader").text == f"n{leader}", 20,
                           "the leader shown")
                wait_until(lambda: len(driver.find_elements("css selector", "#groups tbody tr"))
                           >= min(groups + 1, 100), 60, "every group drawn")
                a, b = [i for i in c.ids if i != leader][:2]
                c.faults(a, {"block_to": [b], "block_from": [b]})
                wait_until(lambda: driver.find_elements("css selector", "#links line.cut"), 10,
                           "the cut link drawn")
                draws = []
                for _ in range(20):  # ten seconds of views: how long each redraw took
                    draws.append(float(driver.find_element("tag name", "body")
                                       .get_attribute("data-draw-ms") or 0))
                    time.sleep(0.5)
                driver.save_screenshot(str(IMG / f"{name}.png"))
                with urllib.request.urlopen(urllib.request.Request(
                        url + "/stream", headers=c.admin_headers), timeout=5) as stream:
                    view_bytes = len(stream.readline())
                c.faults(a, {"heal": True})
                leader = c.wait_leader()
                c.kill(leader)
                killed = time.monotonic()
                wait_until(lambda: "is-down" in str(driver.find_element(
                    "css selector", f'.card[data-node="{leader}"]').get_attribute("class")), 20,
                    "the killed leader shown down")
                shown_down = time.monotonic() - killed
                wait_until(lambda: driver.find_element("id", "leader").text not in
                           ("", "none", f"n{leader}"), 20, "a new leader shown")
                shown_leader = time.monotonic() - killed
                driver.save_screenshot(str(IMG / f"{name}-down.png"))
                heap = driver.execute_script("return performance.memory.usedJSHeapSize")
            finally:
                driver.quit()
    draws.sort()
    print(f"{nodes} nodes, {groups + 1} groups: a view is {view_bytes / 1000:.0f} KB; a redraw "
          f"takes {draws[len(draws) // 2]:.1f} ms (median of {len(draws)}, max {draws[-1]:.1f}); "
          f"JS heap {heap / 1e6:.0f} MB; the killed leader shown down after {shown_down:.2f} s, "
          f"its successor after {shown_leader:.2f} s")


def timeline_shots() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ok, bad = Path(tmp) / "ok.html", Path(tmp) / "bad.html"
        for args, path in ((["--seed", "1", "--steps", "3000"], ok),
                           (["--bug", "skip-log-matching", "--seed", "2"], bad)):
            subprocess.run([sys.executable, "-m", "shoal", "sim", *args, "--timeline", str(path)],
                           stdout=subprocess.DEVNULL, check=False)
        driver = chromium(1400, 1100)
        try:
            driver.get(ok.as_uri())
            slider = driver.find_element("id", "slider")
            driver.execute_script("arguments[0].value = 400; arguments[0].dispatchEvent("
                                  "new Event('input'))", slider)
            driver.save_screenshot(str(IMG / "timeline.png"))
            driver.get(bad.as_uri())
            driver.find_element("id", "to-violation").click()
            driver.save_screenshot(str(IMG / "timeline-violation.png"))
        finally:
            driver.quit()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--groups", type=int, default=0)
    args = ap.parse_args()
    IMG.mkdir(parents=True, exist_ok=True)
    if not args.groups:
        timeline_shots()
    dashboard_shots(args.nodes, args.groups)
    print(f"screenshots in {IMG}")


if __name__ == "__main__":
    main()
