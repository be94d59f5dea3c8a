"""Kubernetes manifests and a Containerfile for an application's deploy configuration: the same
process groups `shoal app deploy` runs on one machine, as Deployments in a cluster, beside the
Shoal nodes that hold their registry.

    shoal app manifests examples.shop:App --config deploy.toml --out k8s/

writes, for an app named `shop` (the Application's name, or `--name`):

    shoal-nodes.yaml    Service `shop-shoal` (headless, publishes not-ready pods so that peers
                        find each other before there is a leader) and StatefulSet `shop-shoal`:
                        `nodes` Shoal nodes, node i+1 in pod `shop-shoal-i`, its WAL and
                        snapshots on a PersistentVolumeClaim from a volumeClaimTemplate;
                        a PodDisruptionBudget that lets a drain take only a minority of them
    config.yaml         ConfigMap `shop-deploy` with deploy.toml, its [cluster] endpoints
                        rewritten to the StatefulSet's pods
    group-NAME.yaml     per process group, Deployment `shop-NAME` (the group's replicas) and
                        Service `shop-NAME` over its RPC, HTTP and (when a component in it has
                        `grpc = true`) gRPC ports
    Containerfile       the image: the application's project installed with pip; `shoal` its
                        entrypoint

Every pod has resource requests and a memory limit, liveness and readiness probes on /health
of its HTTP port (a node's liveness only asks that its client port answer: its /health fails
while there is no leader, and restarting it then would not help), runs as a non-root user, and carries a checksum of the deploy file, so that a
change to the ConfigMap rolls the Deployments. A group's pod runs `GROUP_COMMAND`, one process
of that group (shoal.app.process) on fixed ports, which registers its components under the
pod's name and IP with a lease.

Pure: `render(...)` returns {file name: text}; the CLI writes them. YAML is written by a small
emitter here (block style, every string double-quoted, multi-line strings as literal blocks), so
the runtime needs no YAML library; tests/test_app_manifests.py reads it back with PyYAML and
validates each manifest against Kubernetes's schemas."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection
from dataclasses import dataclass, fields
from typing import Any

from .config import DeployConfig

NODE_PEER_PORT = 7001
NODE_CLIENT_PORT = 2379
HTTP_PORT = 8080  # /health and /metrics, on nodes and group processes alike
RPC_PORT = 7070
GRPC_PORT = 50051
CONFIG_DIR = "/etc/shoal"
DATA_DIR = "/var/lib/shoal"
USER_ID = 10001
PYTHON_IMAGE = "python:3.11-slim"
WORK_DIR = "/var/lib/shoal-app"  # the process's --root (traces, scratch), an emptyDir
# One process of a group (shoal.app.process). The pod, not a counter, names the instance; the
# ports are fixed, since a Service must name them; the pod's IP is what the registry gets.
GROUP_COMMAND = (
    "python", "-m", "shoal.app.process", "--app", "{main}", "--config",
    CONFIG_DIR + "/deploy.toml", "--group", "{group}", "--endpoints", "$(SHOAL_ENDPOINTS)",
    "--root", WORK_DIR, "--host", "0.0.0.0", "--advertise", "$(POD_IP)",
    "--instance", "$(POD_NAME)", "--rpc-port", str(RPC_PORT), "--http-port", str(HTTP_PORT),
    "--grpc-port", str(GRPC_PORT),
)  # fmt: skip
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class ManifestError(ValueError):
    """The configuration cannot become manifests; the message names what is wrong."""


@dataclass(frozen=True)
class Resources:
    cpu: str
    memory: str
    memory_limit: str

    def spec(self) -> dict[str, Any]:
        return {"requests": {"cpu": self.cpu, "memory": self.memory},
                "limits": {"memory": self.memory_limit}}


GROUP_RESOURCES = Resources("100m", "128Mi", "512Mi")
NODE_RESOURCES = Resources("250m", "256Mi", "1Gi")


def render(
    config: DeployConfig,
    main: str,
    *,
    name: str | None = None,
    components: Collection[str] | None = None,
    nodes: int = 3,
    node_storage: str = "1Gi",
) -> dict[str, str]:
    """The manifests and Containerfile for `main` (module:App) deployed as `config` says;
    `components`, the application's, are checked against the groups when given."""
    app = name or main.partition(":")[0].rpartition(".")[2].lower().replace("_", "-")
    _check_name(app, "the app's name (give --name)", longest=50)
    if not config.groups:
        raise ManifestError("the deploy config has no [groups.NAME]: nothing to deploy")
    if components is not None:
        _check_components(config, components)
    for group in config.groups:
        _check_name(group, f"groups.{group}", longest=62 - len(app))
    if not 1 <= nodes <= 9 or nodes % 2 == 0:
        raise ManifestError(f"nodes: expected an odd number of Shoal nodes in 1..9, got {nodes}")
    nodes_name = f"{app}-shoal"
    endpoints = [f"{nodes_name}-{i}.{nodes_name}:{NODE_CLIENT_PORT}" for i in range(nodes)]
    deploy = deploy_toml(config, main, endpoints)
    checksum = hashlib.sha256(deploy.encode()).hexdigest()
    files = {
        "config.yaml": to_yaml([_config_map(app, deploy)]),
        "shoal-nodes.yaml": to_yaml(_nodes(app, nodes_name, nodes, config.image, node_storage)),
    }
    for group in config.groups:
        files[f"group-{group}.yaml"] = to_yaml(_group(app, group, config, main, endpoints,
                                                      checksum))
    files["Containerfile"] = containerfile(app)
    return files


