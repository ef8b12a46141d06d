from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from lab import config
from lab.errors import ConfigError
from tests.unit.topologies import single_prod

GOOD: dict[str, Any] = json.loads(config.TOPOLOGY.read_text())
ROOT, STATE = Path("/p"), Path("/p/.lab")


def parse(doc: dict[str, Any]) -> config.LabConfig:
    return config.parse_topology(doc, ROOT, STATE)


def test_shipped_topology_has_the_four_hosts_of_the_source_material_and_prods_workers() -> None:
    cfg = parse(GOOD)
    assert {h.name: h.address for h in cfg.hosts} == {
        "registry": "10.100.200.200",
        "prod": "10.100.200.201",
        "cd": "10.100.200.202",
        "dev": "10.100.200.203",
        "prod-2": "10.100.200.204",
        "prod-3": "10.100.200.205",
    }
    assert cfg.registry_addr == "10.100.200.200:5000"
    assert [h.name for h in cfg.engine_hosts] == ["prod", "cd", "dev", "prod-2", "prod-3"]
    assert [h.name for h in cfg.hosts if h.project_mount] == ["cd", "dev"]
    assert cfg.builder.name == "cd"
    assert cfg.container_name(cfg.host("prod")) == "cdlab-prod"
    assert cfg.swarm_manager is not None and cfg.swarm_manager.name == "prod"
    assert [h.name for h in cfg.swarm_workers] == ["prod-2", "prod-3"]
    assert all(not h.publish and not h.existing for h in cfg.swarm_workers)


def test_the_single_host_prod_of_the_source_material_is_still_a_valid_topology() -> None:
    cfg = parse(single_prod())
    assert [h.name for h in cfg.hosts] == ["registry", "prod", "cd", "dev"]
    assert cfg.swarm_manager is None and cfg.swarm_workers == ()
    assert cfg.host("prod").publish == tuple(GOOD["hosts"][1]["publish"])
    assert cfg.builder.name == "cd"


def _mutate(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(GOOD)
    target = doc
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target[key]
    last = keys[-1]
    if value is KeyError:
        del target[last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "field", "expected"),
    [
        ("name", "Bad Name", "name", "lowercase"),
        ("name", KeyError, "name", "missing"),
        ("network.subnet", "10.100.200.0/33", "network.subnet", "CIDR"),
        ("network.gateway", "10.1.1.1", "network.gateway", "inside"),
        ("hosts.1.address", "10.9.9.9", "hosts[1].address", "inside 10.100.200.0/24"),
        ("hosts.1.address", "banana", "hosts[1].address", "IP address"),
        ("hosts.1.address", "10.100.200.1", "hosts[1].address", "other than the gateway"),
        ("hosts.1.role", "web", "hosts[1].role", "registry or engine"),
        ("hosts.1.project_mount", "yes", "project_mount", "true or false"),
        ("hosts.3.name", "cd", "hosts[].name", "unique"),  # dev: prod as cd fails on its swarm
        ("hosts.2.address", "10.100.200.201", "hosts[].address", "unique"),
        ("hosts.0.role", "engine", "hosts[].role", "exactly one 'registry'"),
        ("registry_port", 70000, "registry_port", "1-65535"),
        ("engine_port", "2376", "engine_port", "port"),
        ("engine_port", True, "engine_port", "port"),
    ],
)
def test_bad_topology_names_the_field_and_the_expected_form(
    path: str, value: Any, field: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse(_mutate(path, value))
    assert err.value.field == field
    assert expected in str(err.value)


def test_unknown_host_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError, match="one of: registry, prod, cd, dev"):
        parse(GOOD).host("web")


def test_load_honours_state_dir_and_topology_overrides(tmp_path: Path) -> None:
    other = _mutate("name", "cdlabt")
    (tmp_path / "t.json").write_text(json.dumps(other))
    cfg = config.load(
        environ={"CDLAB_STATE_DIR": str(tmp_path / "s"), "CDLAB_TOPOLOGY": str(tmp_path / "t.json")}
    )
    assert cfg.name == "cdlabt"
    assert cfg.state_dir == tmp_path / "s"
    assert cfg.topology_file == tmp_path / "t.json"


def test_load_reports_a_missing_topology_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="an existing JSON file"):
        config.load(environ={"CDLAB_TOPOLOGY": str(tmp_path / "nope.json")})


def test_text_after_the_double_dash_reaches_pytest_split_as_a_shell_would() -> None:
    from lab import testing

    argv = testing.pytest_argv("unit", "2", "tests/unit -k 'judge and not slow' -x")
    assert argv[-6:] == ["-m", "unit", "tests/unit", "-k", "judge and not slow", "-x"]
    default = testing.pytest_argv()  # every suite but the named labs' (asked for by name)
    assert default[default.index("-m", 3) :][:2] == ["-m", "not multilab and not cluster"]
    with pytest.raises(ConfigError, match="invoke test -- ARGS"):
        testing.pytest_argv(extra="-k 'unclosed")
