"""The deploy file: the contract's example parses; every bad key or value is a ConfigError
naming it."""

from __future__ import annotations

import pytest

from shoal.app.config import ConfigError, load_deploy, parse_deploy

EXAMPLE = """
[app]
main = "examples.shop:App"
[cluster]
endpoints = ["127.0.0.1:2379"]
[groups.front]
components = ["Frontend"]
replicas = 2
[groups.back]
components = ["Orders", "Inventory"]
replicas = 2
[components.Inventory]
picker = "p2c"
strategy = "failover"
retries = 2
grpc = true
[images]
app = "shoal-app:latest"
"""


def test_the_example_parses(tmp_path):
    path = tmp_path / "deploy.toml"
    path.write_text(EXAMPLE)
    cfg = load_deploy(path)
    assert cfg.main == "examples.shop:App" and cfg.endpoints == ("127.0.0.1:2379",)
    assert cfg.groups["back"].components == ("Orders", "Inventory")
    assert cfg.groups["back"].replicas == 2
    inv = cfg.component("Inventory")
    assert (inv.picker, inv.strategy, inv.retries, inv.grpc) == ("least-request", "failover",
                                                                 2, True)
    assert cfg.component("Orders").strategy == "failover"  # defaults for the unlisted
    assert cfg.group_of("Inventory") == "back" and cfg.image == "shoal-app:latest"


@pytest.mark.parametrize(("data", "named"), [
    ({"app": {"mian": "x:y"}}, "unknown key 'mian'"),
    ({"groups": {"g": {"components": []}}}, "groups.g.components"),
    ({"groups": {"g": {"components": ["A"], "replicas": 0}}}, "groups.g.replicas"),
    ({"groups": {"g": {"components": ["A"]}, "h": {"components": ["A"]}}}, "also in group"),
    ({"components": {"A": {"picker": "fastest"}}}, "components.A.picker: unknown picker"),
    ({"components": {"A": {"strategy": "retry"}}}, "components.A.strategy"),
    ({"components": {"A": {"retries": -1}}}, "components.A.retries"),
    ({"components": {"A": {"grpc": "yes"}}}, "components.A.grpc"),
    ({"cluster": {"endpoints": "h:1"}}, "cluster.endpoints"),
    ({"images": {"app": ""}}, "images.app"),
])
def test_bad_values_are_refused_naming_the_key(data, named):
    with pytest.raises(ConfigError, match=named):
        parse_deploy(data)


def test_a_file_that_is_not_toml_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[groups\n")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_deploy(path)
