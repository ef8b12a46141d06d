"""A release run stopped anywhere, under 300 req/s through the proxy: SIGINT at four points of
a deploy, Graphite gone during a canary step, the new release killed after the switch. Each
time production keeps serving (0 failed requests, except the kill, which is counted), the
routes end exactly as they were, no candidate container is left on prod, the lock is free,
and the record says ``interrupted`` or ``failed`` with the step."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lab.build import git
from lab.estate.state import State
from lab.ports import engines
from lab.progress import Progress
from lab.proof import load, loadreport
from lab.release import api as release
from lab.release import lock, pipeline, records
from lab.stack import project as stack
from lab.stack import services
from tests import conftest
from tests.conftest import FaultRow, running_container

pytestmark = pytest.mark.xdist_group("prod")
RATE = 300
BAKE = 15.0  # the bake window of the deploy whose release is killed after the switch
WEB = "services/app/app/web.py"
STAGE = re.compile(r"^==> \[\d+/\d+\] (.*)")


class Deployer:
    """``tests/fault/deployer.py`` in its own session, with SIGINT at its default (a process
    a script starts in the background ignores it otherwise)."""

    def __init__(self, lab: State, clone: Path, strategy: str, bake: float, points: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "CDLAB_FAILPOINTS": points}
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fault.deployer", str(clone), strategy, str(bake)],
            cwd=lab.config.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_stage(self, title: str, timeout: float = 120) -> float:
        """Until a stage whose title starts with ``title`` begins; its time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.output.append(line)
            found = STAGE.match(line)
            if found and found.group(1).startswith(title):
                return time.monotonic()
        self.proc.kill()
        raise AssertionError(f"no stage '{title}' within {timeout} s:\n{''.join(self.output)}")

    def end(self, timeout: float = 120) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return code

    @property
    def text(self) -> str:
        return "".join(self.output)


def new_commit(lab: State, where: Path, token: str) -> tuple[Path, str]:
    clone = conftest.clone_with(
        lab.config.root,
        where,
        {WEB: lambda t: t.replace("<title>", f"<title>{token} ", 1)},
        f"interruption: {token}",
    )
    return clone, git.short(git.commit(clone))


def prod_state(lab: State) -> dict[str, Any]:
    """What must not change: the routes of app, and which releases have containers."""
    with engines.connect(lab, lab.config.host("prod")) as prod:
        found = prod.containers.list(
            all=True, filters={"label": "cdlab.service=app"}, ignore_removed=True
        )
        present = sorted({c.labels.get("cdlab.release", "") for c in found})
    return {"routes": release.route_store(lab).get_json("/cdlab/routes/app"), "present": present}


def last_record(lab: State, sha: str) -> records.Record:
    return [r for r in records.history(lab.runs, "app") if r.release == sha][-1]


def stopped_as_it_was(lab: State, before: dict[str, Any], sha: str, d: Deployer) -> None:
    __tracebackhide__ = True
    after = prod_state(lab)
    assert after == before, f"prod changed: {before} -> {after}\n{d.text}"
    assert lock.current(release.route_store(lab)) is None, "the deploy lock was left held"
    assert sha not in after["present"], f"the candidate {sha} is still on prod"


POINTS = [
    # (what, failpoint to widen the window, the stage title to signal in, its key, strategy)
    ("before the start", "pull=sleep:3", "pull ", "pull", "bluegreen"),
    ("during the integration tests", "tests=sleep:3", "integration tests", "tests", "bluegreen"),
    ("during a canary step", "", "canary 50%", "canary-50", "canary"),
    ("during the drain", "drain=sleep:3", "drain ", "drain", "bluegreen"),
]


def test_a_deploy_stopped_with_sigint_anywhere_leaves_prod_as_it_was(
    lab: State, tmp_path: Path, fault_row: FaultRow
) -> None:
    live = release.current_routes(lab, "app").live
    clones = [new_commit(lab, tmp_path / f"c{i}", f"sigint{i}") for i in range(len(POINTS))]
    for clone, sha in clones:  # built first: building is not what is tried here
        pipeline.build(lab.at(clone), Progress(out=None), services.load(clone, "app"), sha)
    with load.running(rate=RATE, name="interrupted-deploys") as traffic:
        time.sleep(2)
        for (what, points, title, key, strategy), (clone, sha) in zip(POINTS, clones, strict=True):
            before = prod_state(lab)
            traffic.mark(f"SIGINT {what}")
            d = Deployer(lab, clone, strategy, 5.0, points)
            d.wait_stage(title)
            time.sleep(0.5)
            os.killpg(d.proc.pid, signal.SIGINT)
            assert d.end() == 130, f"{what}: exit code\n{d.text}"
            assert f"interrupted by SIGINT during '{key}'" in d.text, d.text
            rec = last_record(lab, sha)
            assert (rec.result, rec.failed_stage) == ("interrupted", key), rec
            stopped_as_it_was(lab, before, sha, d)
        time.sleep(2)
        traffic.mark("end")
    loadreport.write(traffic, load.REPORTS, {"interruptions": len(POINTS)})
    fault_row(
        "a deploy stopped with SIGINT anywhere",
        "SIGINT to a deploy " + ", ".join(what for what, *_ in POINTS) + " (300 req/s)",
        len(traffic.failed),
        traffic.gap(),
        None,
        "each run interrupted at its step and undone: routes and containers as before, the "
        "lock free; 0 failed",
    )
    s = traffic.summary()
    assert traffic.problems() == [], traffic.problems()  # the oracle saw every request
    assert traffic.rate_problem() is None, traffic.rate_problem()
    assert s["failed"] == 0, f"{s['failed']} failed requests: {s['errors']}"
    assert {r.release for r in traffic.requests if r.ok} <= {live, *(sha for _, sha in clones)}
    assert release.current_routes(lab, "app").live == live


