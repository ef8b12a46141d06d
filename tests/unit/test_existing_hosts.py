"""Existing machines (``"existing": true`` in the topology): hosts cdlab does not create, whose
engine it reaches with the lab's client certificate. Their validation, what the plan does with
them, their bundle (``lab.bundle --host``), the check ``lab.up`` makes and what ``lab.destroy``
takes back, against fakes: no engine, no network."""

from __future__ import annotations

import contextlib
import copy
import json
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from lab import config
from lab.errors import ConfigError, EngineError, LoadError, OwnershipError
from lab.estate import existing, hosts, lifecycle, rolling
from lab.estate.state import State
from lab.ports import engines
from lab.progress import Progress
from lab.proof import load, nodefaults
from lab.release import lock
from tests.unit.topologies import shipped, single_prod

GOOD: dict[str, Any] = single_prod()  # the shipped topology, prod one host on no swarm
ROOT, STATE = Path("/here"), Path("/here/.lab")
OUTSIDE = "192.168.56.10"  # a team's VM: not in the lab's subnet
PRODS = "10.100.200.201"  # prod's address as shipped: its swarm's manager


def worker(name: str, address: str, is_existing: bool = False) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": name,
        "address": address,
        "role": "engine",
        "project_mount": False,
        "swarm": "worker",
    }
    if is_existing:
        raw["existing"] = True
    return raw


def swarm_doc() -> dict[str, Any]:
    """The single-host topology with prod a swarm: prod-2 an existing machine outside the
    subnet, prod-3 a worker cdlab creates."""
    doc = copy.deepcopy(GOOD)
    doc["hosts"][1]["swarm"] = "manager"
    doc["hosts"] += [worker("prod-2", OUTSIDE, True), worker("prod-3", "10.100.200.205")]
    return doc


def prod_existing_doc(address: str = "192.168.56.20") -> dict[str, Any]:
    """The single-host topology with prod an existing machine (no publish: nothing is
    forwarded)."""
    doc = copy.deepcopy(GOOD)
    doc["hosts"][1].update(existing=True, address=address, publish=[])
    return doc


def parse(doc: dict[str, Any], root: Path = ROOT, state: Path = STATE) -> config.LabConfig:
    return config.parse_topology(doc, root, state)


def changed(index: int, **fields: Any) -> dict[str, Any]:
    doc = copy.deepcopy(GOOD)
    doc["hosts"][index].update(fields)
    return doc


# parse_topology


def test_an_existing_swarm_worker_outside_the_lab_subnet_is_accepted() -> None:
    cfg = parse(swarm_doc())
    p2 = cfg.host("prod-2")
    assert (p2.existing, p2.address, p2.swarm) == (True, OUTSIDE, "worker")
    assert not cfg.host("prod-3").existing
    assert [h.name for h in cfg.swarm_workers] == ["prod-2", "prod-3"]


def test_the_shipped_topology_has_no_existing_machine() -> None:
    cfg = parse(shipped())
    assert not any(h.existing for h in cfg.hosts)
    assert cfg.created_hosts == cfg.hosts


def test_a_host_cdlab_creates_outside_the_subnet_is_still_refused() -> None:
    doc = swarm_doc()
    doc["hosts"][5]["address"] = "192.168.56.11"  # prod-3, not existing
    with pytest.raises(ConfigError) as err:
        parse(doc)
    assert err.value.field == "hosts[5].address"
    assert "inside 10.100.200.0/24" in str(err.value)


