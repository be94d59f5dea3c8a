"""shoal.app.manifests: Kubernetes manifests from a deploy file, each validated against the
Kubernetes schemas (kubernetes-validate's bundled ones, offline), and their cross references
checked: selectors, ports, the ConfigMap, the nodes' addresses."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import typer
import yaml
from typer.testing import CliRunner

from shoal.app.config import parse_deploy
from shoal.app.manifests import (
    GRPC_PORT,
    NODE_CLIENT_PORT,
    ManifestError,
    deploy_toml,
    render,
    to_yaml,
)
from shoal.cli.app_export import register

KUBERNETES = ("1.30.0", "1.37.0")  # an older supported release and the newest bundled
DEPLOY = """
[app]
main = "examples.shop:App"
[cluster]
endpoints = ["127.0.0.1:2379"]
[groups.front]
components = ["Frontend"]
replicas = 2
[groups.back]
components = ["Orders", "Inventory"]
replicas = 3
[components.Inventory]
picker = "p2c"
strategy = "failover"
retries = 2
grpc = true
deadline_ms = 250
[images]
app = "registry.example/shop:1.2"
"""


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    return render(parse_deploy(tomllib.loads(DEPLOY)), "examples.shop:App")


@pytest.fixture(scope="module")
def docs(files: dict[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> manifest, read back with PyYAML."""
    out = {}
    for name, text in files.items():
        if name.endswith(".yaml"):
            for doc in yaml.safe_load_all(text):
                out[doc["kind"], doc["metadata"]["name"]] = doc
    return out


def test_writes_the_expected_files_and_resources(files: dict, docs: dict) -> None:
    assert set(files) == {"config.yaml", "shoal-nodes.yaml", "group-front.yaml",
                          "group-back.yaml", "Containerfile"}
    assert set(docs) == {
        ("ConfigMap", "shop-deploy"), ("Service", "shop-shoal"), ("StatefulSet", "shop-shoal"),
        ("PodDisruptionBudget", "shop-shoal"),
        ("Deployment", "shop-front"), ("Service", "shop-front"),
        ("Deployment", "shop-back"), ("Service", "shop-back"),
    }


@pytest.mark.parametrize("version", KUBERNETES)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(docs: dict, version: str) -> None:
    for doc in docs.values():
        kubernetes_validate.validate(doc, version, strict=True)  # raises on any schema error


