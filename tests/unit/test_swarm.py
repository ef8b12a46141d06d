"""prod as a swarm: the pure plan that makes prod's nodes one cluster, as a table, and its
apply against fake engine clients with a failure injected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lab import config
from lab.errors import ConfigError
from lab.estate import swarm
from lab.estate.swarm import Member, NodeFacts
from tests.unit.topologies import single_prod, three_nodes

MGR = "10.100.200.201:2377"


def node(
    host: str,
    state: str = "inactive",
    nid: str = "",
    manager: bool = False,
    managers: tuple[str, ...] = (),
    existing: bool = False,
) -> NodeFacts:
    addr = {"prod": "10.100.200.201", "prod-2": "10.100.200.204", "prod-3": "10.100.200.205"}
    return NodeFacts(host, addr[host], state, nid, manager, managers, existing)


PROD_UP = node("prod", "active", "m1", True, (MGR,))
READY = [
    Member("m1", "prod", "10.100.200.201", "manager", "ready"),
    Member("w2", "prod-2", "10.100.200.204", "worker", "ready"),
    Member("w3", "prod-3", "10.100.200.205", "worker", "ready"),
]
W2 = node("prod-2", "active", "w2", managers=(MGR,))
W3 = node("prod-3", "active", "w3", managers=(MGR,))
THEIRS = ("10.9.9.9:2377", "10.9.9.8:2377")  # a team's own swarm


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
        pytest.param(
            PROD_UP,
            [node("prod-2", "active", "t2", managers=THEIRS), W3],
            [READY[0], READY[2]],
            [("leave", "prod-2"), ("join", "prod-2")],
            id="a worker cdlab created, in another swarm: leaves it and joins",
        ),
        pytest.param(
            PROD_UP,
            [node("prod-2", "active", "w8", managers=(MGR,), existing=True), W3],
            [*READY[:1], Member("w2", "prod-2", "10.100.200.204", "worker", "down"), READY[2]],
            [("leave", "prod-2"), ("join", "prod-2"), ("remove", "prod")],
            id="an existing worker in an earlier swarm of prod's: leaves it and joins",
        ),
        pytest.param(
            node("prod"),
            [node("prod-2", "active", "w2", managers=(MGR,), existing=True), W3],
            [],
            [
                ("init", "prod"),
                ("leave", "prod-2"),
                ("join", "prod-2"),
                ("leave", "prod-3"),
                ("join", "prod-3"),
            ],
            id="the manager recreated: an existing worker leaves the old swarm too",
        ),
        pytest.param(
            PROD_UP,
            [node("prod-2", "inactive", existing=True), W3],
            [READY[0], READY[2]],
            [("join", "prod-2")],
            id="an existing worker on no swarm joins",
        ),
        pytest.param(
            PROD_UP,
            [node("prod-2", "active", "w2", managers=(MGR,), existing=True), W3],
            READY,
            [],
            id="an existing worker in prod's swarm: nothing",
        ),
    ],
)
def test_the_plan_makes_prods_nodes_one_swarm(
    manager: NodeFacts, workers: list[NodeFacts], members: list[Member], expected: list[Any]
) -> None:
    steps = swarm.plan(manager, workers, members)
    assert [(s.action, s.host) for s in steps] == expected
    known = {m.node_id for m in members}
    for s in steps:
        if s.action == "join":
            assert s.target == MGR
        if s.action == "remove":  # only a node the manager lists, never the manager itself
            assert s.target in known and s.target != manager.node_id
            assert next(m for m in members if m.node_id == s.target).state != "ready"
        assert s.why  # each step says why, for the progress line


@pytest.mark.parametrize("state", ["pending", "error", "locked"])
def test_a_manager_in_doubt_is_never_started_over(state: str) -> None:
    """A cluster is not wiped on a guess: pending is also what a starting engine says."""
    with pytest.raises(swarm.SwarmError, match=f"(?s)swarm is {state}.*force-new-cluster"):
        swarm.plan(node("prod", state), [W2], READY)


@pytest.mark.parametrize(
    ("manager", "workers", "host"),
    [
        pytest.param(
            PROD_UP,
            [node("prod-2", "active", "w2", managers=THEIRS, existing=True), W3],
            "prod-2",
            id="an existing worker in a team's swarm",
        ),
        pytest.param(
            node("prod"),
            [node("prod-2"), node("prod-3", "active", "w3", managers=THEIRS, existing=True)],
            "prod-3",
            id="an existing worker in a team's swarm, prod's swarm new",
        ),
        pytest.param(
            node("prod", "active", "m1", False, THEIRS, existing=True),
            [W2],
            "prod",
            id="an existing manager, a worker of a team's swarm",
        ),
        pytest.param(
            PROD_UP,
            [node("prod-2", "active", "w2", managers=("10.100.200.201:2378",), existing=True)],
            "prod-2",
            id="managers at prod's address on another port",
        ),
        pytest.param(
            PROD_UP,
            [node("prod-2", "active", "w2", existing=True)],
            "prod-2",
            id="an existing worker in a swarm with no manager it knows",
        ),
    ],
)
def test_an_existing_machine_in_another_swarm_is_never_made_to_leave_it(
    manager: NodeFacts, workers: list[NodeFacts], host: str
) -> None:
    """Someone else's cluster: a manager of it leaving could cost it its quorum."""
    with pytest.raises(swarm.SwarmError) as err:
        swarm.plan(manager, workers, READY)
    assert err.value.host == host
    assert err.value.action == "join prod's swarm"
    assert "this existing machine's engine is" in err.value.detail
    assert f"'docker swarm leave' on {host}" in str(err.value)


