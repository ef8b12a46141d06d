"""Drift: a release container's ``cdlab.made`` label (how the pipeline made it) against how it
runs (``docker inspect``), and the pool against the containers on prod. The inspect attrs are
written as Docker reports them for a container made from ``container_spec``; no engine is
needed. No output ever carries an environment value."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lab import config
from lab.estate.state import State
from lab.release import containers, drift, lock, routes
from lab.release.model import Candidate
from lab.stack.limits import MIB, Limits
from lab.stack.services import Service
from tests.unit import topologies
from tests.unit.fake_ports import FakeEtcd

ROOT = Path(__file__).resolve().parents[2]
SERVICE = dataclasses.replace(Service("app", "services/app", 8000), database=True, limits=Limits())
IMAGE = "10.100.200.200:5000/cdlab/app@sha256:" + "a" * 64
OTHER = "10.100.200.200:5000/cdlab/app@sha256:" + "b" * 64
LIVE, WARM, OLD = "3f9c2e1a0b1c", "8fbee5eae721", "0123456789ab"
# what the image's own ENV adds to Config.Env (the Python base image's)
IMAGE_ENV = ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "PYTHON_VERSION=3.12.7"]


@pytest.fixture
def state(tmp_path: Path) -> State:
    topology = json.loads(config.TOPOLOGY.read_text())
    return State(config.parse_topology(topology, ROOT, tmp_path))


def spec_of(state: State, release: str = LIVE) -> dict[str, Any]:
    return containers.container_spec(state, Candidate(SERVICE, release, IMAGE, None))


def inspected(spec: dict[str, Any], status: str = "running") -> dict[str, Any]:
    """``docker inspect`` of the container ``spec`` made, as the engine reports it (the fields
    drift reads, and a few it does not)."""
    return {
        "Id": "c0ffee" * 10,
        "Name": "/" + spec["name"],
        "Image": "sha256:" + "c" * 64,  # the image's id, not what was asked for
        "State": {"Status": status, "Running": status == "running", "ExitCode": 0},
        "Config": {
            "Image": spec["image"],
            "User": spec["user"],
            "Env": IMAGE_ENV + [f"{k}={v}" for k, v in spec["environment"].items()],
            "Labels": dict(spec["labels"]),
        },
        "HostConfig": {
            "ReadonlyRootfs": spec["read_only"],
            "Tmpfs": dict(spec["tmpfs"]),
            "CapDrop": list(spec["cap_drop"]),
            "CapAdd": None,
            "SecurityOpt": list(spec["security_opt"]),
            "Memory": spec["mem_limit"],
            "MemorySwap": spec["memswap_limit"],
            "PidsLimit": spec["pids_limit"],
            "NanoCpus": spec.get("nano_cpus", 0),
            "CpuQuota": 0,
            "RestartPolicy": {"Name": spec["restart_policy"]["Name"], "MaximumRetryCount": 0},
        },
    }


def changed(attrs: dict[str, Any], **host: Any) -> dict[str, Any]:
    """``attrs`` after ``docker update`` (or another container): HostConfig keys, and Config's
    as ``Config_<key>``."""
    out = copy.deepcopy(attrs)
    for key, value in host.items():
        where, key = ("Config", key[7:]) if key.startswith("Config_") else ("HostConfig", key)
        out[where][key] = value
    return out


def test_a_release_is_labelled_with_how_the_pipeline_made_it(state: State) -> None:
    spec = spec_of(state)
    raw = spec["labels"][drift.MADE]
    recorded = json.loads(raw)
    assert recorded == drift.made(spec)  # the label does not count itself
    assert recorded == {
        "image": IMAGE,
        "user": "10001:10001",
        "read_only": True,
        "tmpfs": ["/tmp"],
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "memory": 256 * MIB,
        "memswap": 256 * MIB,
        "pids": 256,
        "nano_cpus": 0,
        "restart": "always",
        "env": sorted(spec["environment"]),
        "env_sha256": recorded["env_sha256"],
    }
    assert len(recorded["env_sha256"]) == 64 and "DATABASE_URL" in recorded["env"]
    assert len(raw) < 600 and ", " not in raw  # compact
    # names only: no value of the environment (the database's password) is in the label
    assert state.secret("db-password") not in raw
    values = set(spec["environment"].values()) - {IMAGE}
    assert [v for v in values if f'"{v}"' in raw] == []


def test_the_label_changes_with_the_environments_values_not_only_its_names(state: State) -> None:
    spec = spec_of(state)
    other = {**spec, "environment": {**spec["environment"], "CARBON_PORT": "2004"}}
    assert drift.made(other)["env"] == drift.made(spec)["env"]
    assert drift.made(other)["env_sha256"] != drift.made(spec)["env_sha256"]


def test_made_reads_the_sdks_other_forms() -> None:
    spec = {"image": IMAGE, "mem_limit": "1g", "memswap_limit": "1g", "environment": ["A=1=2"]}
    got = drift.made(spec)
    assert (got["memory"], got["memswap"], got["env"]) == (1024 * MIB, 1024 * MIB, ["A"])
    assert (got["restart"], got["pids"], got["user"], got["read_only"]) == ("no", 0, "", False)
    assert got["env_sha256"] == drift.made({**spec, "environment": {"A": "1=2"}})["env_sha256"]


def test_a_container_as_docker_reports_it_is_what_the_pipeline_made(state: State) -> None:
    for limits in (Limits(), Limits(512 * MIB, 100, 1.5)):
        svc = dataclasses.replace(SERVICE, limits=limits)
        spec = containers.container_spec(state, Candidate(svc, LIVE, IMAGE, None))
        recorded = json.loads(spec["labels"][drift.MADE])
        now = drift.seen(inspected(spec), recorded["env"])
        assert now == recorded and drift.differences(recorded, now) == []


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (
            {"Memory": 512 * MIB, "MemorySwap": 512 * MIB, "PidsLimit": 1000},
            [
                "memory 512 MiB, the pipeline made it 256 MiB",
                "memory with swap 512 MiB, the pipeline made it 256 MiB",
                "process limit 1000, the pipeline made it 256",
            ],
        ),
        (
            {"RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}},
            ["restart policy 'no', the pipeline made it 'always'"],
        ),
        (
            {"Config_Image": OTHER},
            [
                "image 10.100.200.200:5000/cdlab/app@sha256:bbbbbbbbbbbb.., the pipeline made it "
                "10.100.200.200:5000/cdlab/app@sha256:aaaaaaaaaaaa.."
            ],
        ),
        ({"Config_User": "0"}, ["user '0', the pipeline made it '10001:10001'"]),
        ({"ReadonlyRootfs": False}, ["read-only root off, the pipeline made it on"]),
        ({"Tmpfs": None}, ["tmpfs none, the pipeline made it /tmp"]),
        ({"CapDrop": None}, ["capabilities dropped none, the pipeline made it ALL"]),
        (
            {"SecurityOpt": []},
            ["security options none, the pipeline made it no-new-privileges:true"],
        ),
        ({"Memory": 0}, ["memory none, the pipeline made it 256 MiB"]),
        ({"MemorySwap": -1}, ["memory with swap unlimited, the pipeline made it 256 MiB"]),
        (
            {"Memory": 300 * MIB + 1},
            [f"memory {300 * MIB + 1} bytes, the pipeline made it 256 MiB"],
        ),
        ({"Memory": 2048 * MIB}, ["memory 2 GiB, the pipeline made it 256 MiB"]),
        ({"PidsLimit": None}, ["process limit none, the pipeline made it 256"]),
        ({"PidsLimit": -1}, ["process limit none, the pipeline made it 256"]),
        ({"NanoCpus": 2_000_000_000}, ["CPU cap 2 CPUs, the pipeline made it none"]),
        # what is the same in another spelling is no difference
        ({"RestartPolicy": {"Name": "always", "MaximumRetryCount": 0}}, []),
        ({"CapDrop": ["all"]}, []),
        ({"Tmpfs": {"/tmp": "size=32m"}}, []),  # the mount point is what is compared
        ({"CpuQuota": 50000}, []),  # not a field the pipeline sets
    ],
)
def test_each_difference_is_said_with_what_the_pipeline_made(
    state: State, change: dict[str, Any], said: list[str]
) -> None:
    spec = spec_of(state)
    recorded = drift.made(spec)
    now = drift.seen(changed(inspected(spec), **change), recorded["env"])
    assert drift.differences(recorded, now) == said


def env_changed(state: State, **env: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(made, seen) of a container whose Config.Env was changed (None: the name removed)."""
    spec = spec_of(state)
    values = {**spec["environment"], **env}
    lines = IMAGE_ENV + [f"{k}={v}" for k, v in values.items() if v is not None]
    recorded = drift.made(spec)
    return recorded, drift.seen(changed(inspected(spec), Config_Env=lines), recorded["env"])


