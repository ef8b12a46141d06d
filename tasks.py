"""cdlab's command line: ``invoke --list``. Tasks parse arguments, call one ``lab`` function and
turn a ``LabError`` into ``Exit``; nothing else lives here."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from lab import config as lab_config
from lab import testing
from lab.errors import LabError, RunStopped, disk_full_hint
from lab.estate import lifecycle
from lab.estate.state import State
from lab.ports.lab import Lab
from lab.progress import Progress
from lab.release import history, judge, pipeline, records

F = TypeVar("F", bound=Callable[..., Any])


def presents_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:  # `invoke releases | head`: the reader stopped reading
            # no traceback and no flush error at exit; 141 as a shell says of SIGPIPE (a run
            # stopped this way undid what it did, like any other failure)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise Exit(code=141) from None
        except RunStopped as exc:  # SIGINT / SIGTERM: what was done is undone; 130 as a shell says
            raise Exit(f"cdlab: {exc}", code=130) from None
        except LabError as exc:
            raise Exit(f"cdlab: {exc}{disk_full_hint(exc)}", code=1) from None
        except OSError as exc:  # this machine's own: a full disk, a folder it may not write
            if not disk_full_hint(exc):
                raise
            raise Exit(f"cdlab: {exc}{disk_full_hint(exc)}", code=1) from None

    return wrapper  # type: ignore[return-value]


def _json_on_failure(lab: Lab, service: str, wanted: bool) -> AbstractContextManager[None]:
    """With ``--json``, a failed run's record on stdout too (``records.json_on_failure``)."""
    if not wanted:
        return nullcontext()
    secrets = lab.state.secret_values()
    return records.json_on_failure(lab.runs, service, lab.etcd, secrets, sys.stdout)


def the_lab() -> Lab:
    """The one ``Lab`` a task passes down (its clients are built on first use)."""
    return Lab(State(lab_config.load()))


@task(
    help={
        "take-over": "if another checkout of cdlab built the lab on this engine, remove its "
        "hosts and volumes first (its images are kept) instead of refusing"
    },
    auto_shortflags=False,  # --take-over is never one mistyped letter away
)
@presents_errors
def up(c: Context, take_over: bool = False) -> None:
    """Bring the lab up and deploy the checkout's commit (idempotent)."""
    progress = Progress()
    lifecycle.up(lab_config.load(), progress, take_over=take_over)
    progress.say(
        f"lab is up in {progress.total_seconds:.1f} s "
        f"({len(progress.changed)} stage(s) changed). 'invoke lab.status' shows it."
    )


@task(help={"json": "print machine-readable JSON instead of a table"})
@presents_errors
def status(c: Context, json_: bool = False) -> None:
    """Show each host: address, state, engine, running containers (and swarm node, if any)."""
    config = lab_config.load()
    rows = lifecycle.status(config)
    if json_:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(lifecycle.describe(config))
        print(lifecycle.render_status(rows))


@task(name="restart-workers")
@presents_errors
def restart_workers(c: Context) -> None:
    """Restart each worker of prod's swarm in turn, its replicas moved off it first (a swarm
    prod only; nothing fails under traffic)."""
    from lab.estate import rolling

    with Lab(State(lab_config.load())) as lab:
        rolling.restart_workers(lab, Progress())


@task(name="list", help={"json": "print machine-readable JSON instead of a table"})
@presents_errors
def list_(c: Context, json_: bool = False) -> None:
    """List the labs on this machine (the default one and each named one: CDLAB_LAB=NAME)."""
    rows = lifecycle.list_labs()
    print(json.dumps([asdict(r) for r in rows], indent=2) if json_ else lifecycle.render_labs(rows))


@task
@presents_errors
def reset(c: Context) -> None:
    """Put the lab back to its first state, keeping images (between two classes).

    Per service: the checkout's commit live and alone in the pool, the other releases removed
    (containers and registry tags), the database emptied (schema kept), the history cleared
    to one reset record; the dev clone at the checkout's commit. Run it again if stopped."""
    from lab.release import reset as lab_reset

    progress = Progress()
    with the_lab() as lab:
        live = lab_reset.reset(lab, progress)
    progress.say(
        f"lab reset in {progress.total_seconds:.1f} s: "
        + ", ".join(f"{name} {rel}" for name, rel in live.items())
        + " live, alone"
    )


@task
@presents_errors
def down(c: Context) -> None:
    """Stop the hosts; keep every container, volume and image."""
    lifecycle.down(lab_config.load(), Progress())


