"""The live dashboard in a real browser (headless Chromium): three node processes with faults
allowed behind an admin token, `shoal dashboard` watching them, and the page it serves."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from selenium import webdriver

from browser import dashboard_process, enter_token, session, supervisor, wait_until
from shoal.client import SyncClient
from shoal.failover.fencing import Keys
from shoal.local.cluster import LocalProcessCluster, free_ports
from shoal.registry import Instance


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalProcessCluster]:
    with LocalProcessCluster(3, root=tmp_path_factory.mktemp("cluster"),
                             node_args=["--tick-ms", "20"]) as c:
        c.start(timeout=30)
        with supervisor(c):
            yield c


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    with session() as driver:
        yield driver


@pytest.fixture(scope="module")
def gateway(cluster: LocalProcessCluster) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    """A backend registered as service "web" and `shoal gateway` in front of it: (the
    gateway's address, its admin address, the backend's process)."""
    backend_port, port, admin = free_ports(3)
    backend = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("http_backend.py")), "--port",
         str(backend_port), "--id", "b1", "--register", "web", "--endpoints",
         ",".join(cluster.endpoints)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gw = subprocess.Popen(
        [sys.executable, "-m", "shoal", "gateway", "--service", "web", "--listen",
         f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}", "--health", "http",
         "--health-interval", "0.2", "--endpoints", ",".join(cluster.endpoints)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # (not waited for: it starts while the dashboard does; its test waits for it)
        yield f"127.0.0.1:{port}", f"127.0.0.1:{admin}", backend
    finally:
        for p in (gw, backend):
            p.terminate()
            p.wait(10)


@pytest.fixture(scope="module")
def dashboard(cluster: LocalProcessCluster,
              gateway: tuple[str, str, subprocess.Popen[bytes]]) -> Iterator[str]:
    with dashboard_process(cluster, gateways=[gateway[1]], supervised=True) as url:
        yield url


@pytest.fixture(scope="module")
def page(cluster: LocalProcessCluster, browser: webdriver.Chrome,
         dashboard: str) -> Iterator[webdriver.Chrome]:
    browser.get(dashboard)
    wait_until(lambda: browser.find_element("id", "conn").get_attribute("data-state") == "token",
               10, "the page asks for the admin token")
    enter_token(browser, cluster.admin_token)
    yield browser


def post(url: str, body: bytes, token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_aggregator_refuses_what_it_cannot_do(cluster: LocalProcessCluster, dashboard: str) -> None:
    base, token = dashboard.removesuffix("/dashboard"), cluster.admin_token
    assert post(f"{base}/dashboard/process/1", b'{"op": "pause"}', None)[0] == 401
    assert post(f"{base}/dashboard/faults/1", b'{"heal": true}', "wrong")[0] == 401
    code, answer = post(f"{base}/dashboard/process/7", b'{"op": "pause"}', token)
    assert code == 404 and "no node 7 among the watched: [1, 2, 3]" in answer["error"]
    code, answer = post(f"{base}/dashboard/process/1", b'{"op": "explode"}', token)
    assert code == 400 and "unknown operation 'explode'" in answer["error"]
    code, answer = post(f"{base}/dashboard/process/1", b"[]", token)
    assert code == 400 and '{"op": OPERATION}' in answer["error"]
    code, answer = post(f"{base}/dashboard/faults/1", b'{"drop": 2}', token)  # the node's own check
    assert code == 400 and "drop must be a probability" in answer["error"]
    assert cluster.faults(1)["drop"] == 0.0


def text(driver: webdriver.Chrome, css: str) -> str:
    return str(driver.find_element("css selector", css).text)


def test_stream_needs_the_token(cluster: LocalProcessCluster) -> None:
    # the page is open (it holds no data); the stream is the admin's, as /status is
    url = f"http://{cluster.http_endpoints[0]}/dashboard"
    html = urllib.request.urlopen(url, timeout=20).read()
    assert b"<title>Shoal dashboard</title>" in html
    for asset in (html, *(urllib.request.urlopen(f"{url}/assets/{name}", timeout=20).read()
                          for name in ("dashboard.js", "dashboard.css"))):
        assert b"http://" not in asset and b"https://" not in asset  # no CDN: works offline
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url + "/stream", timeout=20)
    assert refused.value.code == 401


def test_page_shows_the_leader(cluster: LocalProcessCluster, page: webdriver.Chrome) -> None:
    leader = cluster.wait_leader()
    wait_until(lambda: text(page, "#leader") == f"n{leader}", 10, f"the page names n{leader} leader")
    card = page.find_element("css selector", f'.card[data-node="{leader}"]')
    assert "is-leader" in str(card.get_attribute("class"))
    assert text(page, "#groups tbody tr[data-group='0'] td:nth-child(2)") == f"n{leader}"
    assert page.find_element("id", "fault-panel").is_displayed()  # faults allowed, token given


def test_a_node_serves_its_own_page(cluster: LocalProcessCluster, page: webdriver.Chrome) -> None:
    node = next(i for i in cluster.ids if i != cluster.wait_leader())
    home = page.current_window_handle
    page.switch_to.new_window("tab")  # another origin: it asks for the token again
    try:
        page.get(f"http://{cluster.http_endpoints[node - 1]}/dashboard")
        wait_until(lambda: page.find_element("id", "conn").get_attribute("data-state") == "token",
                   10, "the node's page asks for the admin token")
        enter_token(page, cluster.admin_token)
        wait_until(lambda: text(page, f'.card[data-node="{node}"] .state') == "follower", 5,
                   f"n{node}'s page shows it following")
        assert page.find_element("id", "fault-panel").is_displayed()
    finally:
        page.close()
        page.switch_to.window(home)


def test_registered_services_are_listed(cluster: LocalProcessCluster, page: webdriver.Chrome) -> None:
    api = Instance("api", "a1", "127.0.0.1:9000", zone="z1", version="2")
    row = '#services tr[data-service="api"]'
    with SyncClient(cluster.endpoints) as client:
        client.put(api.key, api.to_json())  # (a live one keeps it on its lease)
        try:
            wait_until(lambda: page.find_elements("css selector", row), 5, "the service listed")
            cells = [td.text for td in page.find_elements("css selector", row + " td")]
            assert cells == ["api", "1", "a1 127.0.0.1:9000 z1 v2"]
        finally:
            client.delete(api.key)
    wait_until(lambda: not page.find_elements("css selector", row), 5,
               "the instance gone from the list")


def test_per_method_figures_from_the_instances_metrics(cluster: LocalProcessCluster,
                                                      page: webdriver.Chrome) -> None:
    # Two instances of a component, each serving /metrics as shoal.app's processes do; calls
    # keep arriving at both (most at c1), so the page shows the method's rate, its errors and
    # p99, and where the requests went.
    import http.server
    import threading

    from shoal.app.observe import Observer

    observers = {"c1": Observer("c1", exporter="none"), "c2": Observer("c2", exporter="none")}
    servers = {}
    for ident, o in observers.items():
        class Metrics(http.server.BaseHTTPRequestHandler):
            observer = o

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = self.observer.metrics_text()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        servers[ident] = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
        threading.Thread(target=servers[ident].serve_forever, daemon=True).start()
    stop = threading.Event()

    def calls() -> None:  # 4 calls to c1 for each to c2, one of every 10 at c2 failing
        n = 0
        while not stop.is_set():
            n += 1
            with observers["c1"].server_call("Inventory", "reserve", {}):
                pass
            if n % 4 == 0:
                try:
                    with observers["c2"].server_call("Inventory", "reserve", {}):
                        if n % 40 == 0:
                            raise KeyError("sku")
                except KeyError:
                    pass
            time.sleep(0.002)

    caller = threading.Thread(target=calls, daemon=True)
    caller.start()
    # c1 also calls Inventory, as a process of the shop would, and its breaker for the
    # replica inv-1 is open: its /metrics say so, and so must the page.
    from shoal.app.config import load_deploy
    from shoal.app.deployed import Deployed
    from shoal.balance.base import Backend

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    try:
        from examples.shop import App
    finally:
        sys.path.remove(str(root))
    calling = Deployed(App, None, load_deploy(root / "examples" / "shop.toml"),
                       local=["Frontend", "Orders"], observer=observers["c1"])
    inventory = calling.remotes["Inventory"].caller
    inventory.update([Backend("inv-0", "127.0.0.1:1"), Backend("inv-1", "127.0.0.1:2")])
    for _ in range(inventory.breaker_config.failure_threshold):
        inventory.breakers["inv-1"].on_failure(inventory.clock())
    instances = [Instance("inventory", ident, "127.0.0.1:9000",
                          tags=(f"http=127.0.0.1:{srv.server_address[1]}",))
                 for ident, srv in servers.items()]
    row = '#methods tr[data-method="Inventory.reserve"]'
    try:
        with SyncClient(cluster.endpoints) as client:
            for i in instances:
                client.put(i.key, i.to_json())
            try:
                def figures() -> list[str] | None:
                    cells = [td.text for td in page.find_elements("css selector", row + " td")]
                    return cells if cells and cells[2] not in ("0", "0.0") else None

                cells = wait_until(figures, 15, "the method's figures")
                service, method, rps, errors, p99, spread = cells
                assert (service, method) == ("inventory", "Inventory.reserve") and float(rps) > 0
                assert errors.endswith("%") and p99.startswith("≤ ")
                rates = dict(part.split(": ") for part in spread.split(" · "))
                assert set(rates) == {"c1", "c2"} and float(rates["c1"]) > float(rates["c2"])
                seen = '#callers tr[data-callee="Inventory"][data-caller="inventory c1"] td'
                cells = wait_until(lambda: [td.text for td in
                                            page.find_elements("css selector", seen)], 10,
                                   "what c1's callers see")
                assert cells[2:] == ["least-request", "failover", "inv-1", "–"]
            finally:
                for i in instances:
                    client.delete(i.key)
    finally:
        stop.set()
        caller.join(5)
        for srv in servers.values():
            srv.shutdown()


def test_a_refused_transaction_is_listed_with_its_reason(cluster: LocalProcessCluster,
                                                        page: webdriver.Chrome) -> None:
    from shoal.client import Client
    from shoal.txn.coordinator import TxnAborted

    async def go() -> str:
        async with Client(cluster.endpoints) as client:
            await client.put(b"acct/a", b"10")
            tx = client.transaction()
            await tx.get(b"acct/a")  # read at one version...
            await client.put(b"acct/a", b"20")  # ...written since by someone else
            tx.put(b"acct/b", b"10")
            with pytest.raises(TxnAborted):
                await tx.commit()
            return tx.id.hex()

    txn = asyncio.run(go())
    row = f'#aborts tr[data-txn="{txn}"]'
    wait_until(lambda: page.find_elements("css selector", row), 10, "the abort listed")
    cells = [td.text for td in page.find_elements("css selector", row + " td")]
    assert cells[1] == txn[:16] and "refused" in cells[3]
    assert "changed acct/a" in cells[4]  # the read's key, and why


def test_directory_and_shard_map_after_a_split(cluster: LocalProcessCluster,
                                               page: webdriver.Chrome) -> None:
    from shoal.client import Client
    from shoal.shard.split import split

    async def go() -> int:
        async with Client(cluster.endpoints) as client:
            return (await split(client, b"m")).lookup(b"m").group

    group = asyncio.run(go())
    wait_until(lambda: f'["m", ∞) → group {group}' in text(page, "#shards"), 10,
               "the shard map drawn with the split")
    assert '["", "m") → group 0' in text(page, "#shards")
    hosts = wait_until(lambda: re.search(rf"group {group} on ((n\d, )*n\d)",
                                         text(page, "#directory")), 5, "the new group listed")
    assert len(hosts.group(1).split(", ")) == 3
    wait_until(lambda: page.find_elements("css selector", f'#groups tr[data-group="{group}"]'), 10,
               "the new group's row")


def test_gateway_traffic_and_backends(page: webdriver.Chrome,
                                     gateway: tuple[str, str, subprocess.Popen[bytes]]) -> None:
    address, admin, backend = gateway
    box = f'#gateways .gw[data-gateway="{admin}"]'
    wait_until(lambda: page.find_elements("css selector", box + ' tr[data-backend="b1"]'), 20,
               "the gateway's backend listed")
    assert "picker round-robin" in text(page, box + " h3")

    def traffic() -> str:
        for _ in range(20):  # a second's worth, again until a scrape has seen it
            with urllib.request.urlopen(f"http://{address}/", timeout=5) as r:
                assert r.status == 200
        figures = text(page, box + " .figures")
        return figures if not figures.startswith(("0 ", "– ")) else ""

    figures = wait_until(traffic, 10, "requests per second shown")
    assert "errors 0.0%" in figures and "p99 ≤" in figures
    backend.kill()  # its health check fails (not routable, drawn so), then its lease ends

    def gone_or_marked() -> bool:
        rows = page.find_elements("css selector", box + ' tr[data-backend="b1"]')
        return not rows or "bad" in str(rows[0].get_attribute("class"))

    wait_until(gone_or_marked, 10, "the dead backend marked not routable, or dropped")


def test_primary_backup_roles_and_tokens(cluster: LocalProcessCluster,
                                        page: webdriver.Chrome) -> None:
    keys = Keys("orders")  # laid out as shoal.failover's members write them
    with SyncClient(cluster.endpoints) as client:
        put = client.put(keys.primary, msgpack.packb({"id": 2, "addr": "127.0.0.1:7100",
                                                      "mode": "sync"}))
        for member in (1, 2):
            client.put(keys.member(member), b"{}")
        try:
            row = '#failover tr[data-service="orders"] td'
            wait_until(lambda: [td.text for td in page.find_elements("css selector", row)]
                       == ["orders", "n2 127.0.0.1:7100", str(put.header.revision), "sync", "1, 2"],
                       5, "the primary, its fencing token (the key's create revision) and members")
        finally:
            client.delete(keys.prefix, prefix=True)


def test_event_log_partitions_and_consumer_lag(cluster: LocalProcessCluster,
                                               page: webdriver.Chrome) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    bootstrap = ",".join(cluster.kafka_bootstrap)
    admin = AdminClient({"bootstrap.servers": bootstrap})  # (kept: its futures need it)
    admin.create_topics([NewTopic("clicks", num_partitions=1, replication_factor=3)])["clicks"].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(10):
        producer.produce("clicks", value=b"c%d" % i, partition=0)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "readers",
                         "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition("clicks", 0, 4)], asynchronous=False)
    consumer.close()
    wait_until(lambda: [td.text for td in page.find_elements("css selector", "#consumers td")]
               == ["readers", "clicks", "0", "4", "6"], 10, "the consumer group's lag shown")
    cells = [td.text for td in page.find_elements("css selector", "#partitions td")]
    assert cells[:2] == ["clicks", "0"] and cells[4] == "10"


def test_fault_button_cuts_a_link(cluster: LocalProcessCluster, page: webdriver.Chrome) -> None:
    leader = cluster.wait_leader()
    a, b = (i for i in cluster.ids if i != leader)  # two followers: the leader keeps its quorum
    page.find_element("css selector", f'#fault-a option[value="{a}"]').click()
    wait_until(lambda: page.find_elements("css selector", f'#fault-b option[value="{b}"]'), 5,
               "the peer list follows the chosen node")
    page.find_element("css selector", f'#fault-b option[value="{b}"]').click()
    page.find_element("id", "cut-link").click()
    line = f'#links line[data-link="{min(a, b)}-{max(a, b)}"]'
    wait_until(lambda: "cut" in str(page.find_element("css selector", line).get_attribute("class")),
               5, f"the link n{a}-n{b} drawn cut")
    plan = cluster.faults(a)
    assert b in plan["block_to"] and b in plan["block_from"]  # the node itself was told
    page.find_element("id", "heal-link").click()
    wait_until(lambda: "cut" not in str(page.find_element("css selector", line).get_attribute("class")),
               5, f"the link n{a}-n{b} drawn whole again")
    assert cluster.faults(a)["block_to"] == []
    wait_until(lambda: "fault" in text(page, "#events"), 5, "the fault listed among the events")


def test_process_buttons_pause_and_resume(cluster: LocalProcessCluster,
                                          page: webdriver.Chrome) -> None:
    node = next(i for i in cluster.ids if i != cluster.wait_leader())
    card = f'.card[data-node="{node}"]'
    page.find_element("css selector", f'#proc-node option[value="{node}"]').click()
    page.find_element("css selector", '#process-row button[data-op="pause"]').click()
    wait_until(lambda: "is-down" in str(page.find_element("css selector", card)
                                          .get_attribute("class")), 5, f"paused n{node} shown down")
    assert "no answer within" in text(page, card + " .err")  # not refused: frozen
    assert cluster.status(node, timeout=0.3) is None
    page.find_element("css selector", '#process-row button[data-op="resume"]').click()
    wait_until(lambda: "is-down" not in str(page.find_element("css selector", card)
                                              .get_attribute("class")), 5, f"n{node} back")
    assert "paused" in text(page, "#fault-msg") or "resumed" in text(page, "#fault-msg")


def test_leader_kill_shows_within_2s(cluster: LocalProcessCluster, page: webdriver.Chrome) -> None:
    leader = cluster.wait_leader()
    wait_until(lambda: text(page, "#leader") == f"n{leader}", 10, "the page names the leader")
    cluster.kill(leader)
    killed = time.monotonic()
    card = f'.card[data-node="{leader}"]'
    wait_until(lambda: "is-down" in str(page.find_element("css selector", card).get_attribute("class")),
               2, f"n{leader} shown down")
    assert text(page, card + " .state") == "DOWN"
    new = wait_until(lambda: text(page, "#leader") not in ("", f"n{leader}", "none")
                     and text(page, "#leader"), max(0.1, 2 - (time.monotonic() - killed)),
                     "a new leader shown within 2 s of the kill")
    assert new in {f"n{i}" for i in cluster.ids if i != leader}
    circle = page.find_element("css selector", f'#links circle[data-node="{leader}"]')
    assert circle.get_attribute("class") == "down"
    wait_until(lambda: "down" in text(page, "#events"), 2, "the kill listed among the events")
    restart(cluster, leader)


def restart(cluster: LocalProcessCluster, node: int) -> None:
    """Bring a killed node back, so the tests stand alone whatever order they run in."""
    cluster.start_node(node)
    cluster.wait_serving(node)
    cluster.wait_leader()


def test_a_node_page_says_when_its_node_dies(cluster: LocalProcessCluster,
                                             page: webdriver.Chrome) -> None:
    node = cluster.wait_leader()
    home = page.current_window_handle
    page.switch_to.new_window("tab")
    try:
        page.get(f"http://{cluster.http_endpoints[node - 1]}/dashboard")
        enter_token(page, cluster.admin_token)
        wait_until(lambda: text(page, f'.card[data-node="{node}"] .state') == "leader", 10,
                   f"n{node}'s own page")
        cluster.kill(node)
        wait_until(lambda: page.find_element("id", "banner").is_displayed(), 5,
                   "the page says its server does not answer")
        assert "does not answer" in text(page, "#banner")
        assert page.find_element("id", "conn").get_attribute("data-state") in ("lost", "connecting")
    finally:
        page.close()
        page.switch_to.window(home)
    restart(cluster, node)