def test_a_changed_environment_is_said_by_names_never_by_values(state: State) -> None:
    leaked = "postgresql://app:NEW-SECRET@db:5432/app"
    recorded, now = env_changed(state, DATABASE_URL=leaked)
    (line,) = drift.differences(recorded, now)
    assert line.startswith("environment changed (CARBON_HOST, CARBON_PORT, DATABASE_URL, IMAGE,")
    assert "values differ from what the pipeline set" in line
    assert "NEW-SECRET" not in line and state.secret("db-password") not in line


def test_a_missing_variable_is_named(state: State) -> None:
    recorded, now = env_changed(state, DATABASE_URL=None, CARBON_HOST=None)
    assert drift.differences(recorded, now) == [
        "environment: CARBON_HOST, DATABASE_URL not set, the pipeline set them"
    ]
    recorded, now = env_changed(state, PORT=None)
    assert drift.differences(recorded, now) == ["environment: PORT not set, the pipeline set it"]


def test_the_images_own_environment_and_new_names_are_not_compared(state: State) -> None:
    recorded, now = env_changed(state, PATH="/tmp/evil", DEBUG="1")
    assert drift.differences(recorded, now) == []


def test_a_field_an_older_label_lacks_is_not_compared(state: State) -> None:
    spec = spec_of(state)
    recorded = {k: v for k, v in drift.made(spec).items() if k != "nano_cpus"}
    now = drift.seen(changed(inspected(spec), NanoCpus=10**9), recorded["env"])
    assert drift.differences(recorded, now) == []


