"""A lab per student: named labs beside the default one, each with its own name, subnet, state
and workstation ports, derived from the default topology; ``lab.list`` reads them back from
the host containers' labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab import config, testing
from lab.errors import ConfigError
from lab.estate import lifecycle

DEFAULT = json.loads(config.TOPOLOGY.read_text())


def test_a_named_lab_gets_its_own_name_subnet_addresses_and_ports() -> None:
    alice = config.named_topology(DEFAULT, "alice", 1)
    assert alice["name"] == "cdlab-alice" and alice["network"]["name"] == "cdlab-alice"
    assert alice["network"]["subnet"] == "10.100.201.0/24"
    assert alice["network"]["gateway"] == "10.100.201.1"
    assert {h["name"]: h["address"] for h in alice["hosts"]}["prod"] == "10.100.201.201"
    (prod,) = [h for h in alice["hosts"] if h["name"] == "prod"]
    assert prod["publish"] == ["127.0.0.1:8100-8109:8000-8009", "127.0.0.1:8182:8082"]
    assert DEFAULT["name"] == "cdlab"  # the default's document is left as it was
    parsed = config.parse_topology(alice, Path("/x"), Path("/x/.lab"))  # a valid topology
    assert parsed.published(8000) == 8100 and parsed.published(8004) == 8104
    assert parsed.published(8082) == 8182


@pytest.mark.parametrize("index", [0, 10, -1])
def test_a_lab_number_out_of_range_is_refused(index: int) -> None:
    with pytest.raises(ConfigError, match="1 to 9"):
        config.named_topology(DEFAULT, "bob", index)


def test_the_default_lab_publishes_its_ports_unmoved_and_refuses_an_unpublished_one() -> None:
    cfg = config.load(environ={})
    assert cfg.published(8000) == 8000 and cfg.published(8082) == 8082
    with pytest.raises(ConfigError, match="a port prod publishes"):
        cfg.published(9999)


def test_named_labs_get_the_smallest_free_number_and_keep_it(tmp_path: Path) -> None:
    def load(name: str) -> config.LabConfig:
        return config.load(tmp_path, {"CDLAB_LAB": name})

    a, b = load("alice"), load("bob")
    assert (a.name, b.name) == ("cdlab-alice", "cdlab-bob")
    assert (a.published(8000), b.published(8000)) == (8100, 8200)
    assert a.state_dir == (tmp_path / ".lab/labs/alice").resolve()
    assert json.loads(a.topology_file.read_text())["name"] == "cdlab-alice"  # Vagrant reads it
    assert load("alice").published(8000) == 8100  # kept
    (tmp_path / ".lab/labs/alice/index").unlink()  # alice's number is free again
    assert load("carol").published(8000) == 8100
    assert load("default").name == "cdlab"


def test_a_tenth_named_lab_and_a_bad_name_are_refused(tmp_path: Path) -> None:
    for n in range(9):
        config.load(tmp_path, {"CDLAB_LAB": f"s{n}"})
    with pytest.raises(ConfigError, match="named labs this checkout already has"):
        config.load(tmp_path, {"CDLAB_LAB": "s9"})
    for bad in ("Alice", "a b", "x" * 21, "-x"):
        with pytest.raises(ConfigError, match="a lab name"):
            config.load(tmp_path, {"CDLAB_LAB": bad})


def host(lab: str, name: str, running: bool, ports: tuple[int, ...] = ()) -> dict[str, object]:
    return {
        "Config": {"Labels": {config.LABEL: lab, "cdlab.host": name, "cdlab.root": "/src"}},
        "State": {"Running": running},
        "HostConfig": {
            "PortBindings": {
                f"{p}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(p)}] for p in ports
            }
        },
    }


def test_lab_list_groups_the_hosts_by_lab_with_their_ports() -> None:
    rows = lifecycle.labs(
        [
            host("cdlab-bob", "prod", False, (8200, 8201, 8202, 8282)),
            host("cdlab", "prod", True, (8000, 8001, 8082)),
            host("cdlab", "dev", True),
            {"Config": {"Labels": {config.LABEL: "cdlab"}}},  # an image build's container
        ]
    )
    assert [(r.lab, r.hosts, r.ports) for r in rows] == [
        ("cdlab", "2/2 running", "127.0.0.1:8000-8001, 127.0.0.1:8082"),
        ("cdlab-bob", "0/1 running", "127.0.0.1:8200-8202, 127.0.0.1:8282"),
    ]
    text = lifecycle.render_labs(rows)
    assert text.splitlines()[0].split() == ["LAB", "HOSTS", "PORTS", "CHECKOUT"]
    assert "no lab on this machine" in lifecycle.render_labs([])


def test_the_proving_suite_is_refused_on_a_named_lab_but_unit_tests_run() -> None:
    with pytest.raises(ConfigError, match="the proving suite runs there"):
        testing.refuse_named_lab("alice", "")
    with pytest.raises(ConfigError):
        testing.refuse_named_lab("alice", "e2e")
    testing.refuse_named_lab("alice", "unit")
    testing.refuse_named_lab("", "")
    testing.refuse_named_lab("default", "e2e")


def test_cd_installs_the_named_labs_own_topology_not_the_checkouts(tmp_path: Path) -> None:
    """cd's copy of cdlab runs a pushed commit's pipeline: it must address this lab's hosts."""
    from lab.estate.state import State

    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "topology.json").write_text(config.TOPOLOGY.read_text())
    alice = config.load(tmp_path, {"CDLAB_LAB": "alice"})
    installed = State(alice).installed_files()
    topology = json.loads(installed["lab/topology.json"].read_text())
    assert topology["name"] == "cdlab-alice"
    assert topology["network"]["subnet"] == "10.100.201.0/24"
    default = State(config.load(tmp_path, {})).installed_files()
    assert json.loads(default["lab/topology.json"].read_text())["name"] == "cdlab"


@pytest.mark.parametrize(
    "spec",
    [
        "127.0.0.1:9000-8109:8000-8009",  # descending: Vagrant would publish nothing
        "127.0.0.1:8100-8105:8000-8009",  # ranges of two lengths
        "127.0.0.1:0:8000",
        "127.0.0.1:70000:8000",
        "0.0.0.0:8000:8000",  # loopback only
    ],
)
def test_a_published_port_range_that_cannot_work_is_refused(spec: str) -> None:
    data = json.loads(json.dumps(DEFAULT))
    next(h for h in data["hosts"] if h["name"] == "prod")["publish"] = [spec]
    with pytest.raises(ConfigError, match="ranges ascending and of one length"):
        config.parse_topology(data, Path("/x"), Path("/x/.lab"))


def test_a_shifted_range_stays_a_range() -> None:
    assert config.shifted("127.0.0.1:8000-8009:8000-8009", 1000) == "127.0.0.1:9000-9009:8000-8009"
    assert config.shifted("127.0.0.1:8082:8082", 100) == "127.0.0.1:8182:8082"
