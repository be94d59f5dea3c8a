"""`shoal sim --timeline`: the recorded run, and its page in a real browser (headless Chromium):
it steps, plays, and on a failing seed shows the violation."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from typer.testing import CliRunner

from browser import session, wait_until
from shoal.cli import app
from shoal.sim import SimConfig
from shoal.sim.bugs import planted
from shoal.sim.campaign import run_seed
from shoal.sim.timeline import record_seed
from shoal.web.timeline import page, write

SHORT = SimConfig(nodes=3, steps=1500)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    with session() as driver:
        yield driver


def now(driver: webdriver.Chrome) -> str:
    return str(driver.find_element("id", "now").text)


def test_the_record_follows_the_run() -> None:
    res, rec = record_seed(3, SHORT)
    assert res.ok and rec["violation"] is None
    assert rec["nodes"] == [1, 2, 3] and rec["seed"] == 3
    assert len(rec["messages"]) == res.stats["messages"]  # every send, none twice
    delivered = [m for m in rec["messages"] if m[1] >= 0]
    assert delivered and all(m[1] >= m[0] for m in delivered)
    leaders = {f[1] for f in rec["frames"] if f[3] == "leader"}
    assert leaders and rec["stats"]["elections"] >= len(leaders) >= 1
    assert max(f[6] for f in rec["frames"]) == res.committed  # commit indexes as they grew
    assert run_seed(3, SHORT).committed == res.committed  # recording does not change the run


def test_page_embeds_the_record_safely() -> None:
    _, rec = record_seed(3, SHORT)
    rec["notes"].append([0, "</script><script>alert(1)</script>"])
    html = page(rec)
    assert "</script><script>alert" not in html  # a note cannot end the data element
    assert "http://" not in html and "https://" not in html  # nothing fetched from anywhere


def test_the_option_needs_one_seed_of_the_cluster_workload(tmp_path: Path) -> None:
    out = tmp_path / "x.html"
    for args, why in ((["sim", "--timeline", str(out)], "--timeline replays one seed: give --seed"),
                      (["sim", "--workload", "bank", "--seed", "1", "--timeline", str(out)],
                       "--timeline: not options of the transaction workloads")):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and why in result.stderr, result.stderr
    assert not out.exists()


def test_page_steps_and_plays(browser: webdriver.Chrome, tmp_path: Path) -> None:
    path = tmp_path / "run.html"
    write(path, record_seed(3, SHORT)[1])
    browser.get(path.as_uri())
    wait_until(lambda: "instant 1 of" in now(browser), 5, "the page opens at the first instant")
    assert len(browser.find_elements("css selector", "#logs .log")) == 3
    for k in (2, 3, 4):
        browser.find_element("id", "step").click()
        assert f"instant {k} of" in now(browser)
        assert browser.find_elements("css selector", "#instant li")  # what happened then
    browser.find_element("id", "back").click()
    assert "instant 3 of" in now(browser)
    slider = browser.find_element("id", "slider")
    browser.execute_script("arguments[0].value = arguments[0].max; "
                           "arguments[0].dispatchEvent(new Event('input'))", slider)
    # at the end the healed cluster has converged: one leader, every log committed alike
    assert len(browser.find_elements("css selector", "#stage circle.node.leader")) == 1
    browser.execute_script("arguments[0].value = 0; arguments[0].dispatchEvent(new Event('input'))",
                           slider)
    browser.find_element("id", "play").click()
    wait_until(lambda: "instant 1 of" not in now(browser), 5, "playing moves time on")
    browser.find_element("id", "play").click()  # pause
    paused = now(browser)
    browser.execute_async_script(  # three frames drawn: a playing page would have moved on
        "const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame("
        "() => requestAnimationFrame(done)));")
    assert now(browser) == paused


def test_failing_seed_page_shows_the_violation(browser: webdriver.Chrome, tmp_path: Path) -> None:
    bug = planted("skip-log-matching")
    cfg = bug.config()
    seed = next(s for s in range(bug.seeds) if not run_seed(s, cfg).ok)
    path = tmp_path / "bad.html"
    done = CliRunner().invoke(app, ["sim", "--bug", bug.name, "--seed", str(seed),
                                    "--timeline", str(path)])
    assert done.exit_code == 1, done.output  # the verdict, as without --timeline
    rec = json.loads(path.read_text().split('id="record">')[1].split("</script>")[0])
    assert rec["violation"]["text"]
    browser.get(path.as_uri())
    banner = browser.find_element("id", "violation")
    assert banner.is_displayed()
    assert rec["violation"]["text"][:40] in banner.text
    assert browser.find_elements("css selector", "#marks span")  # marked on the time line
    browser.find_element("id", "to-violation").click()
    wait_until(lambda: browser.find_element("css selector", "#notes li.bad").is_displayed(), 2,
               "the violation listed at its instant")
    assert browser.find_element("id", "verdict").text == "violation"
    named = {int(n) for n in re.findall(r"\bn(?:ode )?(\d+)\b", rec["violation"]["text"])
             if int(n) in rec["nodes"]}
    ringed = {int(str(c.get_attribute("data-node")))
              for c in browser.find_elements("css selector", "#stage circle.culprit")}
    assert named and ringed == named  # the nodes the violation names
