from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab import config
from lab.errors import OwnershipError, VagrantError
from lab.estate import hosts

CFG = config.parse_topology(
    json.loads(config.TOPOLOGY.read_text()), Path("/here"), Path("/here/.lab")
)
ALL = {h.name: True for h in CFG.hosts}


def running(name: str, image: str = "img", owner: str = "/here") -> hosts.HostFacts:
    return hosts.HostFacts(name, True, True, image, owner, "running")


def actions(
    facts: dict[str, hosts.HostFacts],
    known: dict[str, bool] | None = None,
    owners: dict[str, bool] | None = None,
) -> dict[str, str]:
    plan = hosts.plan(CFG, facts, "img", ALL if known is None else known, owners or {})
    return {a.host: a.action for a in plan}


def test_fresh_machine_creates_every_host() -> None:
    assert set(actions({}, known={}).values()) == {"create"}


def test_a_running_lab_is_kept_as_it_is() -> None:
    assert set(actions({h.name: running(h.name) for h in CFG.hosts}).values()) == {"keep"}


@pytest.mark.parametrize(
    ("fact", "known", "want"),
    [
        (hosts.HostFacts("prod", True, False, "img", "/here", "exited"), True, "start"),
        (running("prod", image="old"), True, "recreate"),
        (running("prod"), False, "replace-orphan"),
        (running("prod", owner="/gone"), True, "replace-orphan"),
    ],
)
def test_one_host_out_of_shape(fact: hosts.HostFacts, known: bool, want: str) -> None:
    facts = {h.name: running(h.name) for h in CFG.hosts} | {"prod": fact}
    got = actions(facts, known=ALL | {"prod": known}, owners={"/gone": False})
    assert got["prod"] == want
    assert {v for k, v in got.items() if k != "prod"} == {"keep"}


def test_a_host_of_another_existing_checkout_is_refused() -> None:
    with pytest.raises(OwnershipError, match="belongs to the cdlab checkout at /other"):
        actions({"prod": running("prod", owner="/other")}, owners={"/other": True})


def test_a_lab_of_this_checkout_has_no_foreign_owner() -> None:
    facts = {h.name: running(h.name) for h in CFG.hosts}
    assert hosts.foreign_owners(CFG, facts, {"/here": True}, allowed=False) == {}


def test_a_lab_of_a_removed_checkout_is_cleared_without_asking() -> None:
    facts = {"prod": running("prod", owner="/gone"), "cd": running("cd")}
    assert hosts.foreign_owners(CFG, facts, {"/gone": False}, allowed=False) == {"/gone": False}


def test_a_lab_of_an_existing_checkout_needs_take_over() -> None:
    facts = {"prod": running("prod", owner="/other"), "cd": running("cd", owner="/other")}
    with pytest.raises(OwnershipError, match=r"lab\.up --take-over"):
        hosts.foreign_owners(CFG, facts, {"/other": True}, allowed=False)
    assert hosts.foreign_owners(CFG, facts, {"/other": True}, allowed=True) == {"/other": True}


def test_vagrant_names_each_machine_as_its_container_never_a_bare_hex_word() -> None:
    # Vagrant reads a machine name first as the prefix of an id in its global machine index
    # (hex digits): a machine called "cd" was answered for another lab's registry whose id began
    # with cd, and lab.up then replaced the running cd host as "unknown to Vagrant"
    names = {h.name: hosts.machine_name(CFG, h.name) for h in CFG.hosts}
    assert names == {h.name: f"cdlab-{h.name}" for h in CFG.hosts}
    assert all("-" in n for n in names.values())
    vagrantfile = (config.TOPOLOGY.parents[1] / "Vagrantfile").read_text()
    assert 'config.vm.define "#{LAB}-#{name}"' in vagrantfile