@task
@presents_errors
def destroy(c: Context) -> None:
    """Remove every container, volume, network and image of the lab."""
    lifecycle.destroy(lab_config.load(), Progress())


@task(
    help={
        "host": "an existing machine of the topology (hosts[].existing true)",
        "out": "where to write it: a file, or a folder for HOST.tar.gz (default: here)",
    }
)
@presents_errors
def bundle(c: Context, host: str, out: str = "") -> None:
    """Write an existing machine's bundle (HOST.tar.gz: its certificates, boot script and
    install-host.sh) to install on it before 'invoke lab.up'."""
    from lab.estate import existing

    path = existing.write_bundle(State(lab_config.load()), host, Path(out) if out else None)
    print(
        f"{path} (mode 0600: it holds {host}'s private key). On {host}, as root: "
        f"rm -rf {host} && tar xzf {path.name} && sh {host}/install-host.sh; then "
        "'invoke lab.up'."
    )


@task(help={"host": "registry, prod, cd or dev"})
@presents_errors
def shell(c: Context, host: str) -> None:
    """Open a shell on a lab host."""
    argv = lifecycle.shell_argv(lab_config.load(), host)
    os.execvp(argv[0], argv)


@task(
    help={
        "ref": "the commit, branch or tag to deploy (default: HEAD)",
        "service": "the service folder under services/ (default: app)",
        "strategy": "bluegreen (default) or canary",
        "steps": "canary: traffic shares per step, ending at 100 (default 10,25,50,100)",
        "interval": "canary: time per step before the judge decides (default 30s)",
        "match": "A/B: only requests with header:NAME=VALUE or cookie:NAME=VALUE reach the "
        "release, until invoke promote / invoke abort",
        "bake": "seconds the new release is watched after the switch before the previous one "
        "is let go (default: the manifest's bake, 10 s); 0 skips it",
        "force": "run a migration whose scratch check failed (the live release may break: "
        "for negative controls and emergencies)",
        "json": "print the run's record as JSON on stdout, a failed one's too (progress: stderr)",
    },
    auto_shortflags=False,  # --force is never one mistyped letter away
)
@presents_errors
def deploy(
    c: Context,
    ref: str = "HEAD",
    service: str = "app",
    strategy: str = "bluegreen",
    steps: str = "10,25,50,100",
    interval: str = "30s",
    match: str | None = None,
    bake: str | None = None,
    force: bool = False,
    json_: bool = False,
) -> None:
    """Deploy a commit: build on cd, test, start beside the live release, switch."""
    progress = Progress()
    with the_lab() as lab, _json_on_failure(lab, service, json_):
        record = pipeline.deploy(
            lab,
            progress,
            service,
            ref,
            strategy,
            judge.parse_steps(steps),
            judge.parse_interval(interval),
            match=match,
            bake=None if bake is None else judge.parse_interval(bake, "--bake", minimum=0),
            force=force,
        )
        secrets = lab.state.secret_values()
    if json_:
        print(records.as_json(record, secrets))
        return
    if record.kind == "match":
        progress.say(
            f"{record.service} {record.release} serves the requests with {match}; all others "
            f"stay on {record.previous} ({record.seconds:.1f} s). Next: 'invoke promote' makes "
            "it live, 'invoke abort' removes it."
        )
        return
    progress.say(
        f"{record.service} {record.release} is live (was {record.previous or 'nothing'})"
        f" in {record.seconds:.1f} s"
    )


@task(
    name="push",
    help={"message": "the commit message for what changed in the dev clone"},
)
@presents_errors
def dev_push(c: Context, message: str = "change made on dev") -> None:
    """Commit what changed in dev's clone, push it to cd and follow the deploy it starts."""
    from lab.release import devloop

    head = devloop.push(lab_config.load(), message)
    print(f"dev: {head} pushed to cd and deployed")


@task(name="shell")
@presents_errors
def dev_shell(c: Context) -> None:
    """Open a shell on dev in its clone: edit (nano, vi), commit, then invoke dev.push."""
    from lab.release import devloop

    argv = lifecycle.shell_argv(lab_config.load(), "dev", devloop.CLONE)
    os.execvp(argv[0], argv)


@task(help={"service": "the service whose candidate to promote (default: app)"})
@presents_errors
def promote(c: Context, service: str = "app") -> None:
    """Make the candidate on matched traffic live, or promote a running canary now."""
    progress = Progress()
    with the_lab() as lab:
        progress.say(pipeline.decide(lab, progress, service, "promote"))