# find: the pool (routes) against the containers


def facts(pool: tuple[str, ...], *attrs: dict[str, Any], deploying: str = "") -> drift.Facts:
    return drift.Facts((drift.ServiceFacts("app", frozenset(pool), attrs),), deploying)


def test_nothing_is_found_when_prod_runs_what_the_pipeline_made(state: State) -> None:
    known = facts((LIVE, WARM), inspected(spec_of(state)), inspected(spec_of(state, WARM)))
    assert drift.find(known) == []
    assert drift.checked(known) == [
        ("app", LIVE, f"app-{LIVE}"),
        ("app", WARM, f"app-{WARM}"),
    ]
    assert drift.render([], drift.checked(known)) == (
        "no drift: 2 container(s) of 2 release(s) run as the pipeline made them"
    )


def test_a_changed_container_is_drift_with_the_pipeline_as_its_fix(state: State) -> None:
    updated = changed(inspected(spec_of(state)), Memory=512 * MIB, MemorySwap=512 * MIB)
    (found,) = drift.find(facts((LIVE,), updated))
    assert (found.service, found.release, found.container, found.unknown) == (
        "app",
        LIVE,
        f"app-{LIVE}",
        False,
    )
    assert found.what[0] == "memory 512 MiB, the pipeline made it 256 MiB"
    assert "`invoke deploy`" in found.fix and "services/app/service.toml" in found.fix
    assert drift.drifted([found])


def test_a_container_replaced_by_hand_with_the_same_labels_is_drift(state: State) -> None:
    by_hand = changed(inspected(spec_of(state)), Config_Image=OTHER, ReadonlyRootfs=False)
    (found,) = drift.find(facts((LIVE,), by_hand))
    assert [line.split(" ")[0] for line in found.what] == ["image", "read-only"]


def test_a_pool_release_not_running_is_drift_and_says_its_state(state: State) -> None:
    stopped = inspected(spec_of(state), status="exited")
    stopped["State"].update(ExitCode=137, OOMKilled=True)
    paused = inspected(spec_of(state, WARM), status="paused")
    found = drift.find(facts((LIVE, WARM), stopped, paused))
    assert [d.what for d in found] == [
        ("not running: exited (exit code 137, out of memory)",),
        ("not running: paused",),
    ]
    assert f"docker start app-{LIVE}" in found[0].fix and f"--release {LIVE}" in found[0].fix
    assert not any(d.unknown for d in found)