@pytest.mark.parametrize(
    ("index", "fields", "words"),
    [
        (2, {"existing": True, "project_mount": False}, "not cd or dev"),  # cd
        (3, {"existing": True, "project_mount": False}, "not cd or dev"),  # dev
        (2, {"existing": True}, "not cd or dev"),  # cd as shipped: mounted too
        (0, {"existing": True}, "engine host"),  # the registry
        (1, {"existing": True, "publish": [], "project_mount": True}, "project_mount false"),
        (1, {"existing": True}, "no publish"),  # prod as shipped publishes 8000-8009, 8082
        (1, {"existing": "yes", "publish": []}, "true or false"),
        (1, {"existing": 1, "publish": []}, "true or false"),
        (1, {"existing": "true", "address": "192.168.56.9", "publish": []}, "true or false"),
    ],
)
def test_existing_where_cdlab_must_create_the_host_is_refused(
    index: int, fields: dict[str, Any], words: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse(changed(index, **fields))
    assert err.value.field == f"hosts[{index}].existing"
    assert err.value.value == fields["existing"]
    assert words in err.value.expected


@pytest.mark.parametrize("address", ["127.0.0.1", "127.1.2.3", "0.0.0.0", "fd00::5"])
def test_an_existing_machine_at_loopback_or_no_ipv4_address_is_refused(address: str) -> None:
    doc = swarm_doc()
    doc["hosts"][4]["address"] = address
    with pytest.raises(ConfigError) as err:
        parse(doc)
    assert err.value.field == "hosts[4].address"
    assert "not loopback" in err.value.expected


def test_an_existing_machine_shares_no_address_with_another_host() -> None:
    doc = swarm_doc()
    doc["hosts"][4]["address"] = "10.100.200.201"  # prod's
    with pytest.raises(ConfigError) as err:
        parse(doc)
    assert err.value.field == "hosts[].address"


def test_an_existing_prod_may_be_outside_the_subnet_and_prods_swarm_manager() -> None:
    doc = prod_existing_doc()
    doc["hosts"][1]["swarm"] = "manager"
    cfg = parse(doc)
    assert cfg.swarm_manager is not None and cfg.swarm_manager.existing


# LabConfig: public_address, published, created_hosts


def test_prods_ports_answer_on_the_workstation_by_default() -> None:
    cfg = parse(shipped())
    assert cfg.public_address == "127.0.0.1"
    assert cfg.published(8000) == 8000
    assert cfg.published(8082) == 8082


def test_prods_ports_answer_at_its_own_address_when_it_is_an_existing_machine() -> None:
    cfg = parse(prod_existing_doc())
    assert cfg.public_address == "192.168.56.20"
    assert cfg.published(8000) == 8000
    assert cfg.published(8082) == 8082
    assert cfg.published(9999) == 9999  # no forward to look up: the port itself


def test_a_forwarded_port_is_the_workstations_when_prod_is_created() -> None:
    cfg = parse(config.named_topology(GOOD, "alice", 1))
    assert cfg.public_address == "127.0.0.1"
    assert cfg.published(8000) == 8100
    with pytest.raises(ConfigError) as err:
        cfg.published(9999)
    assert err.value.field == "published port"


def test_an_existing_worker_leaves_prods_public_address_alone() -> None:
    cfg = parse(swarm_doc())
    assert cfg.public_address == "127.0.0.1"
    assert cfg.published(8000) == 8000


def test_created_hosts_leave_the_existing_machines_out() -> None:
    assert [h.name for h in parse(swarm_doc()).created_hosts] == [
        "registry",
        "prod",
        "cd",
        "dev",
        "prod-3",
    ]
    assert "prod" not in {h.name for h in parse(prod_existing_doc()).created_hosts}


# hosts.plan

SWARM = parse(swarm_doc())
KNOWN = {h.name: True for h in SWARM.created_hosts}


def running(name: str, owner: str = "/here") -> hosts.HostFacts:
    return hosts.HostFacts(name, True, True, "img", owner, status="running")


def planned(
    facts: dict[str, hosts.HostFacts], owners: dict[str, bool] | None = None
) -> dict[str, hosts.HostAction]:
    acts = hosts.plan(SWARM, facts, "img", KNOWN, owners or {})
    return {a.host: a for a in acts}


def test_an_existing_machine_without_a_container_needs_nothing() -> None:
    facts = {h.name: running(h.name) for h in SWARM.created_hosts}
    got = planned(facts)
    assert got["prod-2"].action == "existing"
    assert OUTSIDE in got["prod-2"].reason
    assert {k: a.action for k, a in got.items() if k != "prod-2"} == dict.fromkeys(KNOWN, "keep")


def test_a_fresh_machine_creates_every_host_but_the_existing_one() -> None:
    got = {k: a.action for k, a in planned({}).items()}
    assert got == dict.fromkeys(KNOWN, "create") | {"prod-2": "existing"}


@pytest.mark.parametrize("is_running", [True, False])
def test_the_container_this_checkout_made_for_a_host_now_existing_is_removed(
    is_running: bool,
) -> None:
    fact = hosts.HostFacts("prod-2", True, is_running, "old", "/here", status="exited")
    got = planned({"prod-2": fact})["prod-2"]
    assert got.action == "remove"
    assert "existing machine" in got.reason


def test_a_container_of_a_removed_checkout_for_an_existing_host_is_an_orphan() -> None:
    got = planned({"prod-2": running("prod-2", owner="/gone")}, owners={"/gone": False})
    assert got["prod-2"].action == "replace-orphan"


def test_an_existing_hosts_container_of_another_live_checkout_is_still_refused() -> None:
    with pytest.raises(OwnershipError, match="belongs to the cdlab checkout at /other"):
        planned({"prod-2": running("prod-2", owner="/other")}, owners={"/other": True})


# existing.host_env, install_hint


def env_of(cfg: config.LabConfig, name: str) -> dict[str, str]:
    text = existing.host_env(cfg, cfg.host(name))
    assert text.endswith("\n")
    pairs = [line.partition("=") for line in text.splitlines()]
    return {key: value for key, _, value in pairs}


def test_a_workers_environment_makes_it_a_swarm_node() -> None:
    assert env_of(SWARM, "prod-2") == {
        "CDLAB_HOST": "prod-2",
        "CDLAB_ROLE": "engine",
        "CDLAB_REGISTRY": "10.100.200.200:5000",
        "CDLAB_ENGINE_PORT": "2376",
        "CDLAB_SWARM_NODE": "1",
    }


def test_a_prod_on_no_swarm_is_no_swarm_node() -> None:
    env = env_of(parse(prod_existing_doc()), "prod")
    assert "CDLAB_SWARM_NODE" not in env
    assert env["CDLAB_HOST"] == "prod"


def test_the_registry_and_engine_port_come_from_the_topology() -> None:
    doc = swarm_doc()
    doc.update(registry_port=5443, engine_port=2400)
    doc["hosts"][0]["address"] = "10.100.200.250"
    env = env_of(parse(doc), "prod-2")
    assert env["CDLAB_REGISTRY"] == "10.100.200.250:5443"
    assert env["CDLAB_ENGINE_PORT"] == "2400"


def test_the_install_hint_says_how_to_get_and_install_the_bundle() -> None:
    hint = existing.install_hint(SWARM.host("prod-2"))
    assert "invoke lab.bundle --host prod-2" in hint
    # over what an older bundle left there: else a file the new one no longer has stays
    assert "rm -rf prod-2 && tar xzf prod-2.tar.gz && sh prod-2/install-host.sh" in hint
    assert "invoke lab.up" in hint


# existing.write_bundle (a real state folder: CA and certificates made with ``cryptography``)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> State:
    """A state folder for a topology whose prod and prod-2 are existing machines."""
    base = tmp_path_factory.mktemp("lab")
    doc = swarm_doc()
    doc["hosts"][1].update(existing=True, address="192.168.56.20", publish=[])
    return State(config.parse_topology(doc, root=base, state_dir=base / "state"))


def members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive, "r:gz") as tar:
        return {m.name: m for m in tar.getmembers()}


