"""A node of prod's swarm lost under load (100 req/s through the proxy, a fifth of it
registrations): nothing may fail. The proxy takes the dead node's replicas out on its own (a
failed connect, 200 ms, retried on another replica; then its checks), Swarm starts them again
on the nodes left, and the node, back, joins and takes replicas at the next deploy.

A worker's engine is killed the way a machine dies: SIGKILL to dockerd inside the host
container (dockerd is the child of the container's init; the host goes with it)."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from lab.build import git
from lab.estate import swarm as estate_swarm
from lab.estate.state import State
from lab.ports.lab import Lab
from lab.progress import Progress
from lab.proof import load, loadreport
from lab.release import api as release
from lab.release import pipeline, replicas, swarm
from lab.release.model import Candidate
from lab.stack import services
from tests.cluster.conftest import Cluster
from tests.fault.test_fault_matrix import WEB, clone_with

pytestmark = pytest.mark.xdist_group("cluster")  # one lab: one worker
RATE = 100
VICTIM = "prod-2"


def _wait(what: str, check: Callable[[], str], timeout: float) -> float:
    """Poll ``check`` (it returns "" when done, else what it saw) for ``timeout`` seconds."""
    started, last = time.monotonic(), "not checked"
    while time.monotonic() - started < timeout:
        last = check()
        if not last:
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last})")


def _live(lab: State) -> Candidate:
    rel = release.current_routes(lab, "app").live
    assert rel is not None
    return Candidate(services.load(lab.config.root, "app"), rel, "")


def _placed(lab: Lab, c: Candidate) -> dict[str, int]:
    """Running replicas of ``c`` by node host."""
    nodes = swarm.node_hosts(lab)
    found: dict[str, int] = {}
    for r in replicas.running(swarm.tasks(lab, c)):
        host = nodes.get(r.node, "?")
        found[host] = found.get(host, 0) + 1
    return found


def _node_state(lab: Lab, host: str) -> str:
    address = lab.config.host(host).address
    listed = estate_swarm.members(lab.config, lambda h: lab.engine(h.name, timeout=10))
    if isinstance(listed, str):
        return listed
    return next((m.state for m in listed if m.address == address), "not listed")


@pytest.mark.xfail(
    reason="not yet reliable (2026-12-03, two runs): once 26 of 2,154 requests timed out (5 s) "
    "when prod-2's engine was killed at 100 req/s (~10 in flight on the dead node at the kill, "
    "~16 some 18 s later when Swarm declared it Down), once 0 of 2,400; issue 18",
    strict=False,
)
def test_a_worker_engine_killed_under_load_loses_nothing(
    cluster: Cluster, lab: State, tmp_path: Path
) -> None:
    ports = Lab(lab)
    live = _live(lab)
    wanted = sum(_placed(ports, live).values())
    assert _placed(ports, live).get(VICTIM), f"no replica on {VICTIM}: {_placed(ports, live)}"
    host = cluster.host(VICTIM)
    try:
        with load.running(rate=RATE, name="cluster-worker-killed") as traffic:
            time.sleep(3)
            traffic.mark(f"kill {VICTIM}'s engine")
            subprocess.run(
                ["docker", "exec", host, "sh", "-c", "kill -KILL $(cat /var/run/docker.pid)"],
                check=True,
                capture_output=True,
            )

            def elsewhere() -> str:
                placed = _placed(ports, live)
                where = {h: n for h, n in placed.items() if h != VICTIM}
                return "" if sum(where.values()) >= wanted else f"running: {placed}"

            moved = _wait("every replica running on the nodes left", elsewhere, 90)
            time.sleep(3)
            traffic.mark("end")
    finally:
        subprocess.run(["docker", "start", host], capture_output=True)
    loadreport.write(traffic, load.REPORTS, {"fault": f"{VICTIM}'s engine killed"})

    def ready() -> str:
        now = _node_state(ports, VICTIM)
        return "" if now == "ready" else now

    back = _wait(f"{VICTIM} ready again", ready, 120)
    print(f"replicas elsewhere after {moved:.1f} s; {VICTIM} ready {back:.1f} s after start")
    assert traffic.problems() == [], traffic.problems()
    assert traffic.rate_problem() is None, traffic.rate_problem()
    assert traffic.failed == [], f"{len(traffic.failed)} failed: {traffic.summary()['errors']}"
    assert traffic.release_problems(first=live.release) == []
    assert load.readback(traffic) == []
    # back in the swarm, it takes replicas again: the next deploy spreads over every node
    change = clone_with(
        lab,
        tmp_path / "clone",
        {WEB: lambda t: t.replace("<title>", f"<title>node {uuid.uuid4().hex[:8]} ")},
    )
    sha = git.short(git.commit(change.config.root))
    record = pipeline.deploy(change, Progress(out=None), "app", "HEAD")
    assert record.result == "succeeded"
    assert _placed(ports, _live(lab)).get(VICTIM), _placed(ports, _live(lab))
    assert _live(lab).release == sha
