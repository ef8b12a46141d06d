"""Deploy and rollback on the lab: blue/green to a new commit, rollbacks warm and from the
registry, one deploy at a time, bad input."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from rich.console import Console

from lab.build import checks, git
from lab.errors import ConfigError
from lab.estate.state import State
from lab.ports import engines
from lab.ports.lab import Lab
from lab.ports.metrics import Graphite
from lab.progress import Progress
from lab.proof import split, watch
from lab.release import api as release
from lab.release import history, judge, lock, pipeline, records
from lab.stack import project as stack
from tests.conftest import ON_VERSION_FOR_REAL_CLIENTS, commit_in_clone, session

pytestmark = pytest.mark.xdist_group("prod")
REPORTS = Path(__file__).resolve().parents[2] / "reports"
APP = "http://127.0.0.1:8000"  # the app's frontend, published on the workstation


def served() -> str:
    return session().get(APP + "/version", timeout=5).headers["X-Release"]


@pytest.fixture(scope="module")
def other_commit(lab: State, tmp_path_factory: pytest.TempPathFactory) -> Iterator[State]:
    """A clone of the checkout with one more commit (a one-line change to the app)."""
    clone = commit_in_clone(
        lab.config.root,
        tmp_path_factory.mktemp("other") / "clone",
        "services/app/app/web.py",
        lambda text: text.replace("<title>cdlab · users</title>", "<title>B</title>"),
        "B: a one-line change",
    )
    yield lab.at(clone)


def test_deploy_rollback_and_rollback_to_a_pruned_release(
    lab: State,
    other_commit: State,
    capsys: pytest.CaptureFixture[str],
    light_load: list[tuple[float, int, str]],
) -> None:
    a = release.current_routes(lab, "app").live
    b = git.short(git.commit(other_commit.config.root))
    assert a and a != b

    rec = pipeline.deploy(other_commit, Progress(out=None), "app", "HEAD")
    assert (rec.result, rec.release, rec.previous) == ("succeeded", b, a)
    assert served() == b
    assert {"start", "healthy", "tests", "switch", "drain"} <= set(rec.timings)

    rec, seconds = pipeline.rollback(lab, Progress(out=None))
    assert (rec.release, served()) == (a, a)
    assert seconds <= 1.0, f"a warm rollback took {seconds:.3f} s"
    warm_ms = seconds * 1000

    rec, seconds = pipeline.rollback(lab, Progress(out=None))
    assert (rec.release, served()) == (b, b)

    # a's containers are gone: it is started again from the registry by digest
    release.remove(lab, "app", a, stop_timeout=5)
    rec, seconds = pipeline.rollback(lab, Progress(out=None), "app", to=a)
    assert (rec.release, served()) == (a, a)
    assert rec.timings.get("healthy") is not None, "a pruned release must be started again"
    with engines.connect(lab, lab.config.host("prod")) as prod:
        running = {
            c.labels["cdlab.release"]
            for c in prod.containers.list(filters={"label": "cdlab.service=app"})
        }
    assert running == {a, b}
    events = {e["what"] for e in Graphite().events(b, since="-10min")}
    assert {f"deploy start app-{b}", f"switch to app-{b}", f"deploy end app-{b}"} <= events
    cd = engines.local().containers.get(lab.config.container_name(lab.config.builder))
    copies = cd.exec_run(["ls", records.CD_RUNS]).output.decode()
    assert "rollback-" in copies and f"-app-{a}.json" in copies  # a copy of each record on cd
    rows = {r.release: r.status for r in history.releases(lab)}
    assert rows[a] == "live" and rows[b] == "warm"
    # a release started again is a new container at a new address: the switch to it waits
    # until the proxy's slot has that address, so no request meets the old one
    failed = [(round(t, 2), status) for t, status, _ in light_load if status != 200]
    assert light_load and not failed, f"requests that failed: {failed[:10]}"
    with capsys.disabled():
        print(f"\nwarm rollback: 100% of responses from {a} {warm_ms:.0f} ms after the switch")


def test_a_second_deploy_is_refused_while_one_holds_the_lock(lab: State) -> None:
    etcd = release.route_store(lab)
    with lock.held(etcd, "deploy app (test holder)") as holder:
        with pytest.raises(lock.LockHeld) as err:
            pipeline.deploy(lab, Progress(out=None))
        assert holder.who in str(err.value) and "deploy app (test holder)" in str(err.value)
    assert lock.current(etcd) is None  # released with its lease


def test_an_unknown_ref_is_refused_before_anything_runs(lab: State) -> None:
    before = release.current_routes(lab, "app")
    with pytest.raises(ConfigError, match="a commit, branch or tag"):
        pipeline.deploy(lab, Progress(out=None), "app", "no-such-ref")
    with pytest.raises(ConfigError, match="one of: app"):
        pipeline.deploy(lab, Progress(out=None), "nope", "HEAD")
    assert release.current_routes(lab, "app") == before


def test_rollback_to_an_unknown_release_is_refused(lab: State) -> None:
    with pytest.raises(ConfigError, match="a release deployed before"):
        pipeline.rollback(lab, Progress(out=None), "app", to="0000000000aa")


def test_invoke_releases_lists_the_live_release(lab: State) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "invoke", "releases"],
        cwd=lab.config.root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    live = release.current_routes(lab, "app").live
    assert any(line.split()[:2] == [live, "live"] for line in out.splitlines())


FAST = judge.Thresholds(min_requests=15)


def on_the_clock(seen: list[tuple[float, int, str]]) -> list[tuple[float, str]]:
    """The light load's (monotonic time, status, release) as (epoch time, release): a
    canary step's window in its record is in epoch seconds."""
    offset = time.time() - time.monotonic()
    return [(t + offset, r) for t, _, r in seen]  # a few seconds of the test's light load suffice


