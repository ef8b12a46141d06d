"""The lessons (``invoke lesson.list``). Each does on the real lab what a student does by hand,
checks what a student must have reached, and puts back what it changed (the live release, the
dev clone) or says what it left (a warm release).

Every check reads evidence the lab keeps until ``lab.reset``/``lab.destroy``: the runs' records
(shared in the route store), the registry, the proxy's container."""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from lab.build import git
from lab.config import public_host, public_port
from lab.errors import CanaryAborted, LabError, LessonError, PushError
from lab.lessons import Ctx, Lesson, Step
from lab.ports.lab import Lab
from lab.ports.metrics import graphite_url
from lab.progress import Progress
from lab.proof import load, outage, strategies
from lab.proof.strategies import Chain, chain
from lab.release import api as release
from lab.release import devloop, lock, pipeline, records, reset
from lab.stack import project as stack
from lab.stack import services

APP = load.app_url()  # this lab's: http://127.0.0.1:8000 for the default one
DASHBOARD = f"{graphite_url()}/dashboard/cdlab"
RATE = 50  # requests/s of a lesson's load: enough to see, light on a laptop
PUSHED = "git push to cd"  # how a record names a run started by a push (the cd hook's trigger)


def _get(path: str = "/version") -> requests.Response:
    s = requests.Session()
    s.trust_env = False  # the lab's own port on 127.0.0.1
    return s.get(APP + path, timeout=5)


def _history(lab: Lab, service: str = "app") -> list[records.Record]:
    """The service's records since the lab's first state: after its last ``lab.reset``."""
    found = records.history(lab.runs, service, lab.etcd)
    last = max((i for i, r in enumerate(found) if r.kind == "reset"), default=-1)
    return found[last + 1 :]