def test_an_existing_worker_in_another_swarm_is_named_with_its_managers() -> None:
    w = node("prod-2", "active", "w2", managers=THEIRS, existing=True)
    with pytest.raises(swarm.SwarmError, match="active in another swarm") as err:
        swarm.plan(PROD_UP, [w], READY)
    assert "10.9.9.9:2377, 10.9.9.8:2377" in err.value.detail


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
    assert not swarm.facts_of(host, info).existing
    theirs = config.Host("prod-2", "192.168.56.10", "engine", False, (), "worker", True)
    assert swarm.facts_of(theirs, info) == NodeFacts(
        "prod-2", "192.168.56.10", "active", "w2", False, (MGR,), True
    )
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


def test_a_topology_names_prods_manager_and_workers() -> None:
    cfg = config.parse_topology(three_nodes(), Path("/x"), Path("/x/.lab"))
    assert cfg.swarm_manager is not None and cfg.swarm_manager.name == "prod"
    assert [h.name for h in cfg.swarm_workers] == ["prod-2", "prod-3"]
    single = config.parse_topology(single_prod(), Path("/x"), Path("/x/.lab"))
    assert single.swarm_manager is None and single.swarm_workers == ()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d["hosts"][0].update(swarm="worker"), "on a host whose role is 'engine'"),
        (lambda d: d["hosts"][1].update(swarm="leader"), "'manager' or 'worker'"),
        (lambda d: d["hosts"][2].update(swarm="worker"), "not cd or dev"),
        (lambda d: d["hosts"][4].update(project_mount=True), "project_mount false"),
        (lambda d: d["hosts"][1].update(swarm="worker"), "exactly one 'manager'"),
        (lambda d: d["hosts"][4].update(swarm="manager"), "exactly one 'manager'"),
    ],
)
def test_a_bad_swarm_field_is_refused(change: Any, match: str) -> None:
    data = three_nodes()
    change(data)
    with pytest.raises(ConfigError, match=match):
        config.parse_topology(data, Path("/x"), Path("/x/.lab"))