def proxy_said(lab: State, lines: int = 30) -> str:
    """The proxy's last lines about app (pool changes, servers UP or DOWN): what a failed split
    check needs to be understood."""
    with engines.connect(lab, lab.config.host("prod")) as prod:
        log = prod.containers.get(f"{stack.PROJECT}_proxy_1").logs(tail=500)
    about = [line for line in log.decode(errors="replace").splitlines() if "app" in line]
    return "\n".join(about[-lines:])


def canary(state: State) -> records.Record:
    """A two-step canary (25 %, then all) judged every 4 s."""
    return pipeline.deploy(
        state,
        Progress(out=None),
        "app",
        "HEAD",
        "canary",
        steps=(25, 100),
        interval=4,
        thresholds=FAST,
    )


@contextmanager
def watching(lab: State, service: str) -> Iterator[list[watch.Frame]]:
    """``invoke watch``'s frames of ``service``, read every half second in a thread while the
    block runs (bounded: 10 minutes, longer than any canary of the suite)."""
    frames: list[watch.Frame] = []
    stop = threading.Event()

    def loop() -> None:
        with Lab.of(lab) as mine:
            deadline = time.monotonic() + 600
            while not stop.wait(0.5) and time.monotonic() < deadline:
                frames.append(watch.read_frame(mine, [service]))

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    try:
        yield frames
    finally:
        stop.set()
        worker.join(10)


def test_a_canary_is_promoted_by_the_judge(
    lab: State, other_commit: State, light_load: list[tuple[float, int, str]]
) -> None:
    """... and ``invoke watch`` shows it: both releases in the pool and their shares of the
    traffic, the run and its canary stage."""
    a = release.current_routes(lab, "app").live
    b = git.short(git.commit(other_commit.config.root))
    with watching(lab, "app") as frames:
        rec = canary(other_commit)
    # both in the pool and both with traffic at the edge (the figures lag a few seconds, so
    # frames just after the last step count too); the one kept for the report is, if any, a
    # frame in which both still had weight
    both = [
        f
        for f in frames
        if {a, b} <= {x.release for x in f.services[0].figures if x.rps}
        and {a, b} <= {s.release for s in f.services[0].pool}
    ]
    assert both, f"invoke watch never showed both releases with traffic: {frames[-3:]}"
    weighted = [f for f in both if all(s.weight for s in f.services[0].pool if s.release in (a, b))]
    console = Console(width=110, record=True, color_system=None)
    console.print(watch.render((weighted or both)[-1]))
    (REPORTS / "watch-canary.txt").write_text(console.export_text())
    stages = {r.stage for f in frames for r in f.runs if r.what == f"deploy app {b}"}
    assert any(stage.endswith("canary 25%: judge after 4 s") for stage in stages), stages
    assert (rec.result, rec.strategy, served()) == ("succeeded", "canary", b)
    step = next(s for s in rec.stages if s["key"] == "canary-25")
    assert step["status"] == "changed" and "error rate 0.0%" in step["detail"]
    seen = {r for _, status, r in light_load if status == 200}
    assert {a, b} <= seen, "both releases must have served during the canary"
    assert all(status == 200 for _, status, _ in light_load)
    assert split.problems(split.shares(rec.stages, on_the_clock(light_load), b, a)) == []
    pipeline.rollback(lab, Progress(out=None), "app", to=a)  # leave the checkout's commit live
    assert served() == a


