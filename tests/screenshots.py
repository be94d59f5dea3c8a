"""The screenshots in docs/img/, taken in headless Chromium (tests/browser.py):

    .venv/bin/python tests/screenshots.py [--nodes 3] [--groups 0]

dashboard.png: `shoal dashboard` over a local cluster with one link cut by the fault panel;
dashboard-down.png: the same after the leader is killed; timeline.png and
timeline-violation.png: `shoal sim --timeline` pages of a healthy seed, stepped a while, and
of a seed that breaks with a planted bug, at its violation."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from browser import chromium, dashboard_process, enter_token, wait_until
from shoal.client import SyncClient as Client
from shoal.local.cluster import LocalProcessCluster

IMG = Path(__file__).resolve().parent.parent / "docs" / "img"


def dashboard_shots(nodes: int, groups: int) -> None:
    with LocalProcessCluster(nodes, node_args=["--tick-ms", "20"]) as c:
        leader = c.start(timeout=60)
        with Client(c.endpoints) as client:
            for g in range(1, groups + 1):
                client.create_group(g, min(3, nodes), timeout=10)
        with dashboard_process(c) as url:
            driver = chromium(1400, 1500)
            try:
                driver.get(url)
                enter_token(driver, c.admin_token)
                wait_until(lambda: driver.find_element("id", "leader").text == f"n{leader}", 20,
                           "the leader shown")
                a, b = (i for i in c.ids if i != leader)
                c.faults(a, {"block_to": [b], "block_from": [b]})
                wait_until(lambda: driver.find_elements("css selector", "#links line.cut"), 10,
                           "the cut link drawn")
                time.sleep(1.0)  # a few views, so the rates are filled in
                driver.save_screenshot(str(IMG / "dashboard.png"))
                c.faults(a, {"heal": True})
                c.kill(leader)
                wait_until(lambda: driver.find_element("id", "leader").text not in
                           ("", "none", f"n{leader}"), 20, "a new leader shown")
                driver.save_screenshot(str(IMG / "dashboard-down.png"))
            finally:
                driver.quit()


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
    timeline_shots()
    dashboard_shots(args.nodes, args.groups)
    print(f"screenshots in {IMG}")


if __name__ == "__main__":
    main()
