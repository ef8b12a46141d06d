"""Positive controls of the load oracle on the lab: the demo app built from this checkout's HEAD
(its test hook, CDLAB_MISBEHAVE, in it), alone on 127.0.0.1:CONTROL_PORT on prod as the naive
control runs a release (no proxy), told to answer wrongly on purpose. Under real load the oracle
must report each misbehaviour, stay sound while it does (``problems()`` empty: every line read,
locust's count equal to the lines) and, for the same release well-behaved, report nothing.

tests/integration/test_oracle_controls.py does the same against a mimic on this machine.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from lab.build import git
from lab.errors import ConfigError
from lab.estate.state import State
from lab.progress import Progress
from lab.proof import controls, load, loadreport
from lab.proof.load import Traffic
from lab.release import api as release
from lab.release import pipeline
from lab.stack import services

pytestmark = pytest.mark.xdist_group("prod")
RATE = 100
SECONDS = 6.0
URL = f"http://127.0.0.1:{services.CONTROL_PORT}"
HOOK = "services/app/app/misbehave.py"


@pytest.fixture(scope="module")
def candidate(lab: State) -> Iterator[release.Candidate]:
    """The demo app at HEAD of the lab's checkout, built on cd when missing; its container on
    ``CONTROL_PORT`` removed at the end."""
    root = lab.config.root
    sha = git.commit(root)
    try:
        git.tree(root, sha, HOOK)
    except ConfigError:
        pytest.fail(
            f"{git.short(sha)} (HEAD of {root}) has no {HOOK}: the test hook these "
            "controls need; run them from a checkout that has it",
            pytrace=False,
        )
    app = services.load(root, "app")
    built = pipeline.build(lab, Progress(out=None), app, sha)
    yield release.Candidate(app, git.short(sha), built["app"].pinned, None)
    controls.remove_naive(lab, "app")


def run(lab: State, candidate: release.Candidate, misbehave: str, name: str) -> Traffic:
    """``SECONDS`` of load on ``candidate`` misbehaving as asked; the oracle must stay sound."""
    controls.misbehaving(lab, candidate, misbehave)
    with load.running(rate=RATE, name=name, url=URL) as traffic:
        time.sleep(SECONDS)  # the run's length (what is measured), not a wait for a state
        traffic.mark("end")
    loadreport.write(traffic, load.REPORTS, {"control": f"CDLAB_MISBEHAVE={misbehave!r}"})
    assert traffic.problems() == [], traffic.problems()
    assert traffic.rate_problem() is None, traffic.rate_problem()
    return traffic


def failures(traffic: Traffic) -> Counter[str]:
    return Counter(r.verdict for r in traffic.failed)


def test_a_well_behaved_release_passes_every_check(
    lab: State, candidate: release.Candidate
) -> None:
    traffic = run(lab, candidate, "", "oracle-control-none")
    assert failures(traffic) == Counter()
    assert traffic.broken == 0
    assert traffic.release_problems(first=candidate.release) == []
    assert len(traffic.registered()) > 0
    assert load.readback(traffic, URL) == []


def test_the_oracle_reports_409s_near_their_share(lab: State, candidate: release.Candidate) -> None:
    traffic = run(lab, candidate, "conflict=5", "oracle-control-conflict")
    writes = [r for r in traffic.requests if r.kind == "write"]
    conflicts = [r for r in writes if r.verdict == "status 409"]
    assert failures(traffic) == Counter({"status 409": len(conflicts)}), failures(traffic)
    assert 0.02 <= len(conflicts) / len(writes) <= 0.10, (len(conflicts), len(writes))
    assert load.readback(traffic, URL) == []  # the others were stored


def test_the_oracle_reports_bodies_cut_after_a_good_status_line(
    lab: State, candidate: release.Candidate
) -> None:
    traffic = run(lab, candidate, "truncate=1", "oracle-control-truncate")
    cut = [r for r in traffic.failed if r.verdict == "body cut short"]
    assert len(cut) > 0, failures(traffic)
    assert {r.status for r in cut} <= {200, 201}
    assert set(failures(traffic)) == {"body cut short"}, failures(traffic)
    # no readback here: 1 % of the reads back would be cut as well


def test_the_oracle_reports_another_release_answering(
    lab: State, candidate: release.Candidate
) -> None:
    traffic = run(lab, candidate, "release=other", "oracle-control-release")
    problems = traffic.release_problems(first=candidate.release)
    assert problems and all("answered by other" in p for p in problems), problems[:3]
    # /version's body names the real release: those reads fail on the mismatch
    wrong = f"X-Release other, body {candidate.release}"
    assert set(failures(traffic)) == {wrong}, failures(traffic)