@task(help={"service": "the service whose candidate to abort (default: app)"})
@presents_errors
def abort(c: Context, service: str = "app") -> None:
    """Remove the candidate on matched traffic, or abort a running canary.

    Every request goes back to the live release."""
    progress = Progress()
    with the_lab() as lab:
        progress.say(pipeline.decide(lab, progress, service, "abort"))


@task(
    help={
        "to": "the release to go back to (default: the previous one)",
        "service": "the service (default: app)",
        "migrate-down": "when that release does not work with the database's schema: migrate "
        "it down first ([migrate] downgrade), once a scratch copy shows that safe",
        "json": "print the run's record as JSON on stdout (a failed one's too), with "
        "switch_to_all_ms",
    },
    auto_shortflags=False,  # --migrate-down is never one mistyped letter away
)
@presents_errors
def rollback(
    c: Context,
    to: str | None = None,
    service: str = "app",
    migrate_down: bool = False,
    json_: bool = False,
) -> None:
    """Put all traffic back on the previous release (from the registry if it is gone)."""
    progress = Progress()
    with the_lab() as lab, _json_on_failure(lab, service, json_):
        record, seconds = pipeline.rollback(lab, progress, service, to, migrate_down)
        secrets = lab.state.secret_values()
    if json_:
        print(records.as_json(record, secrets, switch_to_all_ms=round(seconds * 1000, 1)))
        return
    progress.say(
        f"rolled back {record.service} to {record.release}: 100% of responses from it "
        f"{seconds * 1000:.0f} ms after the switch"
    )


@task(
    help={
        "service": "the service (default: app)",
        "release": "only this release's lines (default: every release of the service)",
        "since": "how far back: 90s, 5m, 2h (default: 10m)",
        "follow": "keep printing new lines until Ctrl-C",
        "lines": "only the last N lines",
        "json": "one JSON object per line",
    }
)
@presents_errors
def logs(
    c: Context,
    service: str = "app",
    release: str = "",
    since: str = "10m",
    follow: bool = False,
    lines: int = 0,
    json: bool = False,
) -> None:
    """Show a service's logs: its releases' output and the proxy's request lines.

    From the lab's log store, by release, also of releases gone since."""
    from lab.ports import logs as store
    from lab.stack import services

    argv = store.query_argv(
        services.load(lab_config.load().root, service).name,
        release or None,
        store.parse_since(since),
        follow,
        lines or None,
        json,
    )
    with the_lab() as lab:
        try:
            code = store.read(store.store_container(lab.engine("prod")), argv, sys.stdout)
        except KeyboardInterrupt:  # the end of a follow
            code = 0
    if code:  # the store said why (NO_LOGS: which services and releases it has)
        sys.exit(code)


@task(
    help={
        "service": "the service (default: app)",
        "json": "print a JSON list (newest first) instead of a table",
    }
)
@presents_errors
def releases(c: Context, service: str = "app", json_: bool = False) -> None:
    """Show a service's releases: live, warm, retained or pruned, newest first."""
    with the_lab() as lab:
        rows = history.releases(lab, service)
    print(history.releases_json(rows) if json_ else history.render_releases(rows))


@task(
    help={
        "release": "the release (12 hex digits, as `invoke releases` lists it)",
        "service": "the service (default: app)",
        "remove": "lift the pin instead (retention may then prune the release)",
    },
    auto_shortflags=False,  # --remove is never one mistyped letter away
)
@presents_errors
def pin(c: Context, release: str, service: str = "app", remove: bool = False) -> None:
    """Keep a release in the registry whatever the manifest's retain says."""
    with the_lab() as lab:
        print(history.pin(lab, service, release, remove))


@task(name="release")
@presents_errors
def lock_release(c: Context) -> None:
    """Remove the deploy lock (only when no deploy is running)."""
    with the_lab() as lab:
        holder = pipeline.release_lock(lab)
    print(
        f"released the lock held by {holder.who} since {holder.since} ({holder.what})"
        if holder
        else "no deploy lock was held"
    )


@task(name="status")
@presents_errors
def lock_status(c: Context) -> None:
    """Who holds the deploy lock, if anyone."""
    with the_lab() as lab:
        holder = pipeline.lock_holder(lab)
    print(
        f"held by {holder.who} (pid {holder.pid}) since {holder.since}: {holder.what}"
        if holder
        else "the deploy lock is free"
    )


