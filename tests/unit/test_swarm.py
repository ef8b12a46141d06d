"""prod as a swarm: the pure plan that makes prod's nodes one cluster, as a table, and its
apply against fake engine clients with a failure injected."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lab import config
from lab.errors import ConfigError
from lab.estate import swarm
from lab.estate.swarm import Member, NodeFacts

MGR = "10.100.200.201:2377"


def node(
    host: str,
    state: str = "inactive",
    nid: str = "",
    manager: bool = False,
    managers: tuple[str, ...] = (),
) -> NodeFacts:
    addr = {"prod": "10.100.200.201", "prod-2": "10.100.200.204", "prod-3": "10.100.200.205"}
    return NodeFacts(host, addr[host], state, nid, manager, managers)


PROD_UP = node("prod", "active", "m1", True, (MGR,))
READY = [
    Member("m1", "prod", "10.100.200.201", "manager", "ready"),
    Member("w2", "prod-2", "10.100.200.204", "worker", "ready"),
    Member("w3", "prod-3", "10.100.200.205", "worker", "ready"),
]
W2 = node("prod-2", "active", "w2", managers=(MGR,))
W3 = node("prod-3", "active", "w3", managers=(MGR,))


@pytest.mark.parametrize(
    ("manager", "workers", "members", "expected"),
    [
        pytest.param(
            node("prod"),
            [node("prod-2"), node("prod-3")],
            [],
            [("init", "prod"), ("join", "prod-2"), ("join", "prod-3")],
            id="a new cluster",
        ),
        pytest.param(PROD_UP, [W2, W3], READY, [], id="every node in it: nothing"),
        pytest.param(
            PROD_UP,
            [node("prod-2"), W3],
            [*READY[:1], Member("w2", "prod-2", "10.100.200.204", "worker", "down"), READY[2]],
            [("join", "prod-2"), ("remove", "prod")],
            id="a worker host recreated: joins, its old node removed",
        ),
        pytest.param(
            node("prod"),
            [W2, W3],
            [],
            [
                ("init", "prod"),
                ("leave", "prod-2"),
                ("join", "prod-2"),
                ("leave", "prod-3"),
                ("join", "prod-3"),
            ],
            id="the manager recreated: workers leave the old swarm and join the new",
        ),
        pytest.param(
            node("prod", "pending"),
            [],
            [],
            [("leave", "prod"), ("init", "prod")],
            id="a manager stuck pending starts over",
        ),
        pytest.param(
            PROD_UP,
            [W2],
            [*READY[:2], Member("w9", "old", "10.100.200.209", "worker", "down")],
            [("remove", "prod")],
            id="a node no longer in the topology, down, is removed",
        ),
        pytest.param(
            PROD_UP,
            [W2],
            READY,
            [],
            id="a ready node outside the topology is left alone",
        ),
    ],
)
def test_the_plan_makes_prods_nodes_one_swarm(
    manager: NodeFacts, workers: list[NodeFacts], members: list[Member], expected: list[Any]
) -> None:
    steps = swarm.plan(manager, workers, members)
    assert [(s.action, s.host) for s in steps] == expected
    for s in steps:
        if s.action == "join":
            assert s.target == MGR
        assert s.why  # each step says why, for the progress line


def test_facts_and_members_read_what_the_engine_says() -> None:
    host = config.Host("prod-2", "10.100.200.204", "engine", False, (), "worker")
    info = {
        "Swarm": {
            "LocalNodeState": "active",
            "NodeID": "w2",
            "ControlAvailable": False,
            "RemoteManagers": [{"NodeID": "m1", "Addr": MGR}],
        }
    }
    assert swarm.facts_of(host, info) == NodeFacts(
        "prod-2", "10.100.200.204", "active", "w2", False, (MGR,)
    )
    assert swarm.facts_of(host, {}).state == "inactive"
    attrs = {
        "ID": "w2",
        "Description": {"Hostname": "prod-2"},
        "Spec": {"Role": "worker", "Availability": "active"},
        "Status": {"State": "ready", "Addr": "10.100.200.204"},
    }
    assert swarm.member_of(attrs) == READY[1]


class FakeSwarm:
    def __init__(self, log: list[str], host: str, fail: str) -> None:
        self.log, self.host, self.fail = log, host, fail
        self.attrs = {"JoinTokens": {"Worker": "SWMTKN-w"}}

    def _do(self, what: str) -> None:
        if what == self.fail:
            raise RuntimeError(f"{what} refused")
        self.log.append(f"{self.host} {what}")

    def init(self, **kw: Any) -> None:
        self._do(f"init {kw['advertise_addr']}")

    def join(self, **kw: Any) -> None:
        self._do(f"join {kw['remote_addrs'][0]} {kw['join_token']} as {kw['advertise_addr']}")

    def leave(self, force: bool) -> None:
        self._do("leave")

    def reload(self) -> None:
        pass


class FakeClient:
    def __init__(self, log: list[str], host: str, fail: str = "") -> None:
        self.swarm = FakeSwarm(log, host, fail)


def test_apply_runs_each_step_on_its_node_and_names_the_one_that_failed() -> None:
    log: list[str] = []
    steps = swarm.plan(node("prod"), [node("prod-2"), node("prod-3")], [])
    addresses = {"prod": "10.100.200.201", "prod-2": "10.100.200.204", "prod-3": "10.100.200.205"}
    clients = {h: FakeClient(log, h) for h in addresses}
    swarm.apply(steps, clients, addresses, "prod")
    assert log == [
        "prod init 10.100.200.201",
        f"prod-2 join {MGR} SWMTKN-w as 10.100.200.204",
        f"prod-3 join {MGR} SWMTKN-w as 10.100.200.205",
    ]
    log.clear()
    clients["prod-3"] = FakeClient(log, "prod-3", fail=f"join {MGR} SWMTKN-w as 10.100.200.205")
    with pytest.raises(swarm.SwarmError, match=r"could not join .* on prod-3 .*refused"):
        swarm.apply(steps, clients, addresses, "prod")
    assert log[-1].startswith("prod-2 join")  # what was done before is said by the log


def three_nodes() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(config.TOPOLOGY.read_text())
    for h in data["hosts"]:
        if h["name"] == "prod":
            h["swarm"] = "manager"
    for n, last in ((2, 204), (3, 205)):
        data["hosts"].append(
            {
                "name": f"prod-{n}",
                "address": f"10.100.200.{last}",
                "role": "engine",
                "project_mount": False,
                "swarm": "worker",
            }
        )
    return data


def test_a_topology_names_prods_manager_and_workers() -> None:
    cfg = config.parse_topology(three_nodes(), Path("/x"), Path("/x/.lab"))
    assert cfg.swarm_manager is not None and cfg.swarm_manager.name == "prod"
    assert [h.name for h in cfg.swarm_workers] == ["prod-2", "prod-3"]
    assert (
        config.parse_topology(
            json.loads(config.TOPOLOGY.read_text()), Path("/x"), Path("/x/.lab")
        ).swarm_manager
        is None
    )


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d["hosts"][0].update(swarm="worker"), "on a host whose role is 'engine'"),
        (lambda d: d["hosts"][1].update(swarm="leader"), "'manager' or 'worker'"),
        (lambda d: d["hosts"][1].update(swarm="worker"), "exactly one 'manager'"),
        (lambda d: d["hosts"][2].update(swarm="manager"), "exactly one 'manager'"),
    ],
)
def test_a_bad_swarm_field_is_refused(change: Any, match: str) -> None:
    data = three_nodes()
    change(data)
    with pytest.raises(ConfigError, match=match):
        config.parse_topology(data, Path("/x"), Path("/x/.lab"))
