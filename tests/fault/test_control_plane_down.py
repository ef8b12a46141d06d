"""Faults of the control plane and the stack, each under load (100 req/s through the proxy, a
fifth of it registrations): what must hold is asserted, failed requests and lost writes are
counted.

- etcd stopped while serving: 0 failed (the proxy keeps the routes it has); a deploy meanwhile
  is refused with a clear error and changes nothing.
- etcd stopped in the middle of a deploy: the deploy is undone cleanly (no route to the
  candidate, the candidate removed), 0 failed.
- postgres restarted in the middle of a deploy: failed requests are counted (the database is
  gone for seconds), every registration answered 201 is still there afterwards.
- the proxy killed during the switch: the deploy ends (done or undone), the routes in etcd and
  the proxy agree once it is back, the outage is measured and bounded.
"""

from __future__ import annotations

import threading
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
from tests.fault.test_fault_matrix import (
    RATE,
    WEB,
    StageStarts,
    _capture,
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


def test_etcd_stopped_while_serving_loses_nothing_and_refuses_a_deploy(
    lab: State, prod: Any
) -> None:
    live = release.current_routes(lab, "app").live
    etcd = _stack_container(prod, "etcd")
    with load.running(rate=RATE, name="fault-etcd-down") as traffic:
        time.sleep(2)
        traffic.mark("stop etcd")
        etcd.stop(timeout=5)
        try:
            time.sleep(3)
            started = time.monotonic()
            with pytest.raises(LabError) as err:
                pipeline.deploy(lab, Progress(out=None), "app", "HEAD")
            refused_in = time.monotonic() - started
            time.sleep(5)  # still serving with etcd gone
        finally:
            traffic.mark("start etcd")
            etcd.start()
        _wait("etcd answers again", lambda: release.route_store(lab).healthy(), 60)
        time.sleep(2)
        traffic.mark("end")
    loadreport.write(traffic, load.REPORTS, {"fault": "etcd stopped while serving"})
    assert "etcd" in str(err.value), err.value
    assert refused_in < 30, f"the deploy took {refused_in:.0f} s to give up"
    assert release.current_routes(lab, "app").live == live
    assert traffic.problems() == [], traffic.problems()  # the oracle saw every request
    assert traffic.rate_problem() is None, traffic.rate_problem()
    assert traffic.failed == [], f"{len(traffic.failed)} failed: {traffic.summary()['errors']}"
    assert {r.release for r in traffic.requests if r.ok} == {live}
    assert load.readback(traffic) == []


def test_etcd_stopped_in_the_middle_of_a_deploy_is_undone_cleanly(
    lab: State, prod: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    change, sha = _a_new_commit(lab, tmp_path / "clone")
    live = release.current_routes(lab, "app").live
    etcd = _stack_container(prod, "etcd")
    # the candidate started and healthy, the deploy waits before its tests: etcd goes then
    monkeypatch.setenv("CDLAB_FAILPOINTS", "tests=sleep:8")
    errors: list[BaseException] = []
    testing = StageStarts("==> [")
    with load.running(rate=RATE, name="fault-etcd-down-mid-deploy") as traffic:
        worker = threading.Thread(
            target=lambda: _capture(
                errors, lambda: pipeline.deploy(change, Progress(out=testing), "app", "HEAD")
            )
        )
        worker.start()
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
    assert not worker.is_alive(), "the deploy did not end within 120 s of etcd stopping"
    assert errors and isinstance(errors[0], LabError), errors
    assert release.current_routes(lab, "app").live == live
    _wait("the candidate removed", lambda: candidates_left(lab, sha) == [], 30)
    assert traffic.problems() == [], traffic.problems()  # the oracle saw every request
    assert traffic.rate_problem() is None, traffic.rate_problem()
    assert traffic.failed == [], f"{len(traffic.failed)} failed: {traffic.summary()['errors']}"
    assert {r.release for r in traffic.requests if r.ok} == {live}
    assert load.readback(traffic) == []
    # the lock of the run that lost etcd goes with its lease (revoking it needed etcd)
    _wait("the deploy lock is free", lambda: _lock_free(lab), 60)


def test_postgres_restarted_in_the_middle_of_a_deploy_keeps_every_registration(
    lab: State, prod: Any, tmp_path: Path
) -> None:
    change, sha = _a_new_commit(lab, tmp_path / "clone")
    live = release.current_routes(lab, "app").live
    db = _stack_container(prod, "db")
    errors: list[BaseException] = []
    records: list[Any] = []

    def deploy() -> None:
        records.append(pipeline.deploy(change, Progress(out=None), "app", "HEAD"))

    with load.running(rate=RATE, name="fault-postgres-restart") as traffic:
        worker = threading.Thread(target=lambda: _capture(errors, deploy))
        worker.start()
        _wait("the candidate runs", lambda: bool(candidates_left(lab, sha)), 180)
        traffic.mark("restart postgres")
        db.restart(timeout=10)
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
    assert not worker.is_alive(), "the deploy did not end within 240 s"
    now = release.current_routes(lab, "app").live
    if errors:  # failed and undone: the release before it serves
        assert isinstance(errors[0], LabError), errors
        assert now == live
        _wait("the candidate removed", lambda: candidates_left(lab, sha) == [], 30)
    else:
        assert now == sha and records[0].result == "succeeded"
    assert traffic.problems() == [], traffic.problems()  # the oracle saw every request
    assert lost == [], f"{len(lost)} registrations answered 201 are gone"
    assert len(traffic.registered()) > 0, "no registration was acknowledged: is the load real?"
    tail = [r for r in traffic.requests if r.t > time.time() - 3]
    assert tail and all(r.ok for r in tail), "the service did not recover from the restart"


def _healthy(container: Any) -> bool:
    container.reload()
    return bool(container.attrs["State"].get("Health", {}).get("Status") == "healthy")


def test_the_proxy_killed_during_the_switch(
    lab: State, prod: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    change, sha = _a_new_commit(lab, tmp_path / "clone")
    live = release.current_routes(lab, "app").live
    proxy = _stack_container(prod, "proxy")
    first_start = proxy.attrs["State"]["StartedAt"]
    monkeypatch.setenv("CDLAB_FAILPOINTS", "switch=sleep:3")
    switching = StageStarts("==> [")
    errors: list[BaseException] = []
    records: list[Any] = []

    def deploy() -> None:
        records.append(pipeline.deploy(change, Progress(out=switching), "app", "HEAD"))

    with load.running(rate=RATE, name="fault-proxy-killed-in-switch") as traffic:
        worker = threading.Thread(target=lambda: _capture(errors, deploy))
        worker.start()
        _wait("the switch starts", lambda: "switch" in switching.getvalue(), 240)
        traffic.mark("kill the proxy")
        proxy.kill()
        worker.join(180)
        _wait("the proxy restarted", lambda: _restarted(proxy, first_start), 60)
        time.sleep(5)
        traffic.mark("end")
    loadreport.write(traffic, load.REPORTS, {"fault": "proxy killed during the switch"})
    assert not worker.is_alive(), "the deploy did not end within 180 s"
    now = release.current_routes(lab, "app").live
    if errors:
        assert isinstance(errors[0], LabError), errors
        assert now == live
    else:
        assert now == sha and records[0].result == "succeeded"
    # what the proxy serves is what etcd says: every request of the last seconds from ``now``
    tail = [r for r in traffic.requests if r.t > time.time() - 4]
    assert tail and all(r.ok and r.release == now for r in tail), traffic.summary()["errors"]
    assert load.readback(traffic) == []
    outage = traffic.gap()
    assert outage < 10, f"the proxy answered again only after {outage:.1f} s"


def _restarted(proxy: Any, first_start: str) -> bool:
    proxy.reload()
    return bool(proxy.status == "running" and proxy.attrs["State"]["StartedAt"] != first_start)