def test_validation_needs_no_network(docs: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The schemas come with kubernetes-validate: no connection is even tried."""
    import socket

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("kubernetes-validate tried the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    # A version no other test loads, so its schemas are read here and now.
    kubernetes_validate.validate(docs["StatefulSet", "shop-shoal"], "1.33.0", strict=True)


def test_the_validator_catches_a_planted_mistake(docs: dict) -> None:
    bad = copy.deepcopy(docs["Deployment", "shop-front"])
    bad["spec"]["replica"] = bad["spec"].pop("replicas")  # a typo strict mode must refuse
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES[-1], strict=True)
    worse = copy.deepcopy(docs["Service", "shop-front"])
    worse["spec"]["ports"][0]["port"] = "rpc"  # a name where a number belongs
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worse, KUBERNETES[-1], strict=True)


def _pod(workload: dict) -> tuple[dict, dict]:
    template = workload["spec"]["template"]
    (container,) = template["spec"]["containers"]
    return template, container


def _container_ports(container: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


@pytest.mark.parametrize(("workload", "service"), [
    (("StatefulSet", "shop-shoal"), ("Service", "shop-shoal")),
    (("Deployment", "shop-front"), ("Service", "shop-front")),
    (("Deployment", "shop-back"), ("Service", "shop-back")),
])
def test_services_select_their_pods_and_reach_ports_that_exist(
    docs: dict, workload: tuple[str, str], service: tuple[str, str]
) -> None:
    w, s = docs[workload], docs[service]
    template, container = _pod(w)
    labels = template["metadata"]["labels"]
    assert w["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert s["spec"]["selector"].items() <= labels.items()
    ports = _container_ports(container)
    for port in s["spec"]["ports"]:
        assert ports[port["targetPort"]] == port["port"]
    for probe in ("livenessProbe", "readinessProbe"):
        check = container[probe].get("httpGet") or container[probe]["tcpSocket"]
        assert check["port"] in ports
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["resources"]["requests"].keys() == {"cpu", "memory"}
    # No other workload's pods carry these labels: a Service selects only its own.
    for (kind, name), other in docs.items():
        if kind in ("Deployment", "StatefulSet") and (kind, name) != workload:
            assert not s["spec"]["selector"].items() <= _pod(other)[0]["metadata"]["labels"].items()


def test_groups_run_their_replicas_with_health_probes_and_the_config_mounted(docs: dict) -> None:
    for group, replicas in (("front", 2), ("back", 3)):
        deployment = docs["Deployment", f"shop-{group}"]
        assert deployment["spec"]["replicas"] == replicas
        template, container = _pod(deployment)
        assert container["image"] == "registry.example/shop:1.2"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        volume, work = template["spec"]["volumes"]
        assert ("ConfigMap", volume["configMap"]["name"]) in docs
        mount, work_mount = container["volumeMounts"]
        assert mount["name"] == volume["name"] and work_mount["name"] == work["name"]
        assert container["command"][container["command"].index("--root") + 1] == \
            work_mount["mountPath"]
        config_path = container["command"][container["command"].index("--config") + 1]
        assert config_path == f"{mount['mountPath']}/deploy.toml"
        assert container["command"][container["command"].index("--group") + 1] == group
    # Only the group holding a component with grpc = true opens the gRPC port.
    assert _container_ports(_pod(docs["Deployment", "shop-back"])[1])["grpc"] == GRPC_PORT
    assert "grpc" not in _container_ports(_pod(docs["Deployment", "shop-front"])[1])
    assert "--grpc-port" not in _pod(docs["Deployment", "shop-front"])[1]["command"]
    # What the command refers to, $(VAR), the pod's environment defines.
    for group in ("front", "back"):
        _, container = _pod(docs["Deployment", f"shop-{group}"])
        defined = {e["name"] for e in container["env"]}
        used = {part[2:-1] for part in container["command"] if part.startswith("$(")}
        assert used and used <= defined


def test_the_config_map_points_the_app_at_the_statefulset(docs: dict) -> None:
    deploy = parse_deploy(tomllib.loads(docs["ConfigMap", "shop-deploy"]["data"]["deploy.toml"]))
    original = parse_deploy(tomllib.loads(DEPLOY))
    assert deploy.groups == original.groups and deploy.components == original.components
    assert deploy.image == original.image and deploy.main == "examples.shop:App"
    nodes = docs["StatefulSet", "shop-shoal"]
    service = nodes["spec"]["serviceName"]
    assert ("Service", service) in docs
    assert docs["Service", service]["spec"]["clusterIP"] == "None"
    pods = [f"{nodes['metadata']['name']}-{i}.{service}:{NODE_CLIENT_PORT}"
            for i in range(nodes["spec"]["replicas"])]
    assert list(deploy.endpoints) == pods
    env = {e["name"]: e for e in _pod(docs["Deployment", "shop-front"])[1]["env"]}
    assert env["SHOAL_ENDPOINTS"]["value"] == ",".join(pods)
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


def test_nodes_keep_their_data_on_a_claim_from_the_template(docs: dict) -> None:
    nodes = docs["StatefulSet", "shop-shoal"]
    (claim,) = nodes["spec"]["volumeClaimTemplates"]
    _, container = _pod(nodes)
    (mount,) = container["volumeMounts"]
    assert mount["name"] == claim["metadata"]["name"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    script = container["command"][-1]
    assert f"--data-dir {mount['mountPath']}/data" in script
    assert "1=shop-shoal-0.shop-shoal:7001/shop-shoal-0.shop-shoal:2379" in script
    assert "3=shop-shoal-2.shop-shoal:7001" in script
    assert nodes["spec"]["podManagementPolicy"] == "Parallel"
    budget = docs["PodDisruptionBudget", "shop-shoal"]
    assert budget["spec"]["selector"] == nodes["spec"]["selector"]
    assert budget["spec"]["maxUnavailable"] == 1  # of 3: the other two keep the majority


def test_containerfile_installs_the_project_and_runs_unprivileged(files: dict) -> None:
    text = files["Containerfile"]
    assert text.splitlines()[3].startswith("FROM python:3.11")
    assert "RUN pip install --no-cache-dir ." in text and "USER 10001:10001" in text


def test_bad_names_and_empty_configs_are_refused() -> None:
    config = parse_deploy(tomllib.loads(DEPLOY))
    with pytest.raises(ManifestError, match=r"the app's name \(give --name\): 'My_Shop!'"):
        render(config, "examples.shop:App", name="My_Shop!")
    with pytest.raises(ManifestError, match=r"groups\.Front: 'Front' is not a Kubernetes name"):
        render(parse_deploy({"groups": {"Front": {"components": ["A"]}}}), "m:App")
    with pytest.raises(ManifestError, match=r"no \[groups\.NAME\]"):
        render(parse_deploy({}), "m:App")
    with pytest.raises(ManifestError, match="odd number of Shoal nodes"):
        render(config, "m:App", nodes=4)


def test_yaml_emitter_round_trips_awkward_strings() -> None:
    doc = {"a": "yes", "b": "1.0", "c": "x: y # z", "d": "line\n  indented\n", "e": "",
           "f": [], "g": {}, "h": [{"k": [1, True, None]}], "i": "  lead\n", "j": "two\n\n",
           "k": "no-newline\nend", "l": 3.5}
    assert yaml.safe_load(to_yaml([doc])) == doc


def test_deploy_toml_round_trips_a_config() -> None:
    config = parse_deploy(tomllib.loads(DEPLOY))
    again = parse_deploy(tomllib.loads(deploy_toml(config, "m:App", ["h:1"])))
    assert again.groups == config.groups and again.components == config.components
    assert again.endpoints == ("h:1",) and again.main == "m:App"


def test_groups_are_checked_against_the_applications_components() -> None:
    config = parse_deploy(tomllib.loads(DEPLOY))
    render(config, "m:App", components={"Frontend", "Orders", "Inventory"})
    with pytest.raises(ManifestError, match=r"groups\.back\.components: 'Orders' is not a "
                                            r"component of the application"):
        render(config, "m:App", components={"Frontend", "Inventory"})
    with pytest.raises(ManifestError, match="component 'Payments' is in no"):
        render(config, "m:App", components={"Frontend", "Orders", "Inventory", "Payments"})


def test_shoal_app_manifests_writes_the_files(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1]))  # the sample, examples/shop.py
    (tmp_path / "deploy.toml").write_text(DEPLOY)
    app = typer.Typer()
    app.callback()(lambda: None)  # a group, as `shoal app` is
    register(app)
    out = tmp_path / "k8s"
    result = CliRunner().invoke(app, ["manifests", "examples.shop:App", "--config",
                                      str(tmp_path / "deploy.toml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "Containerfile", "config.yaml", "group-back.yaml", "group-front.yaml",
        "shoal-nodes.yaml"]
    assert "name: shop-front" in (out / "group-front.yaml").read_text()  # the App's name
    (tmp_path / "bad.toml").write_text("[groups.front]\nreplicas = 2\n")
    bad = CliRunner().invoke(app, ["manifests", "examples.shop:App", "--config",
                                   str(tmp_path / "bad.toml"), "--out", str(out)])
    assert bad.exit_code == 1 and "groups.front.components" in bad.output
    (tmp_path / "partial.toml").write_text("[groups.front]\ncomponents = ['Frontend']\n")
    partial = CliRunner().invoke(app, ["manifests", "examples.shop:App", "--config",
                                       str(tmp_path / "partial.toml"), "--out", str(out)])
    assert partial.exit_code == 1 and "is in no [groups.NAME]" in partial.output
    no_app = CliRunner().invoke(app, ["manifests", "examples.nope:App", "--config",
                                      str(tmp_path / "deploy.toml"), "--out", str(out)])
    assert no_app.exit_code == 1 and "cannot import examples.nope" in no_app.output