class Cluster:
    """A swarm as the engines' API shows it, enough to converge: nodes join and leave."""

    def __init__(self) -> None:
        self.members: dict[str, dict[str, Any]] = {}
        self.state: dict[str, dict[str, Any]] = {}
        self.n = 0
        self.calls: list[str] = []

    def client(self, host: str, address: str) -> Any:
        cluster = self

        class Node:
            def __init__(self, attrs: dict[str, Any]) -> None:
                self.attrs = attrs

            def remove(self, force: bool) -> None:
                cluster.calls.append(f"remove {self.attrs['ID']}")
                del cluster.members[self.attrs["ID"]]

        class Nodes:
            def list(self) -> list[Node]:
                return [Node(a) for a in cluster.members.values()]

            def get(self, nid: str) -> Node:
                return Node(cluster.members[nid])

        class Swarm:
            def __init__(self) -> None:
                self.attrs = {"JoinTokens": {"Worker": "SWMTKN-w"}}

            def reload(self) -> None:
                pass

            def _add(self, role: str) -> None:
                cluster.n += 1
                nid = f"{host}-{cluster.n}"
                cluster.members[nid] = {
                    "ID": nid,
                    "Description": {"Hostname": host},
                    "Spec": {"Role": role},
                    "Status": {"State": "ready", "Addr": address},
                }
                cluster.state[host] = {
                    "LocalNodeState": "active",
                    "NodeID": nid,
                    "ControlAvailable": role == "manager",
                    "RemoteManagers": [{"Addr": MGR}],
                }

            def init(self, **kw: Any) -> None:
                cluster.calls.append(f"init {host}")
                self._add("manager")

            def join(self, **kw: Any) -> None:
                cluster.calls.append(f"join {host}")
                self._add("worker")

            def leave(self, force: bool) -> None:
                cluster.calls.append(f"leave {host}")
                cluster.state.pop(host, None)

        class Client:
            nodes = Nodes()
            swarm = Swarm()

            def info(self) -> dict[str, Any]:
                return {"Swarm": cluster.state.get(host, {"LocalNodeState": "inactive"})}

        return Client()


def test_converge_makes_the_cluster_once_then_changes_nothing_and_rejoins_a_lost_worker() -> None:
    cfg = config.parse_topology(three_nodes(), Path("/x"), Path("/x/.lab"))
    cluster = Cluster()

    def connect(h: config.Host) -> Any:
        return cluster.client(h.name, h.address)

    said: list[str] = []
    assert swarm.converge(cfg, connect, said.append) == [
        "init prod 10.100.200.201",
        f"join prod-2 {MGR}",
        f"join prod-3 {MGR}",
    ]
    assert len(said) == 3
    assert swarm.converge(cfg, connect) == []  # a second lab.up: nothing
    lost = cluster.state.pop("prod-3")["NodeID"]  # prod-3's engine made anew, empty
    cluster.members[lost]["Status"]["State"] = "down"
    cluster.calls.clear()
    assert swarm.converge(cfg, connect) == [f"join prod-3 {MGR}", f"remove prod {lost}"]
    listed = swarm.members(cfg, connect)
    assert isinstance(listed, list) and len(listed) == 3
    assert {m.state for m in listed} == {"ready"}


def test_a_worker_that_never_becomes_ready_is_named() -> None:
    cfg = config.parse_topology(three_nodes(), Path("/x"), Path("/x/.lab"))
    cluster = Cluster()
    swarm.converge(cfg, lambda h: cluster.client(h.name, h.address))
    prod3 = next(m for m in cluster.members.values() if m["Description"]["Hostname"] == "prod-3")
    prod3["Status"]["State"] = "down"  # its engine says active, the manager sees it down
    manager = cluster.client("prod", "10.100.200.201")
    with pytest.raises(swarm.SwarmError, match="not ready: prod-3"):
        swarm.wait_ready(manager, (cfg.host("prod"), cfg.host("prod-3")), timeout=0)


def test_status_says_why_it_cannot_list_the_nodes() -> None:
    cfg = config.parse_topology(three_nodes(), Path("/x"), Path("/x/.lab"))

    def refused(h: config.Host) -> Any:
        raise ConnectionError("connection refused")

    assert swarm.members(cfg, refused) == "ConnectionError: connection refused"