def test_vagrant_status_reads_back_to_hosts_and_ignores_an_older_naming() -> None:
    status = [("cdlab-registry", "running"), ("cdlab-prod", "not_created"), ("cd", "running")]
    assert hosts.known_hosts(CFG, status) == {"registry": True, "prod": False}
    # "cd" is an older machine name: cd counts as unknown to Vagrant, its container replaced once
    assert actions({"cd": running("cd")}, known=hosts.known_hosts(CFG, status))["cd"] == (
        "replace-orphan"
    )


def test_a_machine_listed_twice_stops_the_plan_before_it_removes_a_host() -> None:
    status = [("cdlab-registry", "running"), ("cdlab-registry", "running")]
    with pytest.raises(VagrantError, match="cdlab-registry more than once") as err:
        hosts.known_hosts(CFG, status)
    assert "global-status --prune" in str(err.value)


def test_vagrant_error_summary_strips_colour_and_blank_lines() -> None:
    raw = "\x1b[31mThe container could not start\x1b[0m\n\n  port is taken  \n"
    assert hosts.vagrant_error_summary(raw) == "The container could not start\n  port is taken"


class FakeContainer:
    def __init__(self, host: str, status: str) -> None:
        self.status = status
        self.image = type("Image", (), {"id": "sha256:img"})()
        self.labels = {
            "cdlab.lab": "cdlab",
            "cdlab.host": host,
            "cdlab.root": "/here",
            "cdlab.spec": "spec1",
        }


class FakeEngine:
    def __init__(self, containers: list[FakeContainer]) -> None:
        self.containers = self
        self._all = containers
        self.filters: dict[str, str] = {}

    def list(self, all: bool = False, filters: dict[str, str] | None = None) -> list:
        self.filters = filters or {}
        return self._all


def test_facts_read_every_label_into_its_field() -> None:
    engine = FakeEngine([FakeContainer("prod", "running"), FakeContainer("cd", "exited")])
    got = hosts.facts(CFG, engine)
    assert engine.filters == {"label": "cdlab.lab=cdlab"}
    assert got["prod"] == hosts.HostFacts(
        "prod",
        exists=True,
        running=True,
        image_id="sha256:img",
        owner="/here",
        spec="spec1",
        status="running",
    )
    assert got["cd"].running is False and got["cd"].status == "exited"


def test_a_changed_spec_recreates_and_an_equal_one_keeps() -> None:
    facts = {
        h.name: hosts.HostFacts(h.name, True, True, "img", "/here", "spec1", "running")
        for h in CFG.hosts
    }
    same = hosts.plan(CFG, facts, "img", ALL, {}, "spec1")
    assert {a.action for a in same} == {"keep"}
    changed = hosts.plan(CFG, facts, "img", ALL, {}, "spec2")
    assert {a.action for a in changed} == {"recreate"}


def test_a_shell_opens_on_the_hosts_container_and_in_a_folder_when_asked() -> None:
    from lab import config
    from lab.estate import lifecycle
    from lab.release import devloop

    cfg = config.load()
    dev = cfg.container_name(cfg.host("dev"))
    assert lifecycle.shell_argv(cfg, "dev")[-3:] == [dev, "bash", "-l"]
    argv = lifecycle.shell_argv(cfg, "dev", devloop.CLONE)
    assert argv[argv.index("-w") + 1] == devloop.CLONE and argv[-3] == dev


def test_a_push_says_which_services_failed_and_which_went_live() -> None:
    from lab.release import devloop

    output = (
        "remote: ==> [7/13] integration tests against the candidate's own address ...\n"
        "remote: cdlab: deploy of app e1c7357467ba failed: integration tests failed (exit 1):\n"
        "remote: cdlab: quotes e1c7357467ba is live (was 507eebf2bfbb) in 15.1 s\n"
        "remote: cdlab-result: failed (exit 1)\n"
    )
    assert devloop.outcome(output) == (["app"], ["quotes"])
    assert devloop.outcome("cdlab-result: failed (checkout of abc)") == ([], [])