def read(archive: Path, name: str) -> bytes:
    with tarfile.open(archive, "r:gz") as tar:
        fh = tar.extractfile(name)
        assert fh is not None
        return fh.read()


def test_a_workers_bundle_holds_its_certificates_environment_and_scripts(
    made: State, tmp_path: Path
) -> None:
    out = existing.write_bundle(made, "prod-2", tmp_path / "p2.tar.gz")
    assert out == tmp_path / "p2.tar.gz"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # it holds the host's private key
    got = members(out)
    for name in ("ca.pem", "cert.pem", "key.pem"):
        assert got[f"prod-2/cdlab/{name}"].isfile()
        assert got[f"prod-2/cdlab/{name}"].mode == 0o600
    assert got["prod-2/install-host.sh"].mode == 0o755
    assert got["prod-2/cdlab-host-init"].mode == 0o755
    assert got["prod-2/host.env"].mode == 0o600
    assert got["prod-2"].isdir() and got["prod-2/cdlab"].isdir()
    assert not any(n.startswith("prod-2/cdlab/control") for n in got)  # prod's only
    assert {n.split("/")[0] for n in got} == {"prod-2"}
    assert read(out, "prod-2/host.env").decode() == existing.host_env(
        made.config, made.config.host("prod-2")
    )
    assert read(out, "prod-2/cdlab/ca.pem") == made.pki.ca_cert.read_bytes()
    assert read(out, "prod-2/install-host.sh") == existing.INSTALL.read_bytes()


def test_a_workers_engine_certificate_names_its_own_address(made: State, tmp_path: Path) -> None:
    out = existing.write_bundle(made, "prod-2", tmp_path / "p2.tar.gz")
    cert = x509.load_pem_x509_certificate(read(out, "prod-2/cdlab/cert.pem"))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert OUTSIDE in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}


def test_an_existing_prods_bundle_holds_the_control_planes_readable_certificates(
    made: State, tmp_path: Path
) -> None:
    got = members(existing.write_bundle(made, "prod", tmp_path / "prod.tar.gz"))
    assert got["prod/cdlab/control/etcd/cert.pem"].mode == 0o644
    assert got["prod/cdlab/control/proxy/cert.pem"].mode == 0o644
    assert got["prod/cdlab/key.pem"].mode == 0o600
    assert got["prod/cdlab/control"].isdir() and got["prod/cdlab/control/etcd"].isdir()
    assert "prod/host.env" in got and "prod/install-host.sh" in got


def test_a_folder_as_out_gets_host_tar_gz(made: State, tmp_path: Path) -> None:
    out = existing.write_bundle(made, "prod-2", tmp_path)
    assert out == tmp_path / "prod-2.tar.gz"
    assert out.is_file()


def test_an_out_in_a_folder_that_does_not_exist_is_refused(made: State, tmp_path: Path) -> None:
    out = tmp_path / "nope" / "p2.tar.gz"
    with pytest.raises(ConfigError) as err:
        existing.write_bundle(made, "prod-2", out)
    assert err.value.field == "--out"
    assert err.value.value == str(out)
    assert not out.parent.exists()  # nothing made on the way


