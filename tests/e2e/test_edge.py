"""Any service, unmodified, measured at the edge: pypiserver (a package index from PyPI that
cdlab did not write; no /version, no X-Release, no metrics of its own) deployed, rolled back and
canaried under 300 req/s on its own port; a candidate judged on what the proxy saw, not on what
it says about itself; each canary step's split checked against its weight, by the edge and by
the load oracle, with a negative control (a weight the proxy does not apply)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.build import git
from lab.errors import ConfigError, ReleaseError
from lab.estate.state import State
from lab.ports import engines
from lab.ports.lab import Lab
from lab.ports.metrics import Graphite
from lab.progress import Progress
from lab.proof import load, split
from lab.release import api as release
from lab.release import judge, pipeline, records
from lab.release.routes import host_name
from lab.stack import dashboard, services
from tests.conftest import ON_VERSION_FOR_REAL_CLIENTS, commit_in_clone, edit_and_commit

pytestmark = pytest.mark.xdist_group("prod")
PYPI = "http://127.0.0.1:8002"
SERVICE = "pypiserver"
RATE = 300
FAST = judge.Thresholds(min_requests=30)


def canary(
    state: State,
    service: str,
    ref: str,
    steps: tuple[int, ...],
    interval: float,
    thresholds: judge.Thresholds,
) -> records.Record:
    return pipeline.deploy(
        state,
        Progress(out=None),
        service,
        ref,
        "canary",
        steps=steps,
        interval=interval,
        thresholds=thresholds,
    )


def last_record(lab: State, service: str, release_id: str) -> records.Record:
    found = [
        r
        for r in records.history(lab.runs, service, release.route_store(lab))
        if r.release == release_id
    ]
    assert found, f"no record of {service} {release_id}"
    return found[-1]


@pytest.fixture(scope="module")
def pypi(lab: State, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[State, str, str]]:
    """A clone with two more commits of pypiserver: B (a note in its README: a good release)
    and C on top (its configuration broken: a hash algorithm pypiserver accepts at start but
    cannot use, so two of its five load pages answer 500). Both built before any load."""
    clone = commit_in_clone(
        lab.config.root,
        tmp_path_factory.mktemp("pypi") / "clone",
        "services/pypiserver/README.md",
        lambda text: text + "\nB: a note.\n",
        "B: a note in pypiserver's README",
    )
    b = git.commit(clone)
    c = edit_and_commit(
        clone,
        {"services/pypiserver/Dockerfile": lambda t: t.replace('"sha256"', '"shake_128"', 1)},
        "C: pypiserver's hash algorithm misconfigured",
    )
    first = release.current_routes(lab, SERVICE).live
    state = lab.at(clone)
    svc = services.load(clone, SERVICE)
    for sha in (b, c):
        pipeline.build(state, Progress(out=None), svc, sha)
    yield state, git.short(b), git.short(c)
    if release.current_routes(lab, SERVICE).live != first:  # as it was, whatever a test left
        pipeline.rollback(lab, Progress(out=None), SERVICE, to=first)


def test_a_third_party_service_deployed_rolled_back_and_canaried_under_load(
    lab: State, pypi: tuple[State, str, str]
) -> None:
    state, b, c = pypi
    svc = services.load(lab.config.root, SERVICE)
    a = release.current_routes(lab, SERVICE).live
    assert a and b != a
    with load.running(rate=RATE, name="third-party", url=PYPI, paths=svc.load_paths) as traffic:
        time.sleep(2)
        with traffic.operation(f"deploy {b}", target=b):
            rec = pipeline.deploy(state, Progress(out=None), SERVICE, b)
        assert (rec.result, rec.release) == ("succeeded", b)
        with traffic.operation(f"rollback to {a}", target=a):
            pipeline.rollback(lab, Progress(out=None), SERVICE, to=a)
        time.sleep(1)  # the rollback's target seen live under load before the canary starts
        canary_began = time.time()
        with pytest.raises(ReleaseError, match="aborted at 25%: error rate") as err:
            canary(state, SERVICE, c, (25, 100), 4, FAST)
        aborted = time.time()
        time.sleep(2)
    assert f"Every request is back on {a}" in str(err.value)
    assert release.current_routes(lab, SERVICE).live == a
    requests = traffic.requests
    before = [r for r in requests if r.t < canary_began]
    assert len(before) > RATE * 5, "the load did not run"
    assert [r for r in before if not r.ok] == [], "requests failed during the deploy or rollback"
    assert {r.release for r in before} <= {a, b}, "an answer without the proxy's X-Release"
    assert load.release_problems(before, a, traffic.operations) == []
    failed = [r for r in requests if not r.ok]
    assert failed, "the broken candidate never failed a request: the canary judged nothing"
    assert {r.release for r in failed} == {c}, "only the candidate's share may fail"
    assert {r.status for r in failed} == {500}
    after = [r for r in requests if r.t > aborted + 1]
    assert after and {(r.status, r.release) for r in after} == {(200, a)}
    # the record gives the figures the judge used, and they are the edge's
    rec = last_record(lab, SERVICE, c)
    step = next(s for s in rec.stages if s["key"] == "canary-25")
    fig = step["figures"]
    assert step["status"] == "failed" and fig["weight_pct"] == 25
    assert fig["candidate_errors"] > 0 and fig["live_errors"] == 0
    assert fig["candidate_errors"] / fig["candidate_requests"] > FAST.max_error_rate
    seen = [(r.t, r.release) for r in requests]
    assert split.problems(split.shares(rec.stages, seen, c, a)) == []
    # its request lines, from the log store, after the candidate is gone
    with engines.connect(lab, lab.config.host("prod")) as prod:
        assert not prod.containers.list(all=True, filters={"label": f"cdlab.release={c}"})
    argv = ["logs", "--service", SERVICE, "--release", c, "--since", "2m"]
    out = subprocess.run(
        [sys.executable, "-m", "invoke", *argv],
        cwd=lab.config.root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = [line for line in out.splitlines() if f" cdlab-edge {SERVICE} {c} " in line]
    assert any(f" {c} 500 " in line and "GET /packages/" in line for line in lines), out[-2000:]
    served_by_c = len([r for r in requests if r.release == c])
    assert len(lines) == served_by_c, "the log store lost request lines"
    edge = Graphite().points(f"sumSeries(edge.{SERVICE}.{c}.requests.*)", ("-10min", "now"))
    assert sum(edge) == served_by_c, "the edge counted another number of requests than were made"


def test_the_dashboard_shows_requests_errors_and_p95_per_release(lab: State) -> None:
    """The saved dashboard lab.up printed: every service's graphs, and for pypiserver (just
    deployed, rolled back and canaried) a series per release; PNGs kept as evidence."""
    graphite = Graphite()
    resp = graphite.session.get(f"{graphite.url}/dashboard/load/{dashboard.NAME}", timeout=5)
    resp.raise_for_status()
    state = resp.json()["state"]
    titles = [g[2]["title"] for g in state["graphs"]]
    for name in services.names(lab.config.root):
        assert {f"{name}: requests/s", f"{name}: errors/s", f"{name}: p95 ms"} <= {
            t.split(" per ")[0] for t in titles
        }
    assert state["refreshConfig"]["enabled"] and state["defaultGraphParams"]["from"] == "-15minutes"
    evidence = load.REPORTS.parent / "evidence"
    evidence.mkdir(parents=True, exist_ok=True)
    for i, graph in enumerate(g for g in state["graphs"] if g[0].startswith(f"{SERVICE}-")):
        params = graph[2]
        if i < 3:  # requests, errors, p95: at the edge, one series per release
            got = graphite.session.get(
                f"{graphite.url}/render",
                params={"target": params["target"], "from": "-15minutes", "format": "json"},
                timeout=10,
            ).json()
            assert len([s for s in got if any(v for v, _ in s["datapoints"])]) >= 2 or i == 1
        png = graphite.session.get(f"{graphite.url}{graph[3]}", timeout=10)
        assert png.headers["Content-Type"] == "image/png"
        (evidence / f"dashboard-{graph[0]}.png").write_bytes(png.content)


def test_a_weight_the_proxy_does_not_apply_is_caught_by_the_split_check(
    lab: State, pypi: tuple[State, str, str]
) -> None:
    """Negative control: the canary's weight is in the route store, but the proxy keeps the
    candidate at the weight it had before the step (0, as a proxy that did not apply the step
    would): the split check must fail, by the edge and by the load. The override races the
    proxy's own route writes (a change, a resync every 5 s), so a few requests can reach the
    candidate before it lands: the judge is given a minimum no step can reach (the canary
    always ends "cannot judge"), and the check must find the candidate far below its weight."""
    state, b, _ = pypi
    svc = services.load(lab.config.root, SERVICE)
    a = release.current_routes(lab, SERVICE).live
    runtime, host = Lab.of(lab).runtime, host_name(SERVICE, b)
    stop = threading.Event()

    def override() -> None:
        while not stop.wait(0.05):
            try:
                for slot in runtime.release_slots(SERVICE, host):  # its replicas' on a swarm
                    if slot.weight:
                        runtime.send(f"set server {SERVICE}/{slot.name} weight 0")
            except Exception:  # the proxy busy for a moment: the next round sets it
                continue

    with load.running(rate=RATE, name="split-control", url=PYPI, paths=svc.load_paths) as traffic:
        worker = threading.Thread(target=override, daemon=True)
        worker.start()
        try:
            with pytest.raises(ReleaseError, match="cannot judge"):  # it never served
                never = judge.Thresholds(min_requests=1_000_000, max_holds=0)
                canary(state, SERVICE, b, (50, 100), 3, never)
        finally:
            stop.set()
            worker.join(5)
    rec = last_record(lab, SERVICE, b)
    found = split.shares(rec.stages, [(r.t, r.release) for r in traffic.requests], b, a)
    assert {s.counted_by for s in found} == {"edge", "load"}
    wrong = split.problems(found)
    assert len(wrong) == 2, f"the split check missed a weight not applied: {found}"
    assert all("weight of 50 %" in w for w in wrong)
    # far below: under a quarter of the requests, where the weight asks for half of them
    assert all(s.observed < 0.25 for s in found), found
    assert release.current_routes(lab, SERVICE).live == a


def test_an_app_that_reports_healthy_figures_but_fails_at_the_proxy_is_aborted(
    lab: State, tmp_path: Path, light_load: list[tuple[float, int, str]]
) -> None:
    """The candidate counts every request as a 200 in its own metrics, then closes the
    connection without an answer: only the edge sees it fail, and the judge reads the edge."""
    a = release.current_routes(lab, "app").live
    broken = commit_in_clone(
        lab.config.root,
        tmp_path / "closes",
        "services/app/app/web.py",
        lambda text: text.replace(
            "        return [body]\n",
            ON_VERSION_FOR_REAL_CLIENTS + "            import socket\n"
            '            environ["gunicorn.socket"].shutdown(socket.SHUT_RDWR)\n'
            "        return [body]\n",
            1,
        ),
        "D: closes the connection on real clients, reports a 200",
    )
    d = git.short(git.commit(broken))
    with pytest.raises(ReleaseError, match="aborted at 25%: error rate"):
        canary(lab.at(broken), "app", "HEAD", (25, 100), 4, judge.Thresholds(min_requests=15))
    assert release.current_routes(lab, "app").live == a
    rec = last_record(lab, "app", d)
    fig = next(s for s in rec.stages if s["key"] == "canary-25")["figures"]
    assert fig["candidate_errors"] > 0
    # what the candidate said about itself: all well
    own = Graphite().points(f"sumSeries(cdlab.app.{d}.*.requests.5xx)", ("-5min", "now"))
    ok = Graphite().points(f"sumSeries(cdlab.app.{d}.*.requests.2xx)", ("-5min", "now"))
    assert sum(ok) > 0 and sum(own) == 0, "the candidate's own figures were not healthy"


@pytest.mark.parametrize(
    ("line", "field", "value"),
    [
        ('health = "/health\\n"', "health", "/health\n"),
        ('health = "/he alth"', "health", "/he alth"),
        ('health = "/a,b"', "health", "/a,b"),
        ('health = "/a:b"', "health", "/a:b"),
        ('helth = "/health"', "helth", "/health"),
        ("port = 70000", "port", 70000),
    ],
)
def test_a_bad_manifest_is_refused_before_anything_runs(
    lab: State, tmp_path: Path, line: str, field: str, value: object
) -> None:
    """Each field is checked when the commit is read: nothing is built, locked or recorded,
    and the message names the field, the value and the form expected."""
    key = line.split(" = ")[0]

    def edit(text: str) -> str:
        rows = text.splitlines()
        if key == "helth":  # a key nobody defined, beside the right one (top level)
            at = next(i for i, r in enumerate(rows) if r.startswith("name = ")) + 1
            return "\n".join([*rows[:at], line, *rows[at:]]) + "\n"
        return "\n".join(line if r.startswith(f"{key} = ") else r for r in rows) + "\n"

    clone = commit_in_clone(
        lab.config.root,
        tmp_path / "bad",
        "services/pypiserver/service.toml",
        edit,
        f"a bad {field}",
    )
    live = release.current_routes(lab, SERVICE).live
    runs = set(lab.runs.glob("*"))
    with pytest.raises(ConfigError) as err:
        pipeline.deploy(lab.at(clone), Progress(out=None), SERVICE, "HEAD")
    assert (err.value.field, err.value.value) == (field, value)
    assert "services/pypiserver/service.toml at " in str(err.value)
    if field == "helth":  # the form expected: the keys there are, the nearest first
        assert "did you mean 'health'? Known keys: " in str(err.value)
    else:
        assert "; expected " in str(err.value)
    assert set(lab.runs.glob("*")) == runs, "a run was recorded"
    assert release.current_routes(lab, SERVICE).live == live
