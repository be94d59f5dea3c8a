"""docs/client.md is followed as written: every ```python block in it runs, as its own program
(a subprocess), against a real three-node cluster whose client ports it reads from
SHOAL_ENDPOINTS. A block preceded by `<!-- doc-test: auth ... -->` runs with auth on (the user
the guide creates); one preceded by `<!-- doc-test: tls ... -->` runs against a node serving
TLS, with SHOAL_CERTS naming a directory laid out as `shoal certs` writes it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from etcd_cluster import BackgroundCluster
from shoal.etcdapi.pb import rpc_pb2, rpc_pb2_grpc
from shoal.net.pki import Authority

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "client.md"
BLOCK = re.compile(r"(?:<!-- doc-test: (\w+)[^>]*-->\n)?```python\n(.*?)^```", re.S | re.M)
BLOCKS = [(m.group(1) or "", m.group(2)) for m in BLOCK.finditer(GUIDE.read_text())]


def heading_of(code: str) -> str:
    text = GUIDE.read_text()
    before = text[:text.index(code)]
    return re.findall(r"^## (.+)$", before, re.M)[-1].lower().replace(" ", "-")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = BackgroundCluster(tmp_path_factory.mktemp("docs"), fsync=False)
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory):
    certs = tmp_path_factory.mktemp("certs")
    ca = Authority.create("docs CA")
    ca.pem.write(certs / "ca.crt", certs / "ca.key")
    ca.node(1).write(certs / "node-1.crt", certs / "node-1.key")
    ca.client("alice").write(certs / "client-alice.crt", certs / "client-alice.key")
    c = BackgroundCluster(tmp_path_factory.mktemp("tls"), n=1, fsync=False,
                          tls_cert=certs / "node-1.crt", tls_key=certs / "node-1.key",
                          tls_ca=certs / "ca.crt")
    c.start()
    yield c, certs
    c.stop()


def run_example(code: str, endpoints: list[str], tmp_path: Path, **env: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=90,
                          env={**os.environ, "SHOAL_ENDPOINTS": ",".join(endpoints), **env})
    assert done.returncode == 0, f"the example failed:\n{code}\n--- stderr:\n{done.stderr}"
    return done.stdout


def test_the_guide_has_an_example_for_each_topic():
    topics = {heading_of(code) for _, code in BLOCKS}
    assert {"connecting", "put,-get,-delete", "a-counter-with-compare-and-set", "transactions",
            "leases", "watching-for-changes", "a-lock", "an-election", "auth", "tls",
            "errors-and-timeouts"} <= topics
    assert {needs for needs, _ in BLOCKS} <= {"", "auth", "tls"}


@pytest.mark.parametrize("needs,code", BLOCKS, ids=[f"{i}-{heading_of(c)}"
                                                     for i, (_, c) in enumerate(BLOCKS)])
def test_example(needs, code, cluster, request, tmp_path):
    if needs == "tls":
        node, certs = request.getfixturevalue("tls_node")
        out = run_example(code, [f"{m.client[0]}:{m.client[1]}" for m in node.members], tmp_path,
                          SHOAL_CERTS=str(certs))
        assert "b'yes'" in out
        return
    endpoints = [f"{m.client[0]}:{m.client[1]}" for m in cluster.members]
    if needs != "auth":
        run_example(code, endpoints, tmp_path)
        return
    with grpc.insecure_channel(cluster.endpoints[0]) as ch:  # the guide's etcdctl commands
        auth = rpc_pb2_grpc.AuthStub(ch)
        auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="root", password="root-secret"))
        auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"))
        auth.AuthEnable(rpc_pb2.AuthEnableRequest())
        try:
            out = run_example(code, endpoints, tmp_path)
        finally:
            token = auth.Authenticate(rpc_pb2.AuthenticateRequest(
                name="root", password="root-secret")).token
            auth.AuthDisable(rpc_pb2.AuthDisableRequest(), metadata=[("token", token)])
            auth.UserDelete(rpc_pb2.AuthUserDeleteRequest(name="root"))
    assert "b'strict'" in out and "refused: etcdserver: user name is empty" in out