@pytest.mark.parametrize("name", ["prod-3", "registry", "cd"])
def test_the_bundle_of_a_host_cdlab_creates_is_refused(made: State, name: str) -> None:
    with pytest.raises(ConfigError) as err:
        existing.write_bundle(made, name, made.dir)
    assert err.value.field == "--host"
    assert err.value.value == name
    assert "prod, prod-2" in err.value.expected


def test_the_bundle_of_an_unknown_host_names_the_hosts() -> None:
    with pytest.raises(ConfigError) as err:
        existing.write_bundle(State(SWARM), "nope")
    assert err.value.field == "host"


def test_install_host_sh_is_valid_sh() -> None:
    script = existing.INSTALL
    done = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


# existing.check


def test_an_existing_engine_that_does_not_answer_says_how_to_install_its_bundle() -> None:
    seen: list[tuple[str, float]] = []

    def wait_ready(state: State, host: config.Host, timeout: float = 60.0) -> str:
        seen.append((host.name, timeout))
        raise EngineError(host.name, f"https://{host.address}:2376", "ConnectionError: refused")

    with pytest.raises(EngineError) as err:
        existing.check(State(SWARM), wait_ready)
    assert "invoke lab.bundle --host prod-2" in str(err.value)
    assert err.value.host == "prod-2"
    assert err.value.last_error == "ConnectionError: refused"
    assert seen == [("prod-2", existing.WAIT)]  # only the existing machines are asked


def answers(state: State, host: config.Host, timeout: float = 60.0) -> str:
    return "20.10.24"


def der(state: State, name: str) -> bytes:
    """The engine certificate of ``name``'s bundle, as its engine presents it (DER)."""
    pem = (state.bundle(state.config.host(name)) / "cert.pem").read_bytes()
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


def test_each_existing_engine_that_presents_its_bundles_certificate_says_its_version(
    made: State,
) -> None:
    made.ensure()
    asked: list[str] = []

    def presented(state: State, host: config.Host) -> bytes:
        asked.append(host.name)
        return der(state, host.name)

    assert existing.check(made, answers, presented) == ["prod 20.10.24", "prod-2 20.10.24"]
    assert asked == ["prod", "prod-2"]  # only the existing machines are asked
    assert existing.check(State(parse(GOOD)), answers, presented) == []


def test_an_engine_presenting_a_certificate_other_than_its_bundles_says_to_install_it(
    made: State,
) -> None:
    """An older bundle: the engine answers the lab's client certificate, from a CA that still
    signs, with a certificate that is no longer the one its bundle holds."""
    made.ensure()

    def presented(state: State, host: config.Host) -> bytes:
        return der(state, "prod")  # right for prod; prod-2 presents prod's

    with pytest.raises(EngineError) as err:
        existing.check(made, answers, presented)
    assert err.value.host == "prod-2"
    assert err.value.url == f"tcp://{OUTSIDE}:2376"
    assert "other than its bundle's" in err.value.last_error
    assert "rm -rf prod-2 && tar xzf prod-2.tar.gz" in str(err.value)
    assert "invoke lab.bundle --host prod-2" in str(err.value)


def test_an_engine_presenting_no_certificate_is_refused(made: State) -> None:
    made.ensure()
    with pytest.raises(EngineError, match="other than its bundle's") as err:
        existing.check(made, answers, lambda state, host: b"")
    assert err.value.host == "prod"  # the first existing machine in the topology


def test_an_engine_that_does_not_answer_is_not_asked_for_its_certificate(made: State) -> None:
    def refused(state: State, host: config.Host, timeout: float = 60.0) -> str:
        raise EngineError(host.name, f"https://{host.address}:2376", "ConnectionError: refused")

    def presented(state: State, host: config.Host) -> bytes:
        raise AssertionError("its certificate was read")

    with pytest.raises(EngineError, match="refused"):
        existing.check(made, refused, presented)


# existing.release


class Item:
    def __init__(self, ident: str, log: list[str]) -> None:
        self.id = self.name = ident
        self.log = log

    def remove(self, **kw: Any) -> None:
        self.log.append(f"remove {self.id} {kw}")


class Listing:
    def __init__(self, by_filter: dict[str, list[Item]]) -> None:
        self.by_filter = by_filter
        self.asked: list[dict[str, Any]] = []

    def list(self, filters: dict[str, str], **kw: Any) -> list[Item]:
        self.asked.append({"filters": filters, **kw})
        return self.by_filter.get(filters["label"], [])


def in_swarm(*managers: str, state: str = "active") -> dict[str, Any]:
    """``docker info`` of a node in the swarm whose managers are at ``managers``."""
    remote = [{"NodeID": f"m{i}", "Addr": addr} for i, addr in enumerate(managers)]
    return {"Swarm": {"LocalNodeState": state, "NodeID": "n1", "RemoteManagers": remote}}