def test_a_pool_release_without_a_container_is_drift(state: State) -> None:
    (found,) = drift.find(facts((LIVE, WARM), inspected(spec_of(state))))
    assert (found.release, found.container, found.what) == (WARM, "", ("no container on prod",))
    assert f"invoke rollback --service app --to {WARM}" in found.fix


def test_a_container_without_the_label_cannot_be_checked(state: State) -> None:
    older = inspected(spec_of(state))
    del older["Config"]["Labels"][drift.MADE]
    garbled = inspected(spec_of(state, WARM))
    garbled["Config"]["Labels"][drift.MADE] = "{not json"
    found = drift.find(facts((LIVE, WARM), older, garbled))
    assert [(d.release, d.unknown) for d in found] == [(LIVE, True), (WARM, True)]
    assert "made before drift detection" in found[0].what[0]
    assert "`invoke deploy`" in found[0].fix
    assert not drift.drifted(found)


def test_a_stopped_container_out_of_the_pool_is_a_leftover_not_drift(state: State) -> None:
    leftover = inspected(spec_of(state, OLD), status="exited")
    leftover = changed(leftover, RestartPolicy={"Name": "no"})  # what it is does not matter
    known = facts((LIVE,), inspected(spec_of(state)), leftover)
    assert drift.find(known) == [] and len(drift.checked(known)) == 1


def test_a_container_running_out_of_the_pool_is_drift(state: State) -> None:
    (found,) = drift.find(facts((LIVE,), inspected(spec_of(state)), inspected(spec_of(state, OLD))))
    assert (found.release, found.unknown) == (OLD, False)
    assert found.what == ("running outside the pool: started by hand?",)
    assert f"docker rm -f app-{OLD}" in found.fix


def test_while_a_deploy_runs_what_it_may_be_changing_cannot_be_checked(state: State) -> None:
    candidate = inspected(spec_of(state, OLD))  # started, not pooled yet
    updated = changed(inspected(spec_of(state)), RestartPolicy={"Name": "no"})
    known = facts((LIVE, WARM), updated, candidate, deploying="deploy app 0123456789ab")
    by_release = {d.release: d for d in drift.find(known)}
    assert not by_release[LIVE].unknown  # a deploy never updates a container
    assert by_release[OLD].unknown and by_release[WARM].unknown
    assert "a deploy is running (deploy app 0123456789ab)" in by_release[OLD].what[1]
    assert "invoke lock.status" in by_release[WARM].fix


def test_the_text_has_a_block_per_finding_with_its_fix(state: State) -> None:
    updated = changed(inspected(spec_of(state)), RestartPolicy={"Name": "no"})
    older = inspected(spec_of(state, WARM))
    del older["Config"]["Labels"][drift.MADE]
    known = facts((LIVE, WARM), updated, older, inspected(spec_of(state, OLD)))
    found = drift.find(known)
    text = drift.render(found, drift.checked(known))
    blocks = text.split("\n\n")
    assert blocks[0] == (
        f"app {LIVE} (app-{LIVE}): drift\n"
        "  restart policy 'no', the pipeline made it 'always'\n"
        f"  fix: {drift.CHANGED_FIX.format(service='app')}"
    )
    assert blocks[1].startswith(f"app {WARM} (app-{WARM}): cannot be checked\n  no cdlab.made")
    assert blocks[2].startswith(f"app {OLD} (app-{OLD}): drift\n  running outside the pool")
    assert blocks[3] == (
        "drift: 2 finding(s), 1 cannot be checked; "
        "0 container(s) of 0 release(s) run as the pipeline made them"
    )
    only_unknown = [d for d in found if d.unknown]
    assert drift.render(only_unknown, drift.checked(known)).endswith(
        "no drift, 1 cannot be checked: 2 container(s) of 2 release(s) run as the pipeline "
        "made them"
    )


def test_the_json_is_a_list_of_the_findings(state: State) -> None:
    updated = changed(inspected(spec_of(state)), PidsLimit=1000)
    found = drift.find(facts((LIVE, WARM), updated))
    doc = json.loads(drift.as_json(found))
    assert [(d["release"], d["container"], d["unknown"]) for d in doc] == [
        (LIVE, f"app-{LIVE}", False),
        (WARM, "", False),
    ]
    assert doc[0]["what"] == ["process limit 1000, the pipeline made it 256"]
    assert json.loads(drift.as_json([])) == []


