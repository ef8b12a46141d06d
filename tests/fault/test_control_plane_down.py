"""Faults of the control plane and the stack, each under load (100 req/s through the proxy, a
fifth of it registrations): what must hold is asserted, failed requests and lost writes are
counted.

- etcd stopped while serving: 0 failed (the proxy keeps the routes it has); the next deploy
  starts the stack's stopped parts first (etcd among them), then goes on: 0 failed.
- etcd stopped in the middle of a deploy: the deploy is undone cleanly (no route to the
  candidate, the candidate removed), 0 failed.
- postgres restarted in the middle of a deploy: failed requests are counted (the database is
  gone for seconds), every registration answered 201 is still there afterwards.
- the proxy killed during the switch: the deploy ends (done or undone), the routes in etcd and
  the proxy agree once it is back, the outage is measured and bounded.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.build import git
from lab.errors import LabError
from lab.estate.state import State
from lab.ports import engines
from lab.progress import Progress
from lab.proof import load, loadreport
from lab.release import api as release
from lab.release import lock, pipeline
from lab.stack import project as stack
from tests.conftest import FaultRow
from tests.fault.test_fault_matrix import (
    RATE,
    WEB,
    Background,
    StageStarts,
    candidates_left,
    clone_with,
)

pytestmark = pytest.mark.xdist_group("prod")


def _stack_container(client: Any, service: str) -> Any:
    return client.containers.get(f"{stack.PROJECT}_{service}_1")


def _a_new_commit(lab: State, where: Path) -> tuple[State, str]:
    """A clone with a change of its own (a new image each run: never from the build cache)."""
    change = clone_with(
        lab, where, {WEB: lambda t: t.replace("<title>", f"<title>cp {uuid.uuid4().hex[:8]} ")}
    )
    return change, git.short(git.commit(change.config.root))


def _wait(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:
            if check():
                return
            last = "not yet"
        except LabError as exc:
            last = str(exc).splitlines()[0]
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last})")


def _lock_free(lab: State) -> bool:
    return lock.current(release.route_store(lab)) is None


@pytest.fixture
def prod(lab: State) -> Iterator[Any]:
    with engines.connect(lab, lab.config.host("prod"), timeout=120) as client:
        yield client


def test_etcd_stopped_while_serving_loses_nothing_and_the_next_deploy_brings_it_back(
    lab: State, prod: Any, tmp_path: Path, fault_row: FaultRow
) -> None:
    change, sha = _a_new_commit(lab, tmp_path / "clone")
    live = release.current_routes(lab, "app").live
    etcd = _stack_container(prod, "etcd")
    stages = StageStarts("==> [")
    with load.running(rate=RATE, name="fault-etcd-down") as traffic:
        time.sleep(2)
        traffic.mark("stop etcd")
        etcd.stop(timeout=5)
        try:
            time.sleep(8)  # serving with etcd gone: the proxy keeps the routes it has
            etcd.reload()
            assert etcd.status == "exited", f"etcd is {etcd.status}, not stopped"
            down = [r for r in traffic.seen_so_far() if r.t > traffic.marks[-1][0]]
            # a deploy meanwhile starts the stack's missing parts first, then goes on
            with traffic.operation("deploy with etcd stopped", target=sha):
                record = pipeline.deploy(change, Progress(out=stages), "app", "HEAD")
        finally:
            etcd.reload()
            if etcd.status != "running":
                etcd.start()
        time.sleep(2)
        traffic.mark("end")
    loadreport.write(traffic, load.REPORTS, {"fault": "etcd stopped while serving"})
    lost = load.readback(traffic)
    fault_row(
        "etcd stopped while serving",
        "etcd stopped for some 10 s under load; a deploy started meanwhile",
        len(traffic.failed),
        traffic.gap(),
        len(lost),
        "the proxy keeps its routes: 0 failed, 0 lost; the deploy starts etcd again and goes on",
    )
    assert len(down) > RATE * 6, f"only {len(down)} requests while etcd was down"
    assert "container(s) (re)created or started" in stages.getvalue(), stages.getvalue()
    assert record.result == "succeeded" and release.current_routes(lab, "app").live == sha
    assert traffic.problems() == [], traffic.problems()  # the oracle saw every request
    assert traffic.rate_problem() is None, traffic.rate_problem()
    assert traffic.failed == [], f"{len(traffic.failed)} failed: {traffic.summary()['errors']}"
    assert traffic.release_problems(first=live) == []
    assert lost == []


def test_etcd_stopped_in_the_middle_of_a_deploy_is_undone_cleanly(
    lab: State, prod: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault_row: FaultRow
) -> None:
    change, sha = _a_new_commit(lab, tmp_path / "clone")
    live = release.current_routes(lab, "app").live
    etcd = _stack_container(prod, "etcd")
    # the candidate started and healthy, the deploy waits before its tests: etcd goes then
    monkeypatch.setenv("CDLAB_FAILPOINTS", "tests=sleep:8")
    testing = StageStarts("==> [")
    with load.running(rate=RATE, name="fault-etcd-down-mid-deploy") as traffic:
        worker = Background(lambda: pipeline.deploy(change, Progress(out=testing), "app", "HEAD"))
        _wait("the candidate runs", lambda: bool(candidates_left(lab, sha)), 180)
        time.sleep(2)
        traffic.mark("stop etcd")
        etcd.stop(timeout=5)
        try:
            worker.join(120)
        finally:
            traffic.mark("start etcd")
            etcd.start()
        _wait("etcd answers again", lambda: release.route_store(lab).healthy(), 60)
        time.sleep(2)
        traffic.mark("end")
    loadreport.write(traffic, load.REPORTS, {"fault": "etcd stopped mid-deploy"})
    lost = load.readback(traffic)
    fault_row(
        "etcd stopped mid-deploy",
        "etcd stopped while a deploy's candidate runs, before its integration tests",
        len(traffic.failed),
        traffic.gap(),
        len(lost),
        "the deploy undone: no route to the candidate, the candidate removed, the lock freed; "
        "0 failed, 0 lost",
    )
    assert not worker.is_alive(), "the deploy did not end within 120 s of etcd stopping"
    assert worker.errors and isinstance(worker.errors[0], LabError), worker.errors
    assert release.current_routes(lab, "app").live == live
    _wait("the candidate removed", lambda: candidates_left(lab, sha) == [], 30)
    assert traffic.problems() == [], traffic.problems()  # the oracle saw every request
    assert traffic.rate_problem() is None, traffic.rate_problem()
    assert traffic.failed == [], f"{len(traffic.failed)} failed: {traffic.summary()['errors']}"
    assert {r.release for r in traffic.requests if r.ok} == {live}
    assert lost == []
    # the lock of the run that lost etcd goes with its lease (revoking it needed etcd)
    _wait("the deploy lock is free", lambda: _lock_free(lab), 60)


def test_postgres_restarted_in_the_middle_of_a_deploy_keeps_every_registration(
    lab: State, prod: Any, tmp_path: Path, fault_row: FaultRow
) -> None:
    change, sha = _a_new_commit(lab, tmp_path / "clone")
    live = release.current_routes(lab, "app").live
    db = _stack_container(prod, "db")

    with load.running(rate=RATE, name="fault-postgres-restart") as traffic:
        worker = Background(lambda: pipeline.deploy(change, Progress(out=None), "app", "HEAD"))
        try:
            _wait("the candidate runs", lambda: bool(candidates_left(lab, sha)), 180)
            traffic.mark("restart postgres")
            db.restart(timeout=10)
        finally:  # a failure here must not leave the deploy running into the next test
            worker.join(240)
        _wait("postgres healthy", lambda: _healthy(db), 90)
        time.sleep(3)
        traffic.mark("end")
    lost = load.readback(traffic)
    loadreport.write(
        traffic,
        load.REPORTS,
        {"fault": "postgres restarted mid-deploy", "lost": len(lost)},
    )
    fault_row(
        "postgres restarted mid-deploy",
        "postgres restarted while a deploy's candidate runs",
        len(traffic.failed),
        traffic.gap(),
        len(lost),
        "failed requests counted (the database gone for seconds); every registration "
        "answered 201 still there; the deploy done or undone; the service recovers",
    )
    assert not worker.is_alive(), "the deploy did not end within 240 s"
    now = release.current_routes(lab, "app").live
    if worker.errors:  # failed and undone: the release before it serves
        assert isinstance(worker.errors[0], LabError), worker.errors
        assert now == live
        _wait("the candidate removed", lambda: candidates_left(lab, sha) == [], 30)
    else:
        assert now == sha and worker.results[0].result == "succeeded"
    assert traffic.problems() == [], traffic.problems()  # the oracle saw every request
    assert lost == [], f"{len(lost)} registrations answered 201 are gone"
    assert len(traffic.registered()) > 0, "no registration was acknowledged: is the load real?"
    tail = [r for r in traffic.requests if r.t > time.time() - 3]
    assert tail and all(r.ok for r in tail), "the service did not recover from the restart"


def _healthy(container: Any) -> bool:
    container.reload()
    return bool(container.attrs["State"].get("Health", {}).get("Status") == "healthy")


def test_the_proxy_killed_during_the_switch(
    lab: State, prod: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault_row: FaultRow
) -> None:
    change, sha = _a_new_commit(lab, tmp_path / "clone")
    live = release.current_routes(lab, "app").live
    proxy = _stack_container(prod, "proxy")
    first_start = proxy.attrs["State"]["StartedAt"]
    monkeypatch.setenv("CDLAB_FAILPOINTS", "switch=sleep:3")
    switching = StageStarts("==> [")

    with load.running(rate=RATE, name="fault-proxy-killed-in-switch") as traffic:
        worker = Background(lambda: pipeline.deploy(change, Progress(out=switching), "app", "HEAD"))
        _wait("the switch starts", lambda: "switch" in switching.getvalue(), 240)
        traffic.mark("kill the proxy")
        proxy.kill()
        worker.join(180)
        _wait("the proxy restarted", lambda: _restarted(proxy, first_start), 60)
        time.sleep(5)
        traffic.mark("end")
    loadreport.write(traffic, load.REPORTS, {"fault": "proxy killed during the switch"})
    lost = load.readback(traffic)
    outage = traffic.gap()
    fault_row(
        "the proxy killed during the switch",
        "SIGKILL to the proxy's container as a deploy's switch starts",
        len(traffic.failed),
        outage,
        len(lost),
        "the deploy done or undone; the proxy serves what etcd says; outage < 10 s; 0 lost",
    )
    assert not worker.is_alive(), "the deploy did not end within 180 s"
    now = release.current_routes(lab, "app").live
    if worker.errors:
        assert isinstance(worker.errors[0], LabError), worker.errors
        assert now == live
    else:
        assert now == sha and worker.results[0].result == "succeeded"
    # what the proxy serves is what etcd says: every request of the last seconds from ``now``
    tail = [r for r in traffic.requests if r.t > time.time() - 4]
    assert tail and all(r.ok and r.release == now for r in tail), traffic.summary()["errors"]
    assert lost == []
    assert outage < 10, f"the proxy answered again only after {outage:.1f} s"


def _restarted(proxy: Any, first_start: str) -> bool:
    proxy.reload()
    return bool(proxy.status == "running" and proxy.attrs["State"]["StartedAt"] != first_start)
