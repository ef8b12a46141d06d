"""cd's clock 10 minutes off: one deploy from the workstation, one pushed through cd, and
``invoke releases`` and rollback still see them in the order they ran.

How the clock is skewed, and why so. Every container of this machine reads the kernel's one
CLOCK_REALTIME (a time namespace offsets only the monotonic and boot clocks); setting it needs
CAP_SYS_TIME and would move the clock of the machine and of every lab on it; libfaketime is not
in the host image. So the test moves the one clock a record reads, ``records.now()``, in cd's
runner only, with ``CDLAB_CLOCK_OFFSET_S`` (seconds). The variable must reach the runner that
cd's git hook starts, and a push over SSH carries no environment (git-shell, no AcceptEnv):
the commit is pushed from dev to a side branch of cd's repository (stored, not deployed), then
main is moved to it and cd's own post-receive hook runs with the variable in its environment
(``docker exec -e``): the same hook, checkout, installed runner and credentials as a push to
main, only started by the test instead of by git's receive-pack. Its OLD is the commit's parent
(the checkout's commit), so app is the one service deployed.

What must hold, the later run's clock reading 10 minutes earlier than the first's (cd behind
and deploying second, or cd ahead and deploying first): the history lists the runs in the order
they ran, ``invoke releases`` shows the second live on top and the first warm under it, the
rollback target without a warm release (from the history alone) is the first, and a rollback
makes the first live again.

Needs cd's installed runner (``runner/cdlab`` in cd's bundle, written by ``lab.up``) from a
checkout that has ``CDLAB_CLOCK_OFFSET_S``: run './cdlab up' after updating the checkout.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest

from lab.build import git
from lab.estate.state import State
from lab.progress import Progress
from lab.release import api as release
from lab.release import history, pipeline, records, routes
from tests import conftest
from tests.conftest import FaultRow

pytestmark = pytest.mark.xdist_group("prod")
SKEW = 600.0  # seconds
WEB = "services/app/app/web.py"
INSTALLED = "/etc/cdlab/runner/cdlab/lab/release/records.py"  # cd's installed runner's


def cd_takes_the_offset(lab: State) -> None:
    __tracebackhide__ = True
    out = conftest.on_host(lab, "cd", f"grep -c {records.CLOCK_OFFSET} {INSTALLED} || true")
    if out.strip() in ("", "0"):
        pytest.fail(
            f"cd's installed runner ({INSTALLED}) does not read {records.CLOCK_OFFSET}: it "
            "predates this checkout. Run './cdlab up' to install this checkout's copy on cd.",
            pytrace=False,
        )


def deploy_from_the_workstation(lab: State, where: Path, token: str) -> records.Record:
    clone = conftest.clone_with(
        lab.config.root,
        where,
        {WEB: lambda t: t.replace("<title>", f"<title>{token} ", 1)},
        f"clock skew: {token} from the workstation",
    )
    rec = pipeline.deploy(lab.at(clone), Progress(out=None), "app", "HEAD")
    assert rec.result == "succeeded" and rec.release == git.short(git.commit(clone)), rec
    return rec


def deploy_through_cd(lab: State, token: str, offset: float) -> str:
    """A commit of dev's clone (this checkout's commit plus a change of app) deployed by cd's
    hook with cd's runner clock ``offset`` seconds off; the release."""
    new = conftest.commit_to_cd_side(
        lab, f"sed -i 's|<title>|<title>{token} |' {WEB}", f"clock skew: {token} through cd"
    )
    out = conftest.on_host(lab, "cd", conftest.cd_hook(new), {records.CLOCK_OFFSET: str(offset)})
    assert "cdlab-result: succeeded" in out, out[-3000:]
    return new[:12]


def last_deploy(runs: list[records.Record], release_id: str) -> records.Record:
    __tracebackhide__ = True
    found = [
        r for r in runs if (r.release, r.kind, r.result) == (release_id, "deploy", "succeeded")
    ]
    assert found, f"no deploy of {release_id} in the history: {[(r.kind, r.release) for r in runs]}"
    return found[-1]


@pytest.mark.parametrize(
    "offset",
    [-SKEW, SKEW],
    ids=["cd-10-min-behind-deploys-second", "cd-10-min-ahead-deploys-first"],
)
def test_releases_and_rollback_follow_the_runs_not_the_clocks(
    lab: State, tmp_path: Path, offset: float, fault_row: FaultRow
) -> None:
    cd_takes_the_offset(lab)
    fault_row(
        f"cd's clock {abs(offset) / 60:.0f} minutes {'behind' if offset < 0 else 'ahead'}",
        f"cd's runner clock {offset:+.0f} s off; one deploy through cd, one from the workstation "
        "(no load)",
        None,
        None,
        None,
        "the history, `invoke releases` and the rollback target follow the order the runs "
        "happened in; a rollback makes the first live again",
    )
    token = uuid.uuid4().hex[:8]
    if offset < 0:  # cd behind: its run, second, is stamped 10 minutes before the first
        first = deploy_from_the_workstation(lab, tmp_path / "clone", f"ws-{token}").release
        second = deploy_through_cd(lab, f"cd-{token}", offset)
    else:  # cd ahead: its run, first, is stamped 10 minutes after the second
        first = deploy_through_cd(lab, f"cd-{token}", offset)
        second = deploy_from_the_workstation(lab, tmp_path / "clone", f"ws-{token}").release
    store = release.route_store(lab)

    runs = records.history(lab.runs, "app", store)
    a, b = last_deploy(runs, first), last_deploy(runs, second)
    through_cd, from_here = (b, a) if offset < 0 else (a, b)
    assert through_cd.trigger.startswith("git push to cd"), through_cd
    assert not from_here.trigger.startswith("git push to cd"), from_here
    # the skew took: by the clocks, the second run started before the first (10 minutes less
    # the time between the two starts)
    gap = (
        dt.datetime.fromisoformat(a.started) - dt.datetime.fromisoformat(b.started)
    ).total_seconds()
    assert gap > 0, (
        f"cd's runner clock was not {offset:+.0f} s off (first started {a.started}, second "
        f"{b.started}): the test proves nothing"
    )
    assert runs.index(a) < runs.index(b), [(r.release, r.started) for r in runs]

    rows = history.releases(lab, "app")
    assert [(r.release, r.status) for r in rows[:2]] == [(second, "live"), (first, "warm")], rows

    deployed = history.deployed(lab, "app")
    assert deployed[-2:] == [first, second], deployed
    current = release.current_routes(lab, "app")
    cold = routes.Routes("app", tuple(s for s in current.servers if not s.drain))
    assert routes.rollback_target(cold, deployed, None) == first  # from the history alone

    back, _ = pipeline.rollback(lab, Progress(out=None), "app")
    assert back.release == first and release.current_routes(lab, "app").live == first
    rows = history.releases(lab, "app")
    assert [(r.release, r.status) for r in rows[:2]] == [(first, "live"), (second, "warm")], rows