class FakeClient:
    """An existing machine's engine: cdlab's containers, networks and volumes, each listed by
    the filters ``release`` asks (``cdlab.role``, the compose project), some by both; by default
    a node of prod's swarm (its manager at ``PRODS``)."""

    def __init__(self, info: dict[str, Any] | None = None, empty: bool = False) -> None:
        self.log: list[str] = []
        self.said = in_swarm(f"{PRODS}:2377") if info is None else info
        self.swarm = SimpleNamespace(leave=lambda **kw: self.log.append(f"leave {kw}"))

        c1, c2, c3, n1, n2, v1 = (Item(i, self.log) for i in ("c1", "c2", "c3", "n1", "n2", "v1"))
        project = "com.docker.compose.project=cdlab-stack"
        self.containers = Listing({} if empty else {"cdlab.role": [c1, c2], project: [c2, c3]})
        self.networks = Listing({} if empty else {"cdlab.role": [n1], project: [n1, n2]})
        self.volumes = Listing({} if empty else {"cdlab.role": [v1], project: [v1]})

    def info(self) -> dict[str, Any]:
        return self.said


def test_release_leaves_the_swarm_and_removes_each_of_cdlabs_things_once() -> None:
    c = FakeClient()
    said = existing.release(c, "cdlab-stack", PRODS)
    assert said == ["left the swarm", "3 containers", "2 networks", "1 volumes"]
    assert c.log == [
        "leave {'force': True}",
        "remove c1 {'force': True}",
        "remove c2 {'force': True}",
        "remove c3 {'force': True}",
        "remove n1 {}",
        "remove n2 {}",
        "remove v1 {'force': True}",
    ]
    assert all(a["all"] is True for a in c.containers.asked)  # stopped ones too
    assert {a["filters"]["label"] for a in c.volumes.asked} == {
        "cdlab.role",
        "com.docker.compose.project=cdlab-stack",
    }


@pytest.mark.parametrize(
    "info",
    [
        {"Swarm": {"LocalNodeState": "inactive"}},
        {"Swarm": {"LocalNodeState": "inactive", "RemoteManagers": None}},
        {"Swarm": {"LocalNodeState": ""}},
        {"Swarm": None},
        {},
    ],
)
def test_a_node_on_no_swarm_leaves_none_and_nothing_found_is_said(info: dict[str, Any]) -> None:
    c = FakeClient(info, empty=True)
    assert existing.release(c, "cdlab-stack", PRODS) == []
    assert c.log == []


def test_a_node_in_a_prod_swarm_with_more_managers_leaves_it() -> None:
    c = FakeClient(in_swarm("10.100.200.9:2377", f"{PRODS}:2377"), empty=True)
    assert existing.release(c, "cdlab-stack", PRODS) == ["left the swarm"]
    assert c.log == ["leave {'force': True}"]


@pytest.mark.parametrize(
    ("info", "manager", "words"),
    [
        pytest.param(
            in_swarm("10.9.9.9:2377", "10.9.9.8:2377"),
            PRODS,
            "in another swarm (10.9.9.8:2377, 10.9.9.9:2377): left in it",
            id="a team's swarm",
        ),
        pytest.param(
            in_swarm(f"{PRODS}:2378"),
            PRODS,
            f"in another swarm ({PRODS}:2378): left in it",
            id="prod's address on another port",
        ),
        pytest.param(
            in_swarm("10.100.200.2011:2377"),
            PRODS,
            "in another swarm (10.100.200.2011:2377): left in it",
            id="an address that only begins as prod's",
        ),
        pytest.param(
            in_swarm(f"{PRODS}:2377"),
            "",
            f"in another swarm ({PRODS}:2377): left in it",
            id="no swarm in the topology",
        ),
        pytest.param(
            in_swarm(state="pending"),
            PRODS,
            "in another swarm (pending): left in it",
            id="no manager known",
        ),
    ],
)
def test_a_node_in_another_swarm_is_left_in_it_and_cdlabs_things_still_go(
    info: dict[str, Any], manager: str, words: str
) -> None:
    c = FakeClient(info)
    said = existing.release(c, "cdlab-stack", manager)
    assert said == [words, "3 containers", "2 networks", "1 volumes"]
    assert not [line for line in c.log if line.startswith("leave")]
    assert len(c.log) == 6  # each of cdlab's things removed all the same


# lifecycle: shell_argv, _release_existing


def test_the_shell_of_an_existing_machine_is_refused_with_its_ssh() -> None:
    with pytest.raises(ConfigError) as err:
        lifecycle.shell_argv(SWARM, "prod-2")
    assert err.value.field == "host"
    assert err.value.value == "prod-2"
    assert f"ssh {OUTSIDE}" in err.value.expected