def test_graphite_gone_during_a_canary_step_fails_the_run_and_undoes_it(
    lab: State, tmp_path: Path, fault_row: FaultRow
) -> None:
    live = release.current_routes(lab, "app").live
    clone, sha = new_commit(lab, tmp_path / "c", "nographite")
    before = prod_state(lab)
    with (
        engines.connect(lab, lab.config.host("prod")) as prod,
        load.running(rate=RATE, name="graphite-gone") as traffic,
    ):
        graphite = prod.containers.get(f"{stack.PROJECT}_graphite-web_1")
        try:
            d = Deployer(lab, clone, "canary", 0.0, "")
            d.wait_stage("canary 50%")
            traffic.mark("graphite-web stopped")
            graphite.stop(timeout=2)
            code = d.end()
        finally:
            graphite.start()
        traffic.mark("end")
    stack.wait_healthy(lab, timeout=60)
    loadreport.write(traffic, load.REPORTS, {"fault": "graphite gone during a canary step"})
    fault_row(
        "Graphite gone during a canary step",
        "graphite-web stopped at a canary's 50 % step (300 req/s)",
        len(traffic.failed),
        traffic.gap(),
        None,
        "the run fails at 'canary-50', naming Graphite, and is undone; 0 failed",
    )
    assert code == 1, d.text
    assert "could not read the canary's metrics from Graphite" in d.text
    rec = last_record(lab, sha)
    assert (rec.result, rec.failed_stage) == ("failed", "canary-50"), rec
    assert rec.undone[:1] == ["canary-50"] and "start" in rec.undone
    stopped_as_it_was(lab, before, sha, d)
    assert traffic.problems() == [], traffic.problems()  # the oracle saw every request
    assert traffic.rate_problem() is None, traffic.rate_problem()
    assert traffic.failed == [], traffic.summary()["errors"]
    assert release.current_routes(lab, "app").live == live


def test_a_release_killed_after_the_switch_is_replaced_by_the_previous_one(
    lab: State, tmp_path: Path, fault_row: FaultRow
) -> None:
    live = release.current_routes(lab, "app").live
    clone, sha = new_commit(lab, tmp_path / "c", "killed")
    before = prod_state(lab)
    with (
        engines.connect(lab, lab.config.host("prod")) as prod,
        load.running(rate=RATE, name="killed-after-switch") as traffic,
    ):
        time.sleep(2)
        d = Deployer(lab, clone, "bluegreen", BAKE, "")
        try:
            d.wait_stage("switch")
            time.sleep(3)
            traffic.mark(f"kill {sha}")
            killed = time.time()
            running_container(prod, "app", sha).kill()  # on a swarm, its replica on prod
        finally:  # a failure here must not leave the deploy running into the next test
            code = d.end()
        ended = time.time()
        time.sleep(2)
        traffic.mark("end")
    after = [r for r in traffic.requests if r.t >= killed]
    back = max((r.end for r in after if r.release == sha), default=killed) - killed
    failed = len(traffic.failed)
    loadreport.write(
        traffic,
        load.REPORTS,
        {"fault": "killed 3 s after the switch", "failed": failed, "back_s": round(back, 3)},
    )
    fault_row(
        "the new release killed after the switch",
        "SIGKILL to the new release's container 3 s after the switch (300 req/s)",
        failed,
        traffic.gap(),
        None,
        "failed requests counted; the bake fails the run and 100 % is back on the previous "
        f"release within its window ({BAKE:.0f} s; the engine restarts the killed container, "
        "which answers again until then)",
    )
    assert code == 1, d.text
    rec = last_record(lab, sha)
    assert (rec.result, rec.failed_stage) == ("failed", "bake"), rec
    assert "switch" in rec.undone and "start" in rec.undone, rec
    stopped_as_it_was(lab, before, sha, d)
    assert release.current_routes(lab, "app").live == live
    print(f"\nkilled after the switch: {failed} failed, 100 % back on {live} after {back:.2f} s")
    # how soon is a figure (reports/faults.md); what must hold: back within the bake window,
    # and nothing sent once the run has ended reaches the killed release
    assert back < BAKE, f"100 % back on {live} only {back:.2f} s after the kill"
    later = [r for r in traffic.requests if r.t > ended]
    assert later and all(r.ok and r.release == live for r in later), later[:5]
    assert traffic.problems() == [], traffic.problems()  # the oracle saw every request
    assert traffic.rate_problem() is None, traffic.rate_problem()