def _check_components(config: DeployConfig, components: Collection[str]) -> None:
    """Every group's components exist, and every component runs somewhere."""
    for group, spec in config.groups.items():
        for c in spec.components:
            if c not in components:
                raise ManifestError(f"groups.{group}.components: {c!r} is not a component of "
                                    f"the application (it has {', '.join(sorted(components))})")
    placed = {c for spec in config.groups.values() for c in spec.components}
    for c in components:
        if c not in placed:
            raise ManifestError(f"component {c!r} is in no [groups.NAME]: it would run nowhere")


def _check_name(value: str, what: str, longest: int) -> None:
    if not _DNS_LABEL.match(value) or len(value) > longest:
        raise ManifestError(
            f"{what}: {value!r} is not a Kubernetes name (lowercase letters, digits and '-', "
            f"at most {longest} characters)")


def _labels(app: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": app, "app.kubernetes.io/component": component}


def _metadata(name: str, app: str, component: str) -> dict[str, Any]:
    return {"name": name, "labels": _labels(app, component)
            | {"app.kubernetes.io/part-of": app, "app.kubernetes.io/managed-by": "shoal"}}


def _config_map(app: str, deploy: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _metadata(f"{app}-deploy", app, "config"),
            "data": {"deploy.toml": deploy}}


def _probes(port: str, live_tcp: str | None = None) -> dict[str, Any]:
    """Readiness on /health; liveness too, or (`live_tcp`) on the port merely answering."""
    def probe(check: dict[str, Any], period_s: int, failures: int) -> dict[str, Any]:
        return check | {"periodSeconds": period_s, "failureThreshold": failures,
                        "timeoutSeconds": 2}

    health = {"httpGet": {"path": "/health", "port": port}}
    live = {"tcpSocket": {"port": live_tcp}} if live_tcp else health
    # Liveness is patient (a restart loses the process's work); readiness reacts fast.
    return {"livenessProbe": probe(live, 10, 6) | {"initialDelaySeconds": 10},
            "readinessProbe": probe(health, 3, 2)}


def _pod_security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": USER_ID, "runAsGroup": USER_ID,
            "fsGroup": USER_ID}


def _nodes(app: str, name: str, nodes: int, image: str, storage: str) -> list[dict[str, Any]]:
    labels = _labels(app, "shoal-node")
    members = ",".join(
        f"{i + 1}={name}-{i}.{name}:{NODE_PEER_PORT}/{name}-{i}.{name}:{NODE_CLIENT_PORT}"
        for i in range(nodes))
    # The pod's ordinal, from its name (NAME-ORDINAL), is the member id less one.
    command = (f'exec shoal node --id "$(( ${{HOSTNAME##*-}} + 1 ))" --members "{members}" '
               f'--data-dir {DATA_DIR}/data --http 0.0.0.0:{HTTP_PORT} --cluster-id {app}')
    ports = [("peer", NODE_PEER_PORT), ("client", NODE_CLIENT_PORT), ("http", HTTP_PORT)]
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _metadata(name, app, "shoal-node"),
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": labels,
                 "ports": [{"name": n, "port": p, "targetPort": n} for n, p in ports]},
    }
    container = {
        "name": "shoal", "image": image, "command": ["/bin/sh", "-c", command],
        "ports": [{"name": n, "containerPort": p} for n, p in ports],
        "resources": NODE_RESOURCES.spec(),
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}],
    } | _probes("http", live_tcp="client")
    stateful_set = {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": _metadata(name, app, "shoal-node"),
        "spec": {
            "serviceName": name, "replicas": nodes,
            "podManagementPolicy": "Parallel",  # a quorum needs its peers up at once
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                         "spec": {"securityContext": _pod_security(),
                                  "terminationGracePeriodSeconds": 30,
                                  "containers": [container]}},
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": storage}}},
            }],
        },
    }
    # A drain or an upgrade takes down at most the nodes whose loss keeps a majority.
    budget = {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": _metadata(name, app, "shoal-node"),
        "spec": {"maxUnavailable": (nodes - 1) // 2 or 1, "selector": {"matchLabels": labels}},
    }
    return [service, stateful_set, budget]


def _group(app: str, group: str, config: DeployConfig, main: str, endpoints: list[str],
           checksum: str) -> list[dict[str, Any]]:
    name = f"{app}-{group}"
    labels = _labels(app, group)
    spec = config.groups[group]
    grpc = any(config.component(c).grpc for c in spec.components)
    ports = [("rpc", RPC_PORT), ("http", HTTP_PORT)] + ([("grpc", GRPC_PORT)] if grpc else [])
    command = [part.format(main=main, group=group) for part in GROUP_COMMAND]
    if not grpc:
        command = command[:-2]  # no --grpc-port: nothing in this group is served over gRPC
    container = {
        "name": group, "image": config.image, "command": command,
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "SHOAL_ENDPOINTS", "value": ",".join(endpoints)},
            {"name": "SHOAL_TRACES", "value": "console"},  # spans beside the logs, for the
        ],                                                  # cluster's log collector
        "ports": [{"name": n, "containerPort": p} for n, p in ports],
        "resources": GROUP_RESOURCES.spec(),
        "volumeMounts": [{"name": "deploy", "mountPath": CONFIG_DIR, "readOnly": True},
                         {"name": "work", "mountPath": WORK_DIR}],
    } | _probes("http")
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _metadata(name, app, group),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels,
                             "annotations": {"shoal.dev/deploy-sha256": checksum,
                                             "shoal.dev/components": ",".join(spec.components)}},
                "spec": {"securityContext": _pod_security(), "containers": [container],
                         "volumes": [{"name": "deploy",
                                      "configMap": {"name": f"{app}-deploy"}},
                                     {"name": "work", "emptyDir": {"sizeLimit": "256Mi"}}]},
            },
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _metadata(name, app, group),
        "spec": {"selector": labels,
                 "ports": [{"name": n, "port": p, "targetPort": n} for n, p in ports]},
    }
    return [deployment, service]