def test_the_shell_of_a_host_cdlab_created_is_its_container() -> None:
    assert lifecycle.shell_argv(SWARM, "prod-3")[-3:] == ["cdlab-prod-3", "bash", "-l"]


def test_destroy_takes_back_from_workers_first_and_goes_on_past_one_that_does_not_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    doc = swarm_doc()
    doc["hosts"][1].update(existing=True, address="192.168.56.20", publish=[])
    doc["hosts"][5]["existing"] = True  # prod-3 too; it does not answer
    state = State(parse(doc))
    asked: list[str] = []

    @contextlib.contextmanager
    def connect(state: State, host: config.Host, timeout: int = 120) -> Iterator[Any]:
        asked.append(host.name)
        if host.name == "prod-3":
            raise EngineError("prod-3", "https://x:2376", "refused\nmore")
        yield FakeClient(in_swarm("192.168.56.20:2377"), empty=host.name == "prod-2")

    monkeypatch.setattr(engines, "connect", connect)  # the module lifecycle uses
    said = lifecycle._release_existing(state)
    assert asked == ["prod-2", "prod-3", "prod"]  # prod's manager last
    assert said[0] == "prod-2: left the swarm (the machine runs on)"
    assert said[1].startswith("prod-3: not reached (EngineError: the Docker engine of 'prod-3'")
    assert said[1].endswith("left as it is") and "more" not in said[1]
    assert said[2].startswith("prod: left the swarm, 3 containers")


@pytest.mark.parametrize(
    ("doc", "host", "manager"),
    [
        pytest.param(swarm_doc(), "prod-2", PRODS, id="prod's swarm: its manager's address"),
        pytest.param(prod_existing_doc(), "prod", "", id="no swarm: none"),
    ],
)
def test_destroy_tells_release_where_prods_swarm_manager_is(
    monkeypatch: pytest.MonkeyPatch, doc: dict[str, Any], host: str, manager: str
) -> None:
    seen: list[tuple[str, str]] = []

    @contextlib.contextmanager
    def connect(state: State, host: config.Host, timeout: int = 120) -> Iterator[Any]:
        yield host.name

    def release(client: Any, project: str, manager: str) -> list[str]:
        seen.append((client, manager))
        return []

    monkeypatch.setattr(engines, "connect", connect)
    monkeypatch.setattr(existing, "release", release)  # the module lifecycle uses
    said = lifecycle._release_existing(State(parse(doc)))
    assert seen == [(host, manager)]
    assert said == [f"{host}: nothing of cdlab (the machine runs on)"]


# lifecycle._remove_replaced: the container this checkout made for a host now existing


class Container:
    def __init__(self, host: str, owner: str | None, log: list[str]) -> None:
        self.labels = {"cdlab.host": host} | ({"cdlab.root": owner} if owner is not None else {})
        self.status, self.image = "running", SimpleNamespace(id="sha256:old")
        self.host, self.log = host, log

    def remove(self, **kw: Any) -> None:
        self.log.append(f"remove {self.host} {kw}")


class FakeLocal:
    """The workstation's engine: the host containers of the lab, by their ``cdlab.host``."""

    def __init__(self, owners: dict[str, str | None]) -> None:
        self.log: list[str] = []
        self.asked: list[dict[str, Any]] = []
        self.by_name = {
            SWARM.container_name(SWARM.host(h)): Container(h, owner, self.log)
            for h, owner in owners.items()
        }
        self.containers = SimpleNamespace(list=self._list, get=self._get)

    def _list(self, **kw: Any) -> list[Container]:
        self.asked.append(kw)
        return list(self.by_name.values())

    def _get(self, name: str) -> Container:
        self.log.append(f"get {name}")
        return self.by_name[name]


@pytest.mark.parametrize("owner", ["/here", None], ids=["this checkout", "no owner label"])
def test_the_container_made_for_a_host_now_existing_is_removed_before_its_engine_is_asked(
    owner: str | None,
) -> None:
    local = FakeLocal({"prod": "/here", "prod-2": owner, "prod-3": "/here"})
    said = lifecycle._remove_replaced(SWARM, local)
    assert said == "prod-2: removed the container made for it (an existing machine now)"
    assert local.log == ["get cdlab-prod-2", "remove prod-2 {'force': True}"]
    assert local.asked == [{"all": True, "filters": {"label": f"{config.LABEL}=cdlab"}}]


def test_another_checkouts_container_for_a_host_now_existing_is_left() -> None:
    local = FakeLocal({"prod-2": "/other", "prod-3": "/here"})
    assert lifecycle._remove_replaced(SWARM, local) == ""
    assert local.log == []  # hosts.plan refuses it, or replaces an orphan, later


def test_no_container_for_an_existing_machine_removes_nothing() -> None:
    local = FakeLocal({"prod": "/here", "prod-3": "/here"})
    assert lifecycle._remove_replaced(SWARM, local) == ""
    assert local.log == []
    assert lifecycle._remove_replaced(parse(GOOD), FakeLocal({"prod": "/here"})) == ""