@task(
    name="apply",
    help={
        "ref": "the commit whose compose/stack.yml and stack images to apply (default: HEAD)",
        "dry-run": "only say what would be created or recreated, and why",
    },
)
@presents_errors
def stack_apply(c: Context, ref: str = "HEAD", dry_run: bool = False) -> None:
    """Apply the stack's compose file and images to prod, saying what changes and why.

    Says which containers it will create or recreate and why, then does it (deploys never
    recreate the stack)."""
    from lab.stack import converge

    progress = Progress()
    todo = converge.converge(State(lab_config.load()), progress, ref, dry_run)
    verb = "would make" if dry_run else "made"
    progress.say(f"stack: {verb} {len(todo)} change(s)" if todo else "stack: nothing to change")


@task(
    help={
        "suite": "a marker expression, e.g. 'unit' or 'e2e and not load'",
        "workers": "pytest-xdist workers (default: auto)",
    }
)
@presents_errors
def test(c: Context, suite: str = "", workers: str = "auto") -> None:
    """Run the whole test suite (unit, integration, end-to-end on the lab).

    Text after ``--`` goes to pytest: ``invoke test -- tests/unit -k judge``."""
    testing.refuse_named_lab(os.environ.get("CDLAB_LAB", ""), suite)
    argv = testing.pytest_argv(suite, workers, c.remainder)
    sys.exit(testing.run_pytest(argv))


@task(
    help={
        "quick": "a few deploys per strategy at 300 req/s only (minutes, not an hour)",
        "edge-cost": "only what the edge's figures cost the proxy's throughput (about 8 minutes)",
        "faults": "only a prod host lost under load: a swarm worker killed (on a swarm prod) "
        "beside prod's engine restarted (about 4 minutes)",
    }
)
@presents_errors
def bench(c: Context, quick: bool = False, edge_cost: bool = False, faults: bool = False) -> None:
    """Measure cdlab against the alternatives (results in bench/results/).

    Writes bench/results/<stamp>-<commit>.json and .md."""
    from lab.proof import bench as lab_bench

    state = State(lab_config.load())
    if edge_cost:
        path = lab_bench.edge_cost(state, say=lambda text: print(text, flush=True))
        print(path.read_text())
        print(f"results: {path}")
        return
    if faults:
        path = lab_bench.faults(state, say=lambda text: print(text, flush=True))
        print(lab_bench.faults_table(json.loads(path.read_text())))
        print(f"results: {path} and {path.with_suffix('.md')}")
        return
    path = lab_bench.run(state, quick, say=lambda text: print(text, flush=True))
    print(lab_bench.table(json.loads(path.read_text())))
    print(f"results: {path} and {path.with_suffix('.md')}")


@task(
    name="load",
    help={
        "rate": "requests per second (default 50; at most 500)",
        "for": "how long: 90s, 5m, 1h (default 5m; at most 1h); Ctrl-C ends it sooner",
        "service": "the service to load through its public port (default: app)",
        "ui": "also serve locust's web page on 127.0.0.1:8089",
        "ui-port": "serve locust's web page on this port instead (implies --ui)",
    },
)
@presents_errors
def load_task(
    c: Context,
    rate: str = "50",
    for_: str = "5m",
    service: str = "app",
    ui: bool = False,
    ui_port: int = 0,
) -> None:
    """Put the suite's load on a service for a while, then summarize what it saw.

    Requests, failed, p50/p99 and the share of each release: traffic for a canary's judge or
    for a class to watch."""
    from lab.proof import demand

    page = ui_port or (demand.UI_PORT if ui else None)
    wanted = demand.plan(lab_config.load().root, service, rate, for_, page)
    with the_lab() as lab:
        summary = demand.run(lab, wanted, say=lambda text: print(text, flush=True))
    print(demand.render(summary))


@task(
    help={
        "once": "print one frame and exit (for copy-paste and tests)",
        "service": "only this service (default: every service)",
    }
)
@presents_errors
def watch(c: Context, once: bool = False, service: str = "") -> None:
    """Watch the lab live: traffic per release, the proxy's pool, the deploy in progress.

    Refreshed every second until Ctrl-C: per service, requests/s, failures, p50/p99 and the
    share of each release at the edge; the proxy's pool (weights, UP/DOWN/draining); the
    deploy lock's holder and the stage each release run is at."""
    from rich.console import Console

    from lab.proof import watch as view
    from lab.stack import services

    root = lab_config.load().root
    names = [services.load(root, service).name] if service else services.names(root)
    with the_lab() as lab:
        if once:
            view.once(lab, names, Console(width=110))
        else:
            view.live(lab, names, Console())