def test_a_canary_that_fails_under_real_traffic_is_aborted_by_the_judge(
    lab: State, tmp_path: Path, light_load: list[tuple[float, int, str]]
) -> None:
    """The candidate answers 500 to real clients but passes its integration tests: only the
    canary's judge can catch it, and every request must end up back on the live release."""
    a = release.current_routes(lab, "app").live
    broken = commit_in_clone(
        lab.config.root,
        tmp_path / "broken",
        "services/app/app/web.py",
        lambda text: text.replace(
            '        if path == "/version":\n',
            ON_VERSION_FOR_REAL_CLIENTS
            + '            return _json(500, {"error": "a bug only real clients hit"})\n'
            '        if path == "/version":\n',
            1,
        ),
        "C: fails under real traffic only",
    )
    c = git.short(git.commit(broken))
    state = lab.at(broken)
    with pytest.raises(release.ReleaseError, match="aborted at 25%: error rate") as err:
        canary(state)
    aborted = time.monotonic()
    assert f"Every request is back on {a}" in str(err.value)
    assert release.current_routes(lab, "app").live == a
    assert any(r == c and status == 500 for _, status, r in light_load), "C never served"
    rec = [r for r in records.history(lab.runs, "app") if r.release == c][-1]
    shares = split.shares(rec.stages, on_the_clock(light_load), c, a)
    assert shares and split.problems(shares) == [], f"{shares}; the proxy: {proxy_said(lab)}"
    time.sleep(1)
    after = [(status, r) for t, status, r in light_load if t > aborted]
    assert after and set(after) == {(200, a)}, f"after the abort: {set(after)}"
    with engines.connect(lab, lab.config.host("prod")) as prod:
        assert not prod.containers.list(all=True, filters={"label": f"cdlab.release={c}"})


def test_a_syntax_error_stops_at_static_checks_and_builds_nothing(
    lab: State, tmp_path: Path
) -> None:
    clone = commit_in_clone(
        lab.config.root,
        tmp_path / "clone",
        "services/app/app/web.py",
        lambda text: text + "\ndef broken(:\n",
        "a syntax error",
    )
    broken = lab.at(clone)
    live = served()
    with pytest.raises(checks.CheckError, match=r"services/app/app/web.py:\d+: ") as err:
        pipeline.deploy(broken, Progress(out=None), "app", "HEAD")
    assert "Nothing was built" in str(err.value)
    sha = git.short(git.commit(clone))
    assert lab.registry_client().digest("cdlab/app", sha) is None  # nothing was built
    rec = [r for r in records.history(lab.runs, "app") if r.release == sha][-1]
    assert rec.result == "failed" and rec.failed_stage == "checks"
    assert served() == live


def test_only_the_retained_releases_stay_in_the_registry(lab: State) -> None:
    from lab.stack import services

    app = services.load(lab.config.root, "app")
    from lab.ports.lab import Lab
    from lab.release import pins

    kept = release.prune(lab, app, history.deployed(lab, "app")).kept
    tags = [t for t in lab.registry_client().tags("cdlab/app") if len(t) == 12]
    pinned = pins.pinned(Lab.of(lab).etcd, "app")  # the suite pins the release it puts back
    assert set(tags) <= set(kept) and len(set(kept) - pinned) <= app.retain
    assert pinned & set(tags) <= set(kept)
    assert release.current_routes(lab, "app").live in tags