def test_each_container_made_for_a_host_now_existing_is_removed_and_said() -> None:
    doc = swarm_doc()
    doc["hosts"][5]["existing"] = True  # prod-3 too
    cfg = parse(doc)
    local = FakeLocal({"prod-2": "/here", "prod-3": ""})
    assert lifecycle._remove_replaced(cfg, local) == (
        "prod-2: removed the container made for it (an existing machine now); "
        "prod-3: removed the container made for it (an existing machine now)"
    )
    assert [line for line in local.log if line.startswith("remove")] == [
        "remove prod-2 {'force': True}",
        "remove prod-3 {'force': True}",
    ]


# rolling.restart_workers, nodefaults.a_worker


def test_a_rolling_restart_with_an_existing_worker_is_refused_before_the_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_lock(*args: Any, **kw: Any) -> Any:
        raise AssertionError("the lock was taken")

    monkeypatch.setattr(lock, "held", no_lock)  # the module rolling uses
    lab: Any = SimpleNamespace(config=SWARM)
    with pytest.raises(ConfigError) as err:
        rolling.restart_workers(lab, Progress(out=None))
    assert err.value.field == "swarm workers"
    assert err.value.value == ["prod-2"]
    assert "restarted by its owner" in err.value.expected


def test_the_fault_suites_lose_only_a_worker_cdlab_created(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(nodefaults, "placed", lambda lab, c: {"prod-2": 2, "prod-3": 1})
    lab: Any = SimpleNamespace(config=SWARM)
    candidate: Any = None  # ``placed`` is faked: the candidate is not looked at
    assert nodefaults.a_worker(lab, candidate) == "prod-3"
    monkeypatch.setattr(nodefaults, "placed", lambda lab, c: {"prod-2": 2, "prod": 1})
    with pytest.raises(ConfigError) as err:
        nodefaults.a_worker(lab, candidate)
    assert err.value.field == "the live release's replicas"


@pytest.mark.parametrize("name", ["prod-2", "prod"])
def test_the_fault_suites_never_kill_stop_or_restart_an_existing_machine(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    def no_docker() -> Any:
        raise AssertionError("the workstation's engine was asked")

    monkeypatch.setattr(engines, "local", no_docker)  # the module nodefaults uses
    cfg = SWARM if name == "prod-2" else parse(prod_existing_doc())
    lab: Any = SimpleNamespace(config=cfg)
    with pytest.raises(ConfigError) as err:
        nodefaults._host(lab, name)
    assert (err.value.field, err.value.value) == ("host", name)
    assert "an existing machine is not killed, stopped or restarted" in err.value.expected


def test_the_fault_suites_reach_a_host_cdlab_created_by_its_container(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local = FakeLocal({"prod-3": "/here"})
    monkeypatch.setattr(engines, "local", lambda: local)
    lab: Any = SimpleNamespace(config=SWARM)
    assert nodefaults._host(lab, "prod-3") is local.by_name["cdlab-prod-3"]
    assert local.log == ["get cdlab-prod-3"]


def test_a_named_lab_of_a_topology_with_existing_machines_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        config.named_topology(swarm_doc(), "alice", 1)
    assert err.value.field == "CDLAB_LAB"
    assert "prod-2" in str(err.value) and "one lab" in str(err.value)


def test_no_workstation_volume_is_made_for_an_existing_machine() -> None:
    from lab.estate import network

    names = network.volume_names(parse(swarm_doc()))
    assert not [n for n in names if "prod-2" in n], names
    assert "cdlab-prod-3-docker" in names and "cdlab-prod-3-cdlab" in names


def test_a_topology_whose_builder_would_be_an_existing_machine_is_refused() -> None:
    doc = prod_existing_doc()
    doc["hosts"] = [h for h in doc["hosts"] if h["name"] not in ("cd", "dev")]
    with pytest.raises(ConfigError) as err:
        parse(doc)
    assert err.value.field == "hosts[].existing" and err.value.value == "prod"
    assert "a host named 'cd'" in str(err.value)


# load: where load and reads go (127.0.0.1, or an existing prod's own address)


def names_both(detail: str, public: str) -> bool:
    """``detail`` names the two hosts load may go to, in either order, and only them."""
    allowed = detail.partition(" to ")[2].partition(" only")[0]
    return set(allowed.split(" or ")) == {"127.0.0.1", public}


@pytest.fixture
def prod_at(monkeypatch: pytest.MonkeyPatch) -> str:
    """cdlab run where prod's ports answer at prod's own address (``CDLAB_PUBLIC_HOST``)."""
    monkeypatch.setenv("CDLAB_PUBLIC_HOST", PRODS)
    return PRODS


def test_the_app_is_reached_at_prods_public_host(prod_at: str) -> None:
    assert load.app_url() == f"http://{prod_at}:8000"


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", f"http://{PRODS}:8003/simple/"])
def test_load_and_reads_go_to_the_workstation_or_prods_public_host(prod_at: str, url: str) -> None:
    load._ours(url, f"send load to {url}", "load")  # no error
    assert url in load.argv(url, 5, 10)


@pytest.mark.parametrize("url", ["http://10.100.200.203:8000", "http://localhost:8000", "x"])
def test_load_and_reads_elsewhere_are_refused_naming_both_hosts(prod_at: str, url: str) -> None:
    with pytest.raises(LoadError) as err:
        load.argv(url, 5, 10)
    assert names_both(err.value.detail, PRODS)
    assert f"http://{PRODS}:8000" in err.value.hint
    traffic: Any = None  # refused before the traffic is looked at
    with pytest.raises(LoadError) as err:
        load.readback(traffic, url)
    assert err.value.action == f"read back the registrations from {url}"
    assert names_both(err.value.detail, PRODS)


def test_with_prod_on_the_workstation_only_127_0_0_1_takes_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(config, "public_host", lambda: "127.0.0.1")
    monkeypatch.setattr(config, "public_port", lambda port: port)
    load._ours("http://127.0.0.1:8000", "send load", "load")
    with pytest.raises(LoadError) as err:
        load._ours(f"http://{PRODS}:8000", "send load", "load")
    assert "to 127.0.0.1 only, not to '10.100.200.201'" in err.value.detail


def test_an_existing_prods_topology_sends_load_to_prods_address(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    topology = tmp_path / "topology.json"
    topology.write_text(json.dumps(prod_existing_doc("192.168.56.20")))
    monkeypatch.delenv("CDLAB_PUBLIC_HOST", raising=False)
    monkeypatch.delenv("CDLAB_LAB", raising=False)
    monkeypatch.setenv("CDLAB_TOPOLOGY", str(topology))
    config._public_address.cache_clear()
    config._published.cache_clear()
    try:
        assert config.public_host() == "192.168.56.20"
        assert load.app_url() == "http://192.168.56.20:8000"
        load._ours("http://192.168.56.20:8001", "send load", "load")
        with pytest.raises(LoadError) as err:
            load._ours(f"http://{PRODS}:8000", "send load", "load")
        assert names_both(err.value.detail, "192.168.56.20")
        env = load.environment({}, tmp_path / "out", 5, 100)
        assert env["NO_PROXY"] == "127.0.0.1,192.168.56.20"
    finally:
        config._public_address.cache_clear()
        config._published.cache_clear()


def test_destroy_removes_host_containers_only_not_ones_that_inherit_the_lab_label(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A machine started from the host image inherits the image's ``cdlab.lab`` label: the
    engine is asked for containers that also carry ``cdlab.host`` (what Vagrant's hosts do)."""
    asked: list[dict[str, Any]] = []

    class Containers:
        def list(self, **kw: Any) -> list[Any]:
            asked.append(kw)
            return []

    monkeypatch.setattr(hosts, "Vagrant", lambda config: SimpleNamespace(destroy=lambda: None))
    cfg = parse(swarm_doc())
    assert lifecycle._remove_hosts(cfg, SimpleNamespace(containers=Containers())) == []
    assert asked == [{"all": True, "filters": {"label": ["cdlab.lab=cdlab", "cdlab.host"]}}]


class Stuck(Item):
    """A container the engine will not remove (in use, a driver error)."""

    def remove(self, **kw: Any) -> None:
        import docker.errors

        raise docker.errors.APIError("409", explanation="device or resource busy")


def test_what_will_not_go_is_said_and_the_rest_goes_all_the_same() -> None:
    log: list[str] = []
    stuck, gone = Stuck("c1", log), Item("c2", log)
    project = "com.docker.compose.project=cdlab-stack"
    c = SimpleNamespace(
        info=lambda: {},
        containers=Listing({"cdlab.role": [stuck, gone]}),
        networks=Listing({project: [Item("n1", log)]}),
        volumes=Listing({}),
    )
    said = existing.release(c, "cdlab-stack", "10.100.200.201")
    assert said == [
        "1 containers",
        "containers not removed: c1 (device or resource busy)",
        "1 networks",
    ]
    assert log == ["remove c2 {'force': True}", "remove n1 {}"]


def test_a_machine_that_fails_after_it_answered_is_said_stopped_halfway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    doc = swarm_doc()
    state = State(parse(doc))

    @contextlib.contextmanager
    def connect(state: State, host: config.Host, timeout: int = 120) -> Iterator[Any]:
        yield SimpleNamespace(info=lambda: (_ for _ in ()).throw(RuntimeError("boom")))

    monkeypatch.setattr(engines, "connect", connect)
    assert lifecycle._release_existing(state) == [
        "prod-2: stopped halfway (RuntimeError: boom); left as it is"
    ]