@task(
    help={
        "service": "only this service (default: every service)",
        "json": "print a JSON list of the findings instead of text",
    },
    auto_shortflags=False,
)
@presents_errors
def drift(c: Context, service: str = "", json_: bool = False) -> None:
    """Say whether prod runs exactly what the pipeline made; exit 1 if not.

    Each release container against its cdlab.made label (image, user, read-only root,
    capabilities, memory, pids, CPUs, restart policy, environment), and each service's pool
    against the containers that run: changed by hand (docker update), replaced, stopped,
    missing, or running outside the pool. Each finding comes with its fix."""
    from lab.release import drift as lab_drift
    from lab.stack import services

    root = lab_config.load().root
    names = [services.load(root, service).name] if service else services.names(root)
    with the_lab() as lab:
        found, checked = lab_drift.check(lab, names)
    print(lab_drift.as_json(found) if json_ else lab_drift.render(found, checked))
    if lab_drift.drifted(found):
        raise Exit(code=1)


@task(name="list")
def lesson_list(c: Context) -> None:
    """List the lessons: name, title and the goal lesson.check verifies."""
    from lab.lessons.catalog import LESSONS

    for lesson in LESSONS:
        print(f"{lesson.name:16} {lesson.title}\n{'':16} goal: {lesson.goal}")


@task(
    name="run",
    help={
        "name": "the lesson (invoke lesson.list)",
        "step": "wait for Enter after each step",
    },
)
@presents_errors
def lesson_run(c: Context, name: str, step: bool = False) -> None:
    """Run a lesson on the lab, narrated step by step; what it changed is put back."""
    from lab import lessons
    from lab.lessons.catalog import LESSONS

    lesson = lessons.find(LESSONS, name)
    wait = (lambda: input("    (Enter for the next step) ")) if step else None
    with the_lab() as lab:
        lessons.run(lesson, lab, say=lambda text: print(text, flush=True), wait=wait)


@task(name="check", help={"name": "the lesson (invoke lesson.list)"})
@presents_errors
def lesson_check(c: Context, name: str) -> None:
    """Say whether this lab reached a lesson's goal (yes/no and what is missing); exit 1 if no."""
    from lab import lessons
    from lab.lessons.catalog import LESSONS

    lesson = lessons.find(LESSONS, name)
    with the_lab() as lab:
        _say_check(lesson, lab)


@task(name="solve", help={"name": "the lesson (invoke lesson.list)"})
@presents_errors
def lesson_solve(c: Context, name: str) -> None:
    """Do a lesson's steps for who is stuck (no pauses), then check its goal."""
    from lab import lessons
    from lab.lessons.catalog import LESSONS

    lesson = lessons.find(LESSONS, name)
    with the_lab() as lab:
        lessons.run(lesson, lab, say=lambda text: print(text, flush=True))
        _say_check(lesson, lab)


def _say_check(lesson: Any, lab: Lab) -> None:
    """Print whether ``lab`` reached ``lesson``'s goal; exit 1 when it has not."""
    from lab import lessons

    missing = lessons.check(lesson, lab)
    print(lessons.render_check(lesson, missing))
    if missing:
        raise Exit(code=1)


@task
def lint(c: Context) -> None:
    """ruff (lint + format check) and mypy --strict."""
    py = sys.executable  # the project's environment, activated or not
    c.run(f"{py} -m ruff check .", echo=True)
    c.run(f"{py} -m ruff format --check .", echo=True)
    c.run(f"{py} -m mypy", echo=True)


lab_ns = Collection("lab", up, status, list_, reset, down, destroy, shell, restart_workers, bundle)
lock_ns = Collection("lock", lock_release, lock_status)
dev_ns = Collection("dev", dev_push, dev_shell)
stack_ns = Collection("stack", stack_apply)
lesson_ns = Collection("lesson", lesson_list, lesson_run, lesson_check, lesson_solve)
ns = Collection(
    lab_ns,
    lock_ns,
    dev_ns,
    stack_ns,
    lesson_ns,
    bench,
    load_task,
    watch,
    drift,
    deploy,
    promote,
    abort,
    rollback,
    releases,
    pin,
    logs,
    test,
    lint,
)