def test_no_output_carries_an_environment_value(state: State) -> None:
    spec = spec_of(state)
    secret = state.secret("db-password")
    lines = IMAGE_ENV + [f"{k}=changed-{v}" for k, v in spec["environment"].items()]
    attrs = changed(inspected(spec), Config_Env=lines)
    found = drift.find(facts((LIVE,), attrs))
    said = drift.render(found, [("app", LIVE, f"app-{LIVE}")]) + drift.as_json(found)
    assert "environment changed" in said and "changed-" not in said
    assert spec["environment"]["DATABASE_URL"] not in said
    assert secret not in said


# facts: what is read from prod


class FakeClient:
    """An engine's containers (``found``: inspect attrs) and, for the manager, its nodes."""

    def __init__(self, found: list[dict[str, Any]], nodes: tuple[dict[str, Any], ...] = ()):
        self.found, self.asked = found, list[dict[str, Any]]()
        self.containers = self
        self.nodes = SimpleNamespace(list=lambda: [SimpleNamespace(attrs=n) for n in nodes])

    def list(self, **kwargs: Any) -> list[SimpleNamespace]:
        self.asked.append(kwargs)
        return [SimpleNamespace(attrs=a) for a in self.found]


def one_host(state: State) -> config.LabConfig:
    """The topology with prod one host: no swarm, no workers."""
    return config.parse_topology(topologies.single_prod(), ROOT, state.dir)


def swarm_config(state: State) -> config.LabConfig:
    """The topology with prod a swarm of three: prod the manager, prod-2 and prod-3 workers."""
    return config.parse_topology(topologies.three_nodes(), ROOT, state.dir)


def pool_of(etcd: FakeEtcd) -> None:
    servers = (routes.Server(LIVE, f"app-{LIVE}", 100), routes.Server(WARM, f"app-{WARM}", 0))
    etcd.put_json(routes.PREFIX + "app", routes.Routes("app", servers).to_doc())


def test_facts_are_the_pools_the_inspected_release_containers_and_the_lock(state: State) -> None:
    etcd = FakeEtcd()
    pool_of(etcd)
    live = inspected(spec_of(state))
    client = FakeClient([live])
    ports = SimpleNamespace(
        etcd=etcd, config=one_host(state), engine=lambda host="prod", timeout=300: client
    )
    known = drift.facts(ports, ["app", "quotes"])  # type: ignore[arg-type]
    assert known == drift.Facts(
        (
            drift.ServiceFacts("app", frozenset({LIVE, WARM}), (live,)),
            drift.ServiceFacts("quotes", frozenset(), ()),
        ),
        "",
    )
    assert client.asked == [  # one listing of prod, every container inspected
        {"all": True, "ignore_removed": True, "filters": {"label": "cdlab.role=release"}}
    ]
    etcd.put(lock.KEY, lock.Holder("me@ws", 1, "2026-01-01T00:00:00", "deploy app x").to_json())
    assert drift.facts(ports, []).deploying == "deploy app x"  # type: ignore[arg-type]


# a prod that is a swarm: a release's containers are its service's tasks, on every node

NODE_IDS = {"prod": "n1", "prod-2": "n2", "prod-3": "n3"}


def task(spec: dict[str, Any], host: str, slot: int = 1, status: str = "running") -> dict[str, Any]:
    """``docker inspect`` of a Swarm task's container made from ``swarmspec``: its name and
    labels Swarm's, its tmpfs a mount, no security option (dockerd's), swap unset, no restart
    policy (Swarm's own)."""
    attrs = inspected(spec, status)
    attrs["Name"] = f"/{spec['name']}.{slot}.task{slot}{host[-1]}"
    labels = attrs["Config"]["Labels"]
    labels.pop("cdlab.keepalive", None)
    labels.update({drift.TASK: f"task{slot}", drift.NODE: NODE_IDS[host]})
    host_config = attrs["HostConfig"]
    host_config.update(
        Tmpfs=None,
        Mounts=[{"Type": "tmpfs", "Target": path} for path in spec["tmpfs"]],
        SecurityOpt=None,
        MemorySwap=0,
        RestartPolicy={"Name": "", "MaximumRetryCount": 0},
    )
    return attrs