def containerfile(app: str) -> str:
    return f"""\
# Written by `shoal app manifests` for {app}. Build it from the application's project root
# (where its pyproject.toml, which depends on shoal, lives):
#   podman build -t IMAGE -f Containerfile .     (or docker build)
FROM {PYTHON_IMAGE}
WORKDIR /srv/app
COPY . .
RUN pip install --no-cache-dir . && useradd --uid {USER_ID} --user-group --no-create-home shoal
USER {USER_ID}:{USER_ID}
EXPOSE {RPC_PORT} {HTTP_PORT} {GRPC_PORT} {NODE_PEER_PORT} {NODE_CLIENT_PORT}
ENTRYPOINT []
CMD ["shoal", "--help"]
"""


def deploy_toml(config: DeployConfig, main: str, endpoints: list[str]) -> str:
    """`config` as deploy.toml, for `main` and reaching the cluster at `endpoints`."""
    out = ["# Written by `shoal app manifests`.", "[app]", f"main = {_toml(main)}", "",
           "[cluster]", f"endpoints = {_toml(endpoints)}"]
    for name, group in config.groups.items():
        out += ["", f"[groups.{_toml_key(name)}]", f"components = {_toml(list(group.components))}",
                f"replicas = {group.replicas}"]
    for name, component in config.components.items():
        out += ["", f"[components.{_toml_key(name)}]"]
        out += [f"{f.name} = {_toml(getattr(component, f.name))}" for f in fields(component)
                if getattr(component, f.name) is not None]
    out += ["", "[images]", f"app = {_toml(config.image)}"]
    return "\n".join(out) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    assert isinstance(value, list), value
    return "[" + ", ".join(_toml(v) for v in value) + "]"


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def to_yaml(documents: list[dict[str, Any]]) -> str:
    """Documents as YAML, one after another, each opened by `---`."""
    return "".join("---\n" + "\n".join(_yaml(doc, 0)) + "\n" for doc in documents)


def _yaml(value: Any, indent: int) -> list[str]:
    """The lines of a mapping or a sequence, at `indent`."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, v in value.items():
            head = f"{pad}{_scalar(str(key))}:"
            if isinstance(v, dict | list) and v:
                lines.append(head)
                lines += _yaml(v, indent + 2)
            else:
                lines += _inline(head, v, indent + 2)
        return lines
    for item in value:
        if isinstance(item, dict | list) and item:
            nested = _yaml(item, indent + 2)
            lines.append(f"{pad}- {nested[0].lstrip()}")
            lines += nested[1:]
        else:
            lines += _inline(f"{pad}-", item, indent + 2)
    return lines


def _inline(head: str, value: Any, indent: int) -> list[str]:
    # A literal block reads as the text itself; the rare string it cannot carry exactly
    # (leading blanks, several trailing newlines) stays a quoted scalar.
    if isinstance(value, str) and "\n" in value and not value.startswith((" ", "\n")) \
            and not value.endswith("\n\n"):
        chomp = "" if value.endswith("\n") else "-"
        body = [(" " * indent + line) if line else "" for line in value.rstrip("\n").split("\n")]
        return [f"{head} |{chomp}", *body]
    return [f"{head} {_scalar(value)}"]


def _scalar(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_./-]*", value) \
            and value.lower() not in ("true", "false", "yes", "no", "on", "off", "null", "y", "n"):
        return value  # a plain key or word: easier to read, and YAML reads it as written
    return json.dumps(value)  # JSON's strings, numbers and booleans are YAML's too