def _on_dev(lab: Lab, script: str) -> str:
    dev = lab.config.container_name(lab.config.host("dev"))
    done = subprocess.run(
        ["docker", "exec", dev, "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode:
        raise LessonError(f"on dev, `{script}` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


PUT_BACK = "lesson put-back"  # the trigger of a lesson's own put-back runs: no check counts them


@contextlib.contextmanager
def _as_put_back() -> Iterator[None]:
    """Runs made here say they are a lesson's put-back (``records.trigger``)."""
    before = os.environ.get("CDLAB_TRIGGER")
    os.environ["CDLAB_TRIGGER"] = PUT_BACK
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CDLAB_TRIGGER", None)
        else:
            os.environ["CDLAB_TRIGGER"] = before


def _lock_free(lab: Lab, seconds: float = 120) -> None:
    """Until no run holds the deploy lock (a push's deploy on cd may still be at work after
    its pusher was stopped)."""
    deadline = time.monotonic() + seconds
    while lock.current(lab.etcd) is not None and time.monotonic() < deadline:
        time.sleep(1)


def _note_live(ctx: Ctx) -> str:
    """Every service's live release and the dev clone's commit, all put back when the lesson
    ends (a push deploys each service whose folder changed, on a first push every one)."""
    lab = ctx.lab
    live = {n: release.current_routes(lab, n).live for n in services.names(lab.config.root)}
    if not live.get("app"):
        raise LessonError("app has no live release: bring the lab up first (`invoke lab.up`)")
    dirty = _on_dev(lab, f"git -C {devloop.CLONE} status --porcelain")
    if dirty:
        raise LessonError(
            f"dev's clone has work not committed ({len(dirty.splitlines())} file(s)): a lesson "
            "pushes what is in it, then puts the clone back; commit it (`invoke dev.shell`, "
            "`git commit -am ...`) or `git stash` it first"
        )
    ctx.facts["live"] = str(live["app"])
    ctx.facts["dev"] = devloop.clone_head(lab.config)

    def back_live() -> str:
        _lock_free(lab)
        said = []
        for name, was in live.items():
            now = release.current_routes(lab, name).live
            if not was or now == was:
                continue
            with _as_put_back():
                pipeline.rollback(lab, Progress(out=None), name, to=was)
            ctx.changed.append(f"{name}'s warm release is now {now} (an instant rollback away)")
            said.append(f"{name} back on {was} (was {now})")
        return "; ".join(said) or "every service still on its release"

    def back_dev() -> str:
        head = devloop.clone_head(lab.config)
        if not ctx.facts["dev"] or head == ctx.facts["dev"]:
            return "dev clone unchanged"
        devloop.reset_clone(lab.config, ctx.facts["dev"])
        return f"dev clone back at {ctx.facts['dev'][:12]} (its commits stay in git's reflog)"

    ctx.undo += [("dev clone", back_dev), ("live releases", back_live)]
    return f"app serves {live['app']} at {APP}; dev's clone is at {ctx.facts['dev'][:12]}"


NOTE_LIVE = Step(
    "Note what production serves now",
    "every lesson ends by putting it back: a class shares nothing but this starting point",
    f"{APP}/version (the X-Release header), `invoke releases`",
    _note_live,
)


# first-deploy ----------------------------------------------------------------------------


def _edit_title(ctx: Ctx) -> str:
    stamp = f"cdlab lesson {secrets.token_hex(3)}"
    ctx.facts["stamp"] = stamp
    page = f"{devloop.CLONE}/services/app/app/web.py"
    ctx.undo.append(  # stopped before the push: the edit is not left for the next push
        (
            "the edit",
            lambda: _on_dev(ctx.lab, f"git -C {devloop.CLONE} checkout -- {page}") or "gone",
        )
    )
    _on_dev(ctx.lab, f"sed -i 's|<title>[^<]*</title>|<title>{stamp}</title>|' {page}")
    return f"the page's title is now '{stamp}' in dev's clone (not committed yet)"


def _push(ctx: Ctx) -> str:
    head = devloop.push(ctx.lab.config, f"lesson: the page's title becomes {ctx.facts['stamp']}")
    rec = next((r for r in reversed(_history(ctx.lab)) if r.release == head), None)
    took = f" in {rec.seconds:.1f} s" if rec else ""
    ctx.measured["push to live"] = f"{head} live{took} (trigger: {rec.trigger if rec else '?'})"
    ctx.facts["new"] = head
    return f"{head} pushed, built, tested and switched to{took}"


def _see_it(ctx: Ctx) -> str:
    page, version = _get("/"), _get()
    served = version.headers.get("X-Release", "")
    if served != ctx.facts["new"] or ctx.facts["stamp"] not in page.text:
        raise LessonError(f"{APP} answers with {served!r}, not the pushed {ctx.facts['new']}")
    return f"{APP} answers from {served} with the title '{ctx.facts['stamp']}'"


def _check_first_deploy(lab: Lab) -> list[str]:
    pushed = [r for r in _history(lab) if r.trigger.startswith(PUSHED) and r.kind == "deploy"]
    if any(r.result == "succeeded" for r in pushed):
        return []
    return [
        "no deploy of app started by a push from dev yet: `invoke dev.shell`, edit "
        "services/app/app/web.py (its <title>), `git commit -am ...`, then `invoke dev.push`"
    ]


FIRST_DEPLOY = Lesson(
    "first-deploy",
    "your first deploy: edit on dev, commit, push, follow every stage",
    "a commit pushed from dev is live, deployed by the pipeline the push started",
    (
        NOTE_LIVE,
        Step(
            "Edit the page in dev's clone",
            "developers change code on their machine; nothing reaches production by hand",
            "`invoke dev.shell`, then `git diff` in the clone",
            _edit_title,
        ),
        Step(
            "Commit and push to cd: the push starts the pipeline",
            "one push runs every stage (checks, build with the unit tests, integration tests "
            "beside the live release, the switch, the bake); you watch each one",
            "the stages above ('remote: ==> [n/N] ...'), `invoke watch`, and the deploy's "
            f"event on {DASHBOARD}",
            _push,
        ),
        Step(
            "See the new release serve",
            "the switch is at the proxy: every new request goes to the new release at once",
            f"{APP} (the new title), `invoke releases` (the old release is warm)",
            _see_it,
        ),
    ),
    _check_first_deploy,
)


# broken-build ----------------------------------------------------------------------------

BROKEN_TEST = "services/app/tests/unit/test_lesson_broken.py"


def _break_a_test(ctx: Ctx) -> str:
    ctx.undo.append(  # stopped before the push: the failing test is not left in the clone
        (
            "the failing test",
            lambda: _on_dev(ctx.lab, f"rm -f {devloop.CLONE}/{BROKEN_TEST}") or "gone",
        )
    )
    _on_dev(
        ctx.lab,
        f"printf 'def test_broken():\\n    assert 1 == 2\\n' > {devloop.CLONE}/{BROKEN_TEST}",
    )
    return f"added {BROKEN_TEST}, a unit test that fails"


def _push_broken(ctx: Ctx) -> str:
    try:
        head = devloop.push(ctx.lab.config, "lesson: a unit test that fails")
    except PushError as exc:
        head = exc.release or ""
    else:
        raise LessonError(f"the commit with a failing unit test was deployed ({head})")
    rec = next((r for r in reversed(_history(ctx.lab)) if r.release == head), None)
    if rec is None or rec.result != "failed":
        raise LessonError(f"no failed record of {head}: the pipeline did not run as expected")
    ctx.facts["broken"] = head
    ctx.measured["broken build"] = (
        f"{head} stopped at '{rec.failed_stage}' after {rec.seconds:.1f} s"
    )
    return f"the pipeline stopped at '{rec.failed_stage}': the unit tests run inside the build"


def _never_an_image(ctx: Ctx) -> str:
    head, live = ctx.facts["broken"], ctx.facts["live"]
    if ctx.lab.registry.digest("cdlab/app", head) is not None:
        raise LessonError(f"the registry has an image of {head}")
    served = _get().headers.get("X-Release", "")
    if served != live:
        raise LessonError(f"{APP} answers from {served!r}, not {live}")
    ctx.measured["registry"] = f"no image of {head}; production still on {live}"
    return f"no image of {head} in the registry; {APP} still answers from {live}"


def _check_broken_build(lab: Lab) -> list[str]:
    failed = [
        r
        for r in _history(lab)
        if r.result == "failed" and (r.failed_stage or "").startswith("image-")
    ]
    if any(lab.registry.digest("cdlab/app", r.release) is None for r in failed):
        return []
    return [
        "no push of a commit whose unit tests fail yet: on dev add a failing test under "
        "services/app/tests/unit/, commit, `invoke dev.push` (it must fail at the build)"
    ]


BROKEN_BUILD = Lesson(
    "broken-build",
    "a broken build never becomes an image",
    "a pushed commit failed its unit tests in the build, and no image of it exists",
    (
        NOTE_LIVE,
        Step(
            "Add a unit test that fails, on dev",
            "a mistake a developer makes every week",
            f"`invoke dev.shell`, then `cat {BROKEN_TEST}`",
            _break_a_test,
        ),
        Step(
            "Push it: the build on cd fails",
            "the unit tests run inside the image's build: a failing test means no image at all",
            "the failing test's output above ('assert 1 == 2'), `invoke releases`",
            _push_broken,
        ),
        Step(
            "See that nothing reached the registry or production",
            "what was never built can never be deployed, by anyone, by mistake",
            f"{APP}/version, `invoke releases` (no row for the broken commit)",
            _never_an_image,
        ),
    ),
    _check_broken_build,
)


# broken-release --------------------------------------------------------------------------

BROKEN_SQL = ("INSERT INTO users (", "INSERT INTO userz (")  # a typo only a real database sees
STOPPED_BEFORE_USERS = ("healthy", "tests", "proxy-up")  # stages before any user is routed


def _typo_release(ctx: Ctx) -> str:
    scratch = _scratch(ctx)
    where = scratch.root
    store = where / "services/app/app/store.py"
    text = store.read_text()
    if BROKEN_SQL[0] not in text:
        raise LessonError(f"services/app/app/store.py has no {BROKEN_SQL[0]!r} to break")
    store.write_text(text.replace(*BROKEN_SQL, 1))
    ctx.facts["typo"] = git.short(git.commit_all(where, "lesson: a typo in the INSERT"))
    ctx.facts["clone"] = str(where)
    return (
        f"commit {ctx.facts['typo']} writes to a table that does not exist: its unit tests "
        "(an in-memory store) still pass"
    )


def _never_reaches_users(ctx: Ctx) -> str:
    lab, live, typo = ctx.lab, ctx.facts["live"], ctx.facts["typo"]
    folder = lab.state.dir / "lessons"
    clone = lab.at(Path(ctx.facts["clone"]))
    with load.running(rate=RATE, name="lesson-broken-release", folder=folder) as t:
        time.sleep(2)
        try:
            pipeline.deploy(clone, Progress(), "app", typo)
        except LabError as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            # the failing test's line when the error quotes pytest's summary
            why = next((line for line in lines if line.startswith("FAILED")), lines[0])
        else:
            raise LessonError(f"the release with a broken INSERT, {typo}, was made live")
        time.sleep(2)
    rec = next((r for r in reversed(_history(lab)) if r.release == typo), None)
    if rec is None or rec.result != "failed" or rec.failed_stage not in STOPPED_BEFORE_USERS:
        stage = rec.failed_stage if rec else "no record"
        raise LessonError(f"{typo} did not stop before the switch (stage: {stage})")
    served = {r.release for r in t.requests if r.ok}
    left = release.release_containers(lab.engine("prod"), "app", typo)
    if served - {live} or left:
        raise LessonError(f"{typo} answered users ({served}) or was left on prod ({len(left)})")
    ctx.measured["broken release"] = (
        f"{typo} stopped at '{rec.failed_stage}' and was removed: {why[:160]}"
    )
    ctx.measured["users"] = (
        f"{len(t.requests)} requests at {RATE}/s, {len(t.failed)} failed, every one answered "
        f"by {live}"
    )
    return ctx.measured["broken release"]


def _check_broken_release(lab: Lab) -> list[str]:
    stopped = [
        r
        for r in _history(lab)
        if r.kind == "deploy" and r.result == "failed" and r.failed_stage in STOPPED_BEFORE_USERS
    ]
    if stopped:
        return []
    return [
        "no deploy of app stopped before its switch yet: on dev break something only a real "
        "database sees (a table's name in services/app/app/store.py), commit, `invoke dev.push`"
    ]


BROKEN_RELEASE = Lesson(
    "broken-release",
    "a broken release never reaches users",
    "a deploy of app stopped before its switch (health or integration tests), so no user saw it",
    (
        NOTE_LIVE,
        Step(
            "Make a release with a typo in its SQL",
            "unit tests run against an in-memory store: only the real database shows the typo",
            "`git -C .lab/lessons/clone-* show` (the one-word change)",
            _typo_release,
        ),
        Step(
            f"Deploy it while {RATE} requests/s arrive",
            "the candidate starts beside the live release and its integration tests run against "
            "its own address with the real database, before the proxy sends it anyone",
            "the failing test above ('[n/13] integration tests'), `invoke releases`, "
            "`invoke logs --release RELEASE`",
            _never_reaches_users,
        ),
    ),
    _check_broken_release,
)


# rollback-drill --------------------------------------------------------------------------


def _scratch(ctx: Ctx) -> Chain:
    """A throwaway clone of the checkout for the lesson's own commits, removed at its end."""
    where = ctx.lab.state.dir / "lessons" / f"clone-{secrets.token_hex(3)}"
    where.parent.mkdir(parents=True, exist_ok=True)

    def remove() -> str:
        shutil.rmtree(where, ignore_errors=True)
        return f"{where} removed"

    ctx.undo.append(("scratch clone", remove))
    return chain(ctx.lab.state, where)


def _second_release(ctx: Ctx) -> str:
    lab = ctx.lab
    scratch = _scratch(ctx)
    where = scratch.root
    sha = scratch.commit()
    rec = pipeline.deploy(lab.at(where), Progress(), "app", sha)
    ctx.facts["second"] = rec.release
    ctx.facts["clone"] = str(where)
    return f"{rec.release} is live ({ctx.facts['live']} is warm) after {rec.seconds:.1f} s"


def _roll_back(ctx: Ctx) -> str:
    lab, live = ctx.lab, ctx.facts["live"]
    folder = lab.state.dir / "lessons"
    with load.running(rate=RATE, name="lesson-rollback", folder=folder, max_seconds=120) as t:
        time.sleep(3)
        with t.operation("rollback", target=live):
            _, seconds = pipeline.rollback(lab, Progress(out=None), "app", to=live)
        time.sleep(3)
    ctx.measured["rollback"] = (
        f"100 % on {live} {seconds * 1000:.0f} ms after the switch; "
        f"{len(t.requests)} requests at {RATE}/s, {len(t.failed)} failed"
    )
    ctx.changed.append(f"app's warm release is now {ctx.facts['second']}")
    return ctx.measured["rollback"]


def _check_rollback(lab: Lab) -> list[str]:
    mine = [r for r in _history(lab) if r.kind == "rollback" and r.trigger != PUT_BACK]
    if any(r.result == "succeeded" for r in mine):
        return []
    return [
        "no rollback of app yet: deploy a second release (`invoke dev.push` of a change), "
        "then `invoke rollback` while `invoke load` runs"
    ]


ROLLBACK_DRILL = Lesson(
    "rollback-drill",
    "a rollback drill under load",
    "app was rolled back (a succeeded rollback in its records)",
    (
        NOTE_LIVE,
        Step(
            "Deploy a second release",
            "a rollback needs somewhere to go back to: the release before is kept warm",
            "`invoke releases` (live and warm)",
            _second_release,
        ),
        Step(
            f"Roll back while {RATE} requests/s arrive",
            "a rollback is a switch at the proxy to a release that is already running: no "
            "build, no start, no request lost",
            "`invoke watch` (the share moving in one second), `invoke releases`",
            _roll_back,
        ),
    ),
    _check_rollback,
)


# bad-canary ------------------------------------------------------------------------------

SLOW = "            time.sleep(0.25)  # lesson bad-canary: this release is 250 ms slower\n"
CANARY_STEPS = (25, 100)
CANARY_INTERVAL = 10.0


def _slow_release(ctx: Ctx) -> str:
    where = _scratch(ctx).root
    page = where / "services/app/app/web.py"
    text = page.read_text()
    marker = '        if path == "/version":\n'
    if marker not in text:
        raise LessonError(f"services/app/app/web.py has no line {marker.strip()!r} to slow down")
    page.write_text(text.replace(marker, marker + SLOW, 1))
    ctx.facts["slow"] = git.short(git.commit_all(where, "lesson: /version 250 ms slower"))
    ctx.facts["clone"] = str(where)
    return f"commit {ctx.facts['slow']} answers /version 250 ms later (its tests still pass)"


def _canary_aborted(ctx: Ctx) -> str:
    lab, live = ctx.lab, ctx.facts["live"]
    folder = lab.state.dir / "lessons"
    clone = lab.at(Path(ctx.facts["clone"]))
    with load.running(rate=RATE, name="lesson-canary", folder=folder, max_seconds=300) as t:
        try:
            pipeline.deploy(
                clone,
                Progress(),
                "app",
                ctx.facts["slow"],
                "canary",
                CANARY_STEPS,
                CANARY_INTERVAL,
            )
        except CanaryAborted as exc:
            why = str(exc)
        else:
            raise LessonError(f"the judge promoted the slower release {ctx.facts['slow']}")
    served = _get().headers.get("X-Release", "")
    if served != live:
        raise LessonError(f"{APP} answers from {served!r} after the abort, not {live}")
    slow = [r for r in t.requests if r.ok and r.release == ctx.facts["slow"]]
    ctx.measured["judge"] = why.splitlines()[0]
    ctx.measured["load"] = (
        f"{len(t.requests)} requests at {RATE}/s, {len(t.failed)} failed; {len(slow)} answered "
        f"by the slow release before the abort, every other by {live}"
    )
    return ctx.measured["judge"]


def _check_bad_canary(lab: Lab) -> list[str]:
    aborted = [
        r
        for r in _history(lab)
        if r.result == "failed" and (r.failed_stage or "").startswith("canary-")
    ]
    if aborted:
        return []
    return [
        "no canary of app aborted by the judge yet: deploy a slower or failing commit with "
        "`invoke deploy --strategy canary` while `invoke load` runs"
    ]


BAD_CANARY = Lesson(
    "bad-canary",
    "a bad canary aborted by the judge",
    "a canary of app was aborted at one of its steps (a failed canary step in its records)",
    (
        NOTE_LIVE,
        Step(
            "Make a release that is slower for every request to /version",
            "a performance regression passes every functional test: only production traffic "
            "shows it",
            "`git -C .lab/lessons/clone-* show` (the one-line change)",
            _slow_release,
        ),
        Step(
            f"Deploy it as a canary ({CANARY_STEPS[0]} %, then all) while {RATE} requests/s arrive",
            f"the judge compares the canary with the live release at the edge after "
            f"{CANARY_INTERVAL:.0f} s: a p95 far above the live one's aborts it, and only a "
            "quarter of the users ever saw it",
            f"`invoke watch` (the canary's p99), the deploy's events on {DASHBOARD}",
            _canary_aborted,
        ),
    ),
    _check_bad_canary,
)


# proxy-killed ----------------------------------------------------------------------------


def _proxy(lab: Lab) -> Any:
    return lab.engine("prod").containers.get(f"{stack.PROJECT}_proxy_1")


def _kill_proxy(ctx: Ctx) -> str:
    lab = ctx.lab
    folder = lab.state.dir / "lessons"
    with load.running(rate=RATE, name="lesson-proxy", folder=folder, max_seconds=120) as t:
        time.sleep(2)
        out = outage.kill_and_wait(_proxy(lab), t, within=60)
    if not out.restarted:
        raise LessonError("the proxy was not started again within 60 s of being killed")
    back = out.back_s(t.requests)
    if not math.isfinite(back):
        raise LessonError("the proxy was started again but never answered without a failure")
    ctx.measured["proxy killed"] = (
        f"answering again {back:.1f} s after the kill; {len(t.failed)} of {len(t.requests)} "
        f"requests failed meanwhile"
    )
    return ctx.measured["proxy killed"]


def _check_proxy_killed(lab: Lab) -> list[str]:
    # Docker never restarts a killed container by itself (the host's keeper does, with `docker
    # start`, which RestartCount does not count): a container that stopped has a FinishedAt
    finished = str(_proxy(lab).attrs["State"].get("FinishedAt", ""))
    baseline = (lab.etcd.get(reset.BASELINE) or b"").decode()  # its last stop at a reset
    missing = []
    if not finished or finished.startswith("0001-") or finished == baseline:
        missing.append(
            "the proxy was never killed: `invoke lab.shell prod`, then "
            f"`docker kill {stack.PROJECT}_proxy_1` while `invoke load` runs"
        )
    try:
        ok = _get().status_code == 200
    except requests.RequestException:
        ok = False
    if not ok:
        missing.append(f"{APP} does not answer yet: the proxy's keeper restarts it, wait")
    return missing


PROXY_KILLED = Lesson(
    "proxy-killed",
    "the proxy killed under load",
    "the proxy was killed (its container stopped since it was made, or since the last "
    "lab.reset) and serves again",
    (
        Step(
            f"Kill the proxy (SIGKILL) while {RATE} requests/s arrive",
            "the proxy is the one part every request crosses: how long is the outage, and "
            "what brings the routes back?",
            "the load's figures below; `invoke watch` (failures, then the pool back from etcd)",
            _kill_proxy,
        ),
    ),
    _check_proxy_killed,
)


# immutable-server ------------------------------------------------------------------------

HOT_FIX = "/srv/app/app/web.py"  # the live app's code, as a hot-fix would change it


def _live_container(lab: Lab) -> Any:
    live = release.current_routes(lab, "app").live
    found = release.release_containers(lab.engine("prod"), "app", str(live), all=False)
    if not found:
        raise LessonError(f"app {live} has no running container on prod")
    return sorted(found, key=lambda c: c.name)[0]  # on a swarm, one of its replicas


def _hot_fix_refused(ctx: Ctx) -> str:
    container = _live_container(ctx.lab)
    edit = ["sh", "-c", f"echo '# hot-fix' >> {HOT_FIX}"]
    code, out = container.exec_run(edit, user="0")  # even as root
    said = out.decode(errors="replace").strip()
    if code == 0:
        raise LessonError(f"a hand edit of {HOT_FIX} in {container.name} went through")
    try:
        code_p, out_p = container.exec_run(edit, user="0", privileged=True)
    except Exception as exc:  # the engine refuses to start the process at all
        code_p, out_p = 126, str(exc).encode()
    if code_p == 0:
        raise LessonError(f"a privileged hand edit of {HOT_FIX} in {container.name} went through")
    privileged = out_p.decode(errors="replace").strip()
    ctx.measured["hot-fix inside"] = f"refused: {said.splitlines()[-1] if said else code}"
    return (
        f"as root in {container.name}: {ctx.measured['hot-fix inside']}; with --privileged: "
        f"refused too ({privileged.splitlines()[-1][:120] if privileged else 'no process'})"
    )


def _by_hand(ctx: Ctx) -> str:
    from lab.release import drift

    container = _live_container(ctx.lab)
    container.update(mem_limit="512m", memswap_limit="512m")
    found, _ = drift.check(ctx.lab, ["app"])
    named = (container.name, f"{container.name} on prod")  # on a swarm, with its node
    mine = [d for d in found if d.container in named and not d.unknown]
    if not mine:
        raise LessonError(f"`invoke drift` did not see the change made to {container.name}")
    ctx.facts["drifted"] = str(container.name)
    ctx.measured["drift seen"] = f"{container.name}: " + "; ".join(mine[0].what)
    return ctx.measured["drift seen"]


def _through_the_pipeline(ctx: Ctx) -> str:
    from lab.release import drift

    lab = ctx.lab
    where = Path(ctx.facts["clone"])
    sha = Chain(lab.state.at(where), where).commit()
    rec = pipeline.deploy(lab.at(where), Progress(out=None), "app", sha)
    found, _ = drift.check(lab, ["app"])
    live = [d for d in found if d.release == rec.release and not d.unknown]
    if live:
        raise LessonError(f"the new release {rec.release} drifts already: {live[0].what}")
    ctx.measured["replaced"] = (
        f"{rec.release} live after {rec.seconds:.1f} s, as its manifest says; "
        f"{ctx.facts['drifted']} is warm until the lesson ends, then removed"
    )
    return ctx.measured["replaced"]


def _check_immutable_server(lab: Lab) -> list[str]:
    from lab.release import drift

    missing = []
    if lab.etcd.get(drift.SEEN) is None:
        missing.append(
            "no drift seen yet: change a release by hand on prod (`invoke lab.shell prod`, then "
            "`docker update --memory 512m --memory-swap 512m app-RELEASE`) and run "
            "`invoke drift`"
        )
    found, _ = drift.check(lab, ["app"])
    live = release.current_routes(lab, "app").live
    if any(d.release == live and not d.unknown for d in found):
        missing.append(
            f"app's live release {live} still drifts: deploy a commit through the pipeline "
            "(`invoke dev.push` of a change)"
        )
    return missing


IMMUTABLE_SERVER = Lesson(
    "immutable-server",
    "an immutable server: a hand edit refused, a hand change detected as drift, then replaced "
    "through the pipeline",
    "drift was seen on prod (`invoke drift`) and app's live release runs as the pipeline made it",
    (
        NOTE_LIVE,
        Step(
            "Deploy a second release (the one you will change by hand)",
            "the release you put back at the end stays as the pipeline made it",
            "`invoke releases`",
            _second_release,
        ),
        Step(
            f"Try a hot-fix inside the live container: append to {HOT_FIX}",
            "a release's root is read-only and its capabilities dropped: what runs is exactly "
            "the image that was tested, whoever logs in",
            "`invoke lab.shell prod`, then `docker exec -u 0 app-RELEASE touch /srv/app/x`",
            _hot_fix_refused,
        ),
        Step(
            "Change it from outside anyway (`docker update --memory 512m`), then `invoke drift`",
            "a server changed by hand is a snowflake: the next deploy or a rebuild loses the "
            "change, and nobody knows it was there unless something compares",
            "`invoke drift` (what changed, and the fix), `invoke drift --json`",
            _by_hand,
        ),
        Step(
            "Make the change the right way: a commit, deployed by the pipeline",
            "the pipeline makes a new container from the manifest; a change you want to keep "
            "belongs in services/app/service.toml ([limits]), reviewed and tested",
            "`invoke drift` (the live release as the pipeline made it), `invoke releases`",
            _through_the_pipeline,
        ),
    ),
    _check_immutable_server,
)


# what a lesson measured that no record keeps: its figures, in the route store until a reset


def _keep(ctx: Ctx, lesson: str, figures: dict[str, Any]) -> None:
    ctx.lab.etcd.put(reset.RESULTS + lesson, json.dumps(figures).encode())


def _kept(lab: Lab, lesson: str) -> dict[str, Any] | None:
    raw = lab.etcd.get(reset.RESULTS + lesson)
    try:
        found = json.loads(raw) if raw else None
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


# naive-vs-bluegreen ----------------------------------------------------------------------


def _naive(ctx: Ctx) -> str:
    lab = ctx.lab
    ctx.facts["clone"] = str(_scratch(ctx).root)
    figures = strategies.strategy_runs(
        lab.state, _chain_at(ctx), "naive", 1, RATE, lambda text: None
    )
    ctx.facts["naive"] = json.dumps(figures)
    ctx.measured["naive stop/start"] = _figures_line(figures)
    return ctx.measured["naive stop/start"]


def _chain_at(ctx: Ctx) -> Chain:
    where = Path(ctx.facts["clone"])
    return Chain(ctx.lab.state.at(where), where)


def _figures_line(figures: dict[str, Any]) -> str:
    return (
        f"{figures['failed']} of {figures['total']} requests failed at {figures['rate']}/s; "
        f"longest gap without an answer {figures['longest_gap_ms']:.0f} ms"
    )


def _bluegreen(ctx: Ctx) -> str:
    figures = strategies.strategy_runs(
        ctx.lab.state, _chain_at(ctx), "bluegreen", 1, RATE, lambda text: None
    )
    ctx.measured["blue/green"] = _figures_line(figures)
    if figures["failed"]:
        raise LessonError(f"the blue/green deploy failed requests: {_figures_line(figures)}")
    naive = json.loads(ctx.facts["naive"])
    _keep(ctx, "naive-vs-bluegreen", {"naive": naive, "bluegreen": figures})
    return ctx.measured["blue/green"]


def _check_naive_vs_bluegreen(lab: Lab) -> list[str]:
    kept = _kept(lab, "naive-vs-bluegreen")
    if kept and "naive" in kept and kept.get("bluegreen", {}).get("failed") == 0:
        return []
    return [
        "no side-by-side measure of a naive deploy and a blue/green one under the same load "
        "yet: `invoke lesson.run naive-vs-bluegreen` (or `invoke bench --quick`, whose table "
        "has both)"
    ]


NAIVE_VS_BLUEGREEN = Lesson(
    "naive-vs-bluegreen",
    "a naive deploy and a blue/green one, side by side under the same load",
    "both deploys were measured under the same load, and blue/green failed no request",
    (
        NOTE_LIVE,
        Step(
            f"Deploy the naive way while {RATE} requests/s arrive: stop the old container, "
            "start the new one on the same port",
            "what most deploy scripts do: between the stop and the new process listening, "
            "every request fails (connection refused)",
            f"the count of failed requests; the container was on 127.0.0.1:"
            f"{public_port(services.CONTROL_PORT)} "
            "(no proxy in front), removed after",
            _naive,
        ),
        Step(
            "Deploy the blue/green way through cdlab's proxy, same load",
            "the new release starts beside the old one, is checked, then the proxy switches: "
            "a process is never missing behind the port",
            "`invoke releases` (the new release live, the old one warm), `invoke watch`",
            _bluegreen,
        ),
    ),
    _check_naive_vs_bluegreen,
)


# schema-change ---------------------------------------------------------------------------

PEOPLE, PEOPLE_PORT = "people", 8004  # a copy of app with its own database, removed at the end
PEOPLE_URL = f"http://{public_host()}:{public_port(PEOPLE_PORT)}"
SCHEMA_PATCHES = ("1-expand.patch", "2-read-new.patch", "3-contract.patch")
SCHEMA_STEPS = ("expand", "migrate reads", "contract")


def _people(ctx: Ctx) -> str:
    lab = ctx.lab
    root = _scratch(ctx).root
    git_ = ["git", "-C", str(root), "-c", "user.name=cdlab-lesson"]
    git_ += ["-c", "user.email=cdlab-lesson@cdlab.invalid"]
    shutil.copytree(root / "services/app", root / f"services/{PEOPLE}")
    manifest = root / f"services/{PEOPLE}/service.toml"
    text = manifest.read_text().replace('name = "app"', f'name = "{PEOPLE}"')
    manifest.write_text(text.replace("public_port = 8000", f"public_port = {PEOPLE_PORT}"))
    subprocess.run([*git_, "add", "-A"], check=True)
    subprocess.run([*git_, "commit", "-qm", f"{PEOPLE}: a copy of app"], check=True)
    shas = [git.short(git.commit(root))]
    patches = lab.config.root / "services/app/schema-change"
    for patch in SCHEMA_PATCHES:
        subprocess.run(
            [*git_, "am", "-q", "-p3", f"--directory=services/{PEOPLE}", str(patches / patch)],
            check=True,
            capture_output=True,
        )
        shas.append(git.short(git.commit(root)))

    def remove() -> str:
        _lock_free(lab)
        gone = release.remove_service(lab, PEOPLE, database=True)
        return f"{PEOPLE} removed ({len(gone)} thing(s): routes, frontend, containers, database)"

    ctx.undo.append((f"the {PEOPLE} service", remove))
    clone = lab.at(root)
    svc = services.load(root, PEOPLE)
    for sha in shas:  # built first: the deploys under load are what is watched
        pipeline.build(clone.state, Progress(out=None), svc, sha)
    rec = pipeline.deploy(clone, Progress(out=None), PEOPLE, shas[0], bake=0)
    ctx.facts["clone"] = str(root)
    ctx.facts["shas"] = " ".join(shas)
    return (
        f"{PEOPLE} {rec.release} serves {PEOPLE_URL}, its database at "
        f"{rec.schema.get('left', '?')}; the three commits built: {', '.join(shas[1:])}"
    )


def _three_releases(ctx: Ctx) -> str:
    lab = ctx.lab
    clone = lab.at(Path(ctx.facts["clone"]))
    shas = ctx.facts["shas"].split()
    folder = lab.state.dir / "lessons"
    seen = []
    with load.running(rate=RATE, name="lesson-schema", url=PEOPLE_URL, folder=folder) as t:
        time.sleep(2)
        for what, sha in zip(SCHEMA_STEPS, shas[1:], strict=True):
            with t.operation(f"deploy {sha} ({what})", target=sha):
                rec = pipeline.deploy(clone, Progress(out=None), PEOPLE, sha, bake=0)
            seen.append(f"{what} {sha} (database at {rec.schema.get('left', 'unchanged')})")
            ctx.say(f"    {seen[-1]}")
        time.sleep(1)
    lost = load.readback(t, PEOPLE_URL)
    figures = {
        "requests": len(t.requests),
        "failed": len(t.failed),
        "registered": len(t.registered()),
        "lost": len(lost),
    }
    ctx.measured["schema change"] = "; ".join(seen)
    ctx.measured["load"] = (
        f"{figures['requests']} requests at {RATE}/s, {figures['failed']} failed; "
        f"{figures['registered']} registrations, {figures['lost']} of them not read back"
    )
    if figures["failed"] or figures["lost"]:
        raise LessonError(f"the schema change lost something: {ctx.measured['load']}")
    _keep(ctx, "schema-change", figures)
    return ctx.measured["load"]


def _check_schema_change(lab: Lab) -> list[str]:
    kept = _kept(lab, "schema-change")
    if kept and kept.get("failed") == 0 and kept.get("lost") == 0:
        return []
    left = [r.schema.get("left", "") for r in _history(lab) if r.result == "succeeded"]
    expanded = next((i for i, v in enumerate(left) if v.startswith("0002")), None)
    if expanded is not None and any(v.startswith("0003") for v in left[expanded:]):
        return []
    return [
        "no schema change in three releases yet: on dev, `git am` each patch of "
        "services/app/schema-change/ in turn and push after each (its README says why three)"
    ]


SCHEMA_CHANGE = Lesson(
    "schema-change",
    "a column renamed in three releases (expand, migrate reads, contract) under load",
    "a column was renamed in three deploys, under load, without a failed request or a lost "
    "registration",
    (
        Step(
            f"Make '{PEOPLE}', a copy of app with its own database, and its first release",
            "the lesson renames a column; app's own database is never touched",
            f"{PEOPLE_URL}/version, services/app/schema-change/README.md (the plan)",
            _people,
        ),
        Step(
            f"Deploy expand, migrate reads and contract while {RATE} requests/s register users",
            "each migration runs while the release before it still serves: each step leaves a "
            "schema that every release still running can use, so none breaks",
            "the database version after each deploy (above), `invoke releases --service "
            f"{PEOPLE}`, `invoke watch --service {PEOPLE}`",
            _three_releases,
        ),
    ),
    _check_schema_change,
)


LESSONS = (
    FIRST_DEPLOY,
    BROKEN_BUILD,
    BROKEN_RELEASE,
    BAD_CANARY,
    ROLLBACK_DRILL,
    NAIVE_VS_BLUEGREEN,
    IMMUTABLE_SERVER,
    PROXY_KILLED,
    SCHEMA_CHANGE,
)