def swarm_facts(
    pool: tuple[str, ...], *attrs: dict[str, Any], unreached: tuple[str, ...] = ()
) -> drift.Facts:
    nodes = tuple(sorted((nid, host) for host, nid in NODE_IDS.items()))
    why = tuple((host, "connection refused") for host in unreached)
    services = (drift.ServiceFacts("app", frozenset(pool), attrs),)
    return drift.Facts(services, "", True, nodes, why)


def test_replicas_as_swarm_made_them_are_no_drift_and_are_named_with_their_node(
    state: State,
) -> None:
    spec = spec_of(state)
    known = swarm_facts((LIVE,), *(task(spec, h, n) for n, h in enumerate(NODE_IDS, 1)))
    assert drift.find(known) == []
    assert [name for _, _, name in drift.checked(known)] == [
        f"app-{LIVE}.1.task1d on prod",
        f"app-{LIVE}.2.task22 on prod-2",
        f"app-{LIVE}.3.task33 on prod-3",
    ]


def test_a_replica_changed_by_hand_is_drift_named_with_its_node(state: State) -> None:
    spec = spec_of(state)
    updated = changed(task(spec, "prod-2", 2), Memory=300 * MIB, ReadonlyRootfs=False)
    (found,) = drift.find(swarm_facts((LIVE,), task(spec, "prod"), updated))
    assert found.container == f"app-{LIVE}.2.task22 on prod-2" and not found.unknown
    assert found.what == (
        "read-only root off, the pipeline made it on",
        "memory 300 MiB, the pipeline made it 256 MiB",
    )
    text = drift.render([found], drift.checked(swarm_facts((LIVE,), task(spec, "prod"), updated)))
    assert text.startswith(f"app {LIVE} (app-{LIVE}.2.task22 on prod-2): drift\n")


def test_an_ended_replica_is_swarms_to_replace_and_none_running_is_missing(state: State) -> None:
    spec = spec_of(state)
    ended = task(spec, "prod-3", 3, status="exited")
    assert drift.find(swarm_facts((LIVE,), task(spec, "prod"), ended)) == []
    (found,) = drift.find(
        swarm_facts(
            (LIVE, WARM), task(spec, "prod"), task(spec_of(state, WARM), "prod-2", status="exited")
        )
    )
    assert (found.release, found.what) == (WARM, ("no running replica on prod's swarm",))


def test_a_replica_running_out_of_the_pool_says_to_remove_its_service(state: State) -> None:
    spec = spec_of(state)
    (found,) = drift.find(
        swarm_facts((LIVE,), task(spec, "prod"), task(spec_of(state, OLD), "prod-3"))
    )
    assert found.release == OLD and f"docker service rm app-{OLD}" in found.fix


def test_a_node_that_does_not_answer_cannot_be_checked(state: State) -> None:
    spec = spec_of(state)
    found = drift.find(swarm_facts((LIVE,), task(spec, "prod"), unreached=("prod-3",)))
    assert [(d.unknown, d.what) for d in found] == [
        (
            True,
            (
                "swarm node prod-3 did not answer: its replicas cannot be checked "
                "(connection refused)",
            ),
        )
    ]
    assert not drift.drifted(found)
    text = drift.render(found, [])
    assert text.startswith("prod's swarm: cannot be checked\n  swarm node prod-3")


def test_facts_read_every_node_and_say_which_did_not_answer(state: State) -> None:
    etcd = FakeEtcd()
    pool_of(etcd)
    spec = spec_of(state)
    on = {"prod": [task(spec, "prod")], "prod-2": [task(spec, "prod-2", 2)]}
    cfg = swarm_config(state)
    addr = {h.name: h.address for h in cfg.hosts}
    nodes = tuple(
        {"ID": nid, "Status": {"Addr": addr[h], "State": "ready"}, "Spec": {"Role": "worker"}}
        for h, nid in NODE_IDS.items()
    )

    def engine(host: str = "prod", timeout: int = 300) -> FakeClient:
        if host == "prod-3":
            raise ConnectionError("connection refused")
        return FakeClient(on[host], nodes)

    ports = SimpleNamespace(etcd=etcd, config=cfg, engine=engine)
    known = drift.facts(ports, ["app"])  # type: ignore[arg-type]
    assert known.swarm and dict(known.nodes) == {v: k for k, v in NODE_IDS.items()}
    assert known.unreached == (("prod-3", "connection refused"),)
    assert known.services[0].containers == (on["prod"][0], on["prod-2"][0])
