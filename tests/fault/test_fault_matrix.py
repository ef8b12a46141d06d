"""The fault matrix, each case under load (100 req/s through the proxy): the deploy fails with a
clear message naming the stage, the live release keeps serving with 0 failed requests, no route
ever points at the broken candidate, and its containers are gone."""

from __future__ import annotations

import io
import re
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lab.build import git
from lab.errors import ConfigError, LabError
from lab.estate.state import State
from lab.ports import engines
from lab.progress import Progress
from lab.proof import load, loadreport, nodefaults, outage
from lab.release import api as release
from lab.release import pipeline, records
from lab.stack import project as stack
from tests import conftest
from tests.conftest import FaultRow

pytestmark = pytest.mark.xdist_group("prod")
RATE = 100


def clone_with(lab: State, where: Path, changes: dict[str, Callable[[str], str]]) -> State:
    root = conftest.clone_with(lab.config.root, where, changes, "a fault on purpose")
    return lab.at(root)


class StageStarts(io.StringIO):
    """A progress stream that notes when a stage whose line starts with ``marker`` begins."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker, self.seen = marker, threading.Event()

    def write(self, text: str) -> int:
        if text.startswith(self.marker):
            self.seen.set()
        return super().write(text)


def candidates_left(lab: State, release_id: str) -> list[str]:
    with engines.connect(lab, lab.config.host("prod")) as prod:
        # a deploy's one-off containers come and go: one gone between list and inspect is gone
        found = prod.containers.list(
            all=True, filters={"label": f"cdlab.release={release_id}"}, ignore_removed=True
        )
        return [c.name for c in found]


WEB = "services/app/app/web.py"
WSGI = "services/app/app/wsgi.py"
TOML = "services/app/service.toml"


def top_level(line: str) -> Callable[[str], str]:
    """A manifest edit adding ``line`` as a top-level key: before its first table (appended
    after ``[migrate]`` it would be that table's, and refused as unknown there)."""

    def edit(text: str) -> str:
        first = re.search(r"^\[", text, re.M)
        return (
            text[: first.start()] + line + "\n" + text[first.start() :]
            if first
            else text + line + "\n"
        )

    return edit


STORE = "services/app/app/store.py"

CRASH_AS_A_RELEASE = (
    '\nif "IMAGE" in __import__("os").environ:\n    raise SystemExit("crashing on purpose")\n'
)

CASES: dict[str, tuple[dict[str, Callable[[str], str]], str, str]] = {
    # case: (changes, the stage that must fail, words the error must contain)
    "unit tests fail": (
        {
            "services/app/tests/unit/test_web.py": lambda t: (
                t + "\n\ndef test_broken_on_purpose() -> None:\n    assert 1 + 1 == 3\n"
            )
        },
        "image-app",
        "could not build image",
    ),
    "the integration-test image does not build": (
        # built while the candidate starts (off the critical path): its failure still stops
        # the deploy before any user reaches the candidate, which is removed
        {"services/app/Dockerfile.test": lambda t: t.replace("COPY tests/api", "COPY tests/nope")},
        "tests",  # the test image, built meanwhile, is awaited by the tests step
        "could not build image",
    ),
    "integration tests fail": (
        {WEB: lambda t: t.replace("<h1>Users</h1>", "<h1>Nobody</h1>")},
        "tests",
        "integration tests failed against",
    ),
    "health says 200 while the service is broken": (
        # registrations fail against the real database only: the unit tests (in-memory store)
        # pass, /health (a SELECT 1) says 200; the integration tests must catch it
        {
            STORE: lambda t: t.replace(
                "        (row,) = self._run(\n",
                '        raise RuntimeError("broken on purpose")\n        (row,) = self._run(\n',
            )
        },
        "tests",
        "integration tests failed against",
    ),
    "the candidate crashes on start": (
        # gunicorn's master lives on and respawns the crashing workers: no container restart,
        # so the health wait is what ends it (10 s here), with the crash in the log's tail
        {
            # (only where it runs as a release, IMAGE set: the unit tests import the module)
            WSGI: lambda t: t + CRASH_AS_A_RELEASE,
            TOML: top_level("health_timeout = 10"),
        },
        "healthy",
        "exited with code",
    ),
    "the candidate starts slower than its health timeout": (
        {
            # (only as a release: the unit tests in the build import the module too)
            WSGI: lambda t: (
                'if "IMAGE" in __import__("os").environ:\n    __import__("time").sleep(60)\n' + t
            ),
            TOML: top_level("health_timeout = 5"),
        },
        "healthy",
        "did not become healthy within 5 s",
    ),
    "a broken manifest": (
        {TOML: lambda t: t.replace("port = 8000", 'port = "eight thousand"', 1)},
        "",
        "bad value for 'port'",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_candidate_never_reaches_users(
    lab: State, tmp_path: Path, case: str, fault_row: FaultRow
) -> None:
    changes, stage, words = CASES[case]
    broken = clone_with(lab, tmp_path / "clone", changes)
    sha = git.short(git.commit(broken.config.root))
    live = release.current_routes(lab, "app").live
    name = "fault-" + case.replace(" ", "-")
    with load.running(rate=RATE, name=name) as traffic:
        traffic.mark(f"deploy {sha} ({case})")
        with pytest.raises(LabError) as err:
            pipeline.deploy(broken, Progress(out=None), "app", "HEAD")
        time.sleep(2)  # and the live release goes on serving
        traffic.mark("end")
    loadreport.write(traffic, load.REPORTS, {"fault": case})
    lost = load.readback(traffic)
    fault_row(
        case,
        f"a deploy of a commit where {case}",
        len(traffic.failed),
        traffic.gap(),
        len(lost),
        f"the deploy fails ({f'at {stage!r}' if stage else 'on the manifest'}), only the live "
        "release answers, no candidate left; 0 failed, 0 lost",
    )
    assert words in str(err.value)
    if stage:
        rec = [r for r in records.history(lab.runs, "app") if r.release == sha][-1]
        assert rec.result == "failed" and (rec.failed_stage or "").startswith(stage), rec
        if stage in ("healthy", "tests"):  # started, then taken out again
            assert set(rec.undone) >= {"start"}, f"the candidate's start was not undone: {rec}"
    else:
        assert isinstance(err.value, ConfigError)
    assert release.current_routes(lab, "app").live == live
    assert candidates_left(lab, sha) == []
    assert traffic.problems() == [], traffic.problems()  # the oracle saw every request
    assert traffic.rate_problem() is None, traffic.rate_problem()
    assert traffic.failed == [], f"{len(traffic.failed)} failed: {traffic.summary()['errors']}"
    assert {r.release for r in traffic.requests if r.ok} == {live}
    assert lost == []  # nothing registered under the fault was lost


def test_the_registry_down_during_a_push_fails_cleanly(
    lab: State, tmp_path: Path, fault_row: FaultRow
) -> None:
    broken = clone_with(lab, tmp_path / "clone", {WEB: lambda t: t.replace("<title>", "<title>r ")})
    live = release.current_routes(lab, "app").live
    registry = engines.local().containers.get(lab.config.container_name(lab.config.registry))
    with load.running(rate=RATE, name="fault-registry-down") as traffic:
        registry.stop(timeout=5)
        try:
            with pytest.raises(LabError) as err:
                pipeline.deploy(broken, Progress(out=None), "app", "HEAD")
        finally:
            registry.start()
        traffic.mark("end")
    loadreport.write(traffic, load.REPORTS, {"fault": "registry down"})
    fault_row(
        "the registry down during a push",
        "the registry host stopped before a deploy pushes its image",
        len(traffic.failed),
        traffic.gap(),
        None,
        "the deploy fails naming the registry, the live release kept; 0 failed",
    )
    assert "registry" in str(err.value).lower()
    assert release.current_routes(lab, "app").live == live
    assert traffic.problems() == [], traffic.problems()  # the oracle saw every request
    assert traffic.rate_problem() is None, traffic.rate_problem()
    assert traffic.failed == []
    from lab.estate import lifecycle

    lifecycle.wait_registry(lab, timeout=60)


def test_two_deploys_at_once_one_is_refused(lab: State, fault_row: FaultRow) -> None:

    from lab.release import lock

    etcd = release.route_store(lab)
    with lock.held(etcd, "deploy app (the first of two)"):
        worker = Background(lambda: pipeline.rollback(lab, Progress(out=None)))
        worker.join(60)
    fault_row(
        "two deploys at once",
        "a rollback while another run holds the deploy lock (no load)",
        None,
        None,
        None,
        "the second run is refused (LockHeld), naming the first",
    )
    assert worker.errors and isinstance(worker.errors[0], lock.LockHeld)
    assert "the first of two" in str(worker.errors[0])


class Background:
    """``fn`` run on a thread of its own (a deploy while the test injects a fault): what it
    returned (``results``) or raised (``errors``), handed to the test's thread."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.results: list[Any] = []
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], object]) -> None:
        try:
            self.results.append(fn())
        except BaseException as exc:  # handed to the test's thread
            self.errors.append(exc)

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def is_alive(self) -> bool:
        return self.thread.is_alive()


def test_prod_engine_restart_brings_the_stack_and_the_live_release_back(
    lab: State, fault_row: FaultRow
) -> None:
    live = release.current_routes(lab, "app").live
    outcome = nodefaults.engine_restarted(lab, RATE, "fault-prod-restart")
    traffic, back, lost = outcome.traffic, outcome.timings["back_s"], outcome.lost
    fault_row(
        "prod's engine restarted",
        "the prod host (its engine, the stack, the releases) restarted under load",
        len(traffic.failed),
        traffic.gap(),
        len(lost),
        "the stack and the live release come back within 150 s; 0 lost",
    )
    assert release.current_routes(lab, "app").live == live
    tail = [r for r in traffic.requests if r.t > time.time() - 3]
    assert tail and all(r.ok and r.release == live for r in tail)
    assert traffic.problems() == [], traffic.problems()  # the oracle saw every request
    assert lost == []  # every registration answered 201 survived the restart
    assert back < 150, f"prod served again only after {back:.0f} s"


def test_the_proxy_killed_under_load_is_back_within_seconds(
    lab: State, fault_row: FaultRow
) -> None:
    """Killed (SIGKILL) mid-load: a bounded, measured outage; the host's keeper restarts it and
    the routes come back from etcd."""
    live = release.current_routes(lab, "app").live
    with (
        engines.connect(lab, lab.config.host("prod")) as prod,
        load.running(rate=RATE, name="fault-proxy-killed") as traffic,
    ):
        time.sleep(2)
        out = outage.kill_and_wait(prod.containers.get(f"{stack.PROJECT}_proxy_1"), traffic)
        time.sleep(1)
        traffic.mark("end")
    assert out.restarted, "the proxy was not started again within 30 s of being killed"
    killed, back = out.killed, out.back_s(traffic.requests)
    after = [r for r in traffic.requests if r.t > killed]
    loadreport.write(traffic, load.REPORTS, {"fault": "proxy killed", "outage_s": round(back, 2)})
    fault_row(
        "the proxy killed",
        "SIGKILL to the proxy's container under load",
        len(traffic.failed),
        traffic.gap(),
        None,
        "the host's keeper restarts it, routes from etcd: answering again within 10 s, "
        "then without a failure",
    )
    assert back < 10, f"the proxy answered again without failures only after {back:.1f} s"
    steady = [r for r in after if r.t >= killed + back]
    assert len(steady) > RATE * 3 * 0.8, f"only {len(steady)} requests after the proxy came back"
    assert all(r.release == live for r in after if r.ok)


def test_cd_stopped_mid_deploy_leaves_prod_consistent(
    lab: State, tmp_path: Path, fault_row: FaultRow
) -> None:
    """The cd host (the builder) goes down during a deploy: the run fails, prod keeps serving its
    live release with no candidate left, and the next deploy (cd back) succeeds."""

    slow = "\n\ndef test_slow_on_purpose() -> None:\n    import time\n\n    time.sleep(4)\n"
    change = clone_with(
        lab,
        tmp_path / "clone",
        {  # a build of some seconds (a slow unit test), so the stop lands inside it
            # unique each run: a change built before would come from the builder's cache
            WEB: lambda t: t.replace("<title>", f"<title>cd {uuid.uuid4().hex[:8]} "),
            "services/app/tests/unit/test_web.py": lambda t: t + slow,
        },
    )
    sha = git.short(git.commit(change.config.root))
    live = release.current_routes(lab, "app").live
    cd = engines.local().containers.get(lab.config.container_name(lab.config.builder))
    building = StageStarts("==> image app:")
    with load.running(rate=RATE, name="fault-cd-stopped") as traffic:
        worker = Background(lambda: pipeline.deploy(change, Progress(out=building), "app", "HEAD"))
        assert building.seen.wait(120), "the deploy never reached the app's build"
        time.sleep(1.0)  # into the build on cd
        traffic.mark("stop the cd host")
        cd.stop(timeout=5)
        worker.join(300)
        traffic.mark("end")
    loadreport.write(traffic, load.REPORTS, {"fault": "cd stopped mid-deploy"})
    lost = load.readback(traffic)
    fault_row(
        "cd stopped mid-deploy",
        "the cd host (the builder) stopped during the app's build",
        len(traffic.failed),
        traffic.gap(),
        len(lost),
        "the deploy fails, the live release kept, no candidate left; 0 failed, 0 lost; the "
        "next deploy succeeds",
    )
    cd.start()
    engines.wait_ready(lab, lab.config.builder, timeout=120)
    assert worker.errors and isinstance(worker.errors[0], LabError), worker.errors
    assert release.current_routes(lab, "app").live == live
    assert candidates_left(lab, sha) == []
    assert traffic.problems() == [], traffic.problems()  # the oracle saw every request
    assert traffic.rate_problem() is None, traffic.rate_problem()
    assert traffic.failed == [] and lost == []
    rec = pipeline.deploy(change, Progress(out=None), "app", "HEAD")  # cd is back: it goes
    assert rec.result == "succeeded" and release.current_routes(lab, "app").live == sha
