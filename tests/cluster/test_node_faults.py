"""A node of prod's swarm lost under load (100 req/s through the proxy, a fifth of it
registrations): nothing may fail. The proxy takes the dead node's replicas out on its own (a
failed connect, 200 ms, retried on another replica; then its checks), Swarm starts them again
on the nodes left, and the node, back, joins and takes replicas at the next deploy.

A worker's engine is killed the way a machine dies: SIGKILL to dockerd inside the host
container (dockerd is the child of the container's init; the host goes with it)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from lab.build import git
from lab.estate import rolling
from lab.estate.state import State
from lab.ports.lab import Lab
from lab.progress import Progress
from lab.proof import load, loadreport, nodefaults
from lab.release import pipeline
from tests.cluster.conftest import Cluster
from tests.fault.test_fault_matrix import WEB, clone_with

pytestmark = pytest.mark.xdist_group("cluster")  # one lab: one worker
RATE = 100
VICTIM = "prod-2"


def lost_nothing(traffic: load.Traffic, first: str, lost: list[Any]) -> None:
    """Every request under the fault answered as the plan allows, and every registration kept."""
    __tracebackhide__ = True
    assert traffic.problems() == [], traffic.problems()
    assert traffic.rate_problem() is None, traffic.rate_problem()
    assert traffic.failed == [], f"{len(traffic.failed)} failed: {traffic.summary()['errors']}"
    assert traffic.release_problems(first=first) == []
    assert lost == []


def deploy_spreads(lab: State, folder: Path, tag: str) -> dict[str, int]:
    """Deploy a one-line change of the app; it goes live; where its replicas run, by node."""
    change = clone_with(
        lab,
        folder / "clone",
        {WEB: lambda t: t.replace("<title>", f"<title>{tag} {uuid.uuid4().hex[:8]} ")},
    )
    sha = git.short(git.commit(change.config.root))
    assert pipeline.deploy(change, Progress(out=None), "app", "HEAD").result == "succeeded"
    now = nodefaults.live(lab)
    assert now.release == sha
    return nodefaults.placed(Lab(lab), now)


def test_a_worker_engine_killed_under_load_loses_nothing(
    cluster: Cluster, lab: State, tmp_path: Path
) -> None:
    ports = Lab(lab)
    before = nodefaults.live(lab)
    assert nodefaults.placed(ports, before).get(VICTIM), nodefaults.placed(ports, before)
    outcome, victim = nodefaults.worker_lost(lab, RATE, "cluster-worker-killed")
    assert victim == VICTIM
    traffic = outcome.traffic
    print(f"{VICTIM} killed: {outcome.figures()}")
    lost_nothing(traffic, before.release, outcome.lost)
    # back in the swarm, it takes replicas again: the next deploy spreads over every node
    where = deploy_spreads(lab, tmp_path, "node")
    assert where.get(VICTIM), where


def test_a_worker_stopped_under_load_loses_nothing(lab: State) -> None:
    """A worker shut down (its engine stops its containers: SIGTERM, then the host is gone)."""
    ports = Lab(lab)
    before = nodefaults.live(lab)
    victim = "prod-3"
    assert nodefaults.placed(ports, before).get(victim), nodefaults.placed(ports, before)
    outcome, _ = nodefaults.worker_lost(
        lab, RATE, "cluster-worker-stopped", how="stop", victim=victim
    )
    traffic = outcome.traffic
    print(f"{victim} stopped: {outcome.figures()}")
    lost_nothing(traffic, before.release, outcome.lost)
    assert nodefaults.node_state(ports, victim) == "ready"


def test_a_rolling_restart_of_every_worker_loses_nothing(lab: State, tmp_path: Path) -> None:
    """``invoke lab.restart-workers`` under load: each worker drained at the proxy, then in
    Swarm, restarted and back; nothing fails, every worker restarted, ready and active after,
    no address left drained."""
    ports = Lab(lab)
    before = nodefaults.live(lab)
    workers = [h.name for h in lab.config.hosts if h.swarm == "worker"]
    started = {w: nodefaults.host_started_at(lab, w) for w in workers}
    with load.running(rate=RATE, name="cluster-rolling-restart") as traffic:
        time.sleep(2)
        traffic.mark("restart the workers")
        said = rolling.restart_workers(ports, Progress(out=None))
        time.sleep(2)
        traffic.mark("end")
    loadreport.write(traffic, load.REPORTS, {"fault": "rolling restart of the workers"})
    print("\n".join(said))
    lost_nothing(traffic, before.release, load.readback(traffic))
    for w in workers:
        assert nodefaults.host_started_at(lab, w) != started[w], f"{w} was not restarted"
        assert nodefaults.node_state(ports, w) == "ready"
    listed = ports.engine("prod").nodes.list()
    assert {
        n.attrs["Spec"]["Availability"] for n in listed if n.attrs["Status"]["State"] == "ready"
    } == {"active"}
    assert ports.etcd.get_prefix("/cdlab/drained/") == {}
    # the replicas stay where Swarm moved them; the next deploy spreads over every node again
    where = deploy_spreads(lab, tmp_path, "rolled")
    assert set(where) == {h.name for h in lab.config.hosts if h.swarm}, where
