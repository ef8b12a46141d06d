"""Deploy and rollback as recorded, locked runs: what the ``deploy``/``rollback`` tasks call.

Every run holds the deploy lock (etcd lease) while it changes prod and writes a flight record
to ``.lab/runs/`` whether it succeeds or fails.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from lab import report
from lab.build import checks, git
from lab.build.builder import Built, ImageSpec
from lab.config import public_host
from lab.errors import ConfigError, LabError
from lab.estate.images import REPOSITORY
from lab.estate.state import State
from lab.ports.metrics import GRAPHITE_PORT
from lab.progress import Progress
from lab.release import engine as release
from lab.release import judge, lock, records, routes
from lab.stack import project as stack
from lab.stack import services

public_url = services.public_url
MADE_LIVE = ("deploy", "rollback")  # record kinds after which a release served everyone


def graphite_url() -> str:
    return f"http://{public_host()}:{GRAPHITE_PORT}"


def deploy_current(state: State, progress: Progress) -> dict[str, str]:
    """The checkout's current commit of every service live (what ``lab.up`` ends with);
    returns service -> release."""
    root = state.config.root
    if git.dirty(root):
        progress.say(
            "note: uncommitted changes are not deployed; deploying commit "
            f"{git.short(git.commit(root))}"
        )
    return {name: deploy(state, progress, name, "HEAD").release for name in services.names(root)}


def deploy(
    state: State,
    progress: Progress,
    service_name: str = "app",
    ref: str = "HEAD",
    strategy: str = "bluegreen",
    steps: tuple[int, ...] = (10, 25, 50, 100),
    interval: float = 30.0,
    thresholds: judge.Thresholds | None = None,
    match: str | None = None,
) -> records.Record:
    """Build ``ref`` of ``service_name`` on cd (if needed), make sure the stack is up, and make
    it the live release: all at once (``bluegreen``) or by ``steps`` with a judge at each one
    (``canary``). With ``match`` (``header:NAME=VALUE`` or ``cookie:NAME=VALUE``) the release
    only serves matching requests until ``promote`` or ``abort``. Raises after writing a failed
    record."""
    if strategy not in ("bluegreen", "canary"):
        raise ConfigError("--strategy", strategy, "bluegreen or canary")
    if match is not None and strategy != "bluegreen":
        raise ConfigError("--match", match, "no --strategy (matched traffic is all or nothing)")
    rule = routes.parse_match(match) if match is not None else None
    root = state.config.root
    sha = git.commit(root, ref)
    services.load(root, service_name)  # an unknown service is refused before anything runs
    files = git.files(root, sha, f"services/{service_name}")
    service = services.at_commit(root, sha, service_name, files)
    started, error, previous, image = records.now(), None, None, ""
    background: ThreadPoolExecutor | None = None
    built: dict[str, Built] = {}
    test_build: Future[Built] | None = None
    try:
        with progress.stage(f"static checks of {service.folder} at {git.short(sha)}") as st:
            found = checks.problems(files)
            if found:
                raise checks.CheckError(service.folder, git.short(sha), found)
            st.unchanged(f"{len(files)} files: manifest, Python syntax, TOML, JSON, Dockerfiles")
        specs = image_specs(state, service, sha)
        tests = next((s for s in specs if s.name == f"{service.name}-test"), None)
        # the integration-test image is not needed before the candidate is healthy: it is
        # built, pushed and pulled onto prod meanwhile, off the critical path
        background = ThreadPoolExecutor(1, thread_name_prefix="test-image")
        test_build = background.submit(integration_test_image, state, tests, sha) if tests else None
        built = stack.build(state, [s for s in specs if s is not tests], sha, progress)
        ensure_stack(state, built, progress)
        candidate = release.candidate(service, built, git.short(sha), test_build)
        image = candidate.image
        etcd = release.route_store(state)
        what = f"deploy {service.name} {candidate.release}"
        with lock.held(etcd, what + (" (canary)" if strategy == "canary" else "")):
            refuse_while_matched(state, service.name, rule is not None)
            previous = release.current_routes(state, service.name).live
            release.deploy(
                state,
                candidate,
                progress,
                public_url(service),
                steps=steps if strategy == "canary" else (100,),
                interval=interval,
                thresholds=thresholds or service.thresholds,
                match=dataclasses.replace(rule, release=candidate.release) if rule else None,
            )
            if rule is None:
                retain(state, progress, service, candidate.release)
    except LabError as exc:
        error = exc
        raise
    finally:
        if background is not None:  # a failure before the tests still waits for that build
            background.submit(tidy_builder, state, built, test_build)
            background.shutdown(wait=True)
        rec = records.make(
            "match" if rule else "deploy",
            service.name,
            git.short(sha),
            previous,
            image,
            "match" if rule else strategy,
            started,
            progress,
            error,
        )
        if previous != rec.release or error:  # "already live" is not a deploy worth a record
            keep(state, rec)
    return rec


def tidy_builder(state: State, built: dict[str, Built], test_build: Future[Built] | None) -> None:
    """Off the critical path (after the switch, or the failure): the images this deploy pushed
    leave cd (the registry holds them); see ``Builder.tidy``."""
    made = [b for b in built.values() if b.built]
    if test_build is not None and test_build.done() and test_build.exception() is None:
        made += [test_build.result()] if test_build.result().built else []
    try:
        said = stack.tidy_builder(state, [b.ref for b in made])
    except Exception as exc:  # housekeeping: never what a deploy fails on; the log says it
        said = f"failed: {exc}"
    with (state.logs / "builder-tidy.log").open("a") as log:
        log.write(f"{records.now():%Y-%m-%dT%H:%M:%SZ} {said}\n")


def refuse_while_matched(state: State, service: str, matching: bool) -> None:
    """One candidate at a time: while one serves matched traffic, deploys wait for a decision;
    a matched deploy needs a live release to serve everyone else."""
    current = release.current_routes(state, service)
    if current.match:
        raise release.ReleaseError(
            f"{service}: release {current.match.release} serves the requests with "
            f"{current.match.rule} (the others go to {current.live}). Decide on it first: "
            f"'invoke promote --service {service}' makes it live, "
            f"'invoke abort --service {service}' removes it."
        )
    if matching and not current.live:
        raise ConfigError(
            "--match", None, f"a live release of {service} for the other requests; deploy one first"
        )


def retain(state: State, progress: Progress, service: services.Service, made_live: str) -> None:
    with progress.stage(f"retain {service.retain} releases of {service.name}") as st:
        history = [*deployed(state, service.name), made_live]
        kept, pruned = release.prune(state, service, history)
        note = f"kept {', '.join(kept)}"
        st.changed(f"pruned {', '.join(pruned)}; {note}") if pruned else st.unchanged(note)


def keep(state: State, rec: records.Record) -> None:
    """The record in ``.lab/runs/``, in the route store (shared history) and copied to cd."""
    path = records.write(state.runs, rec)
    records.publish(release.route_store(state), rec)
    records.copy_to_cd(state.config, path)


def image_specs(state: State, service: services.Service, sha: str) -> list[ImageSpec]:
    """Every image a release of ``service`` at ``sha`` needs: the stack's and the service's."""
    base = f"{state.config.registry_addr}/{(state.dir / 'base-image').read_text().strip()}"
    return stack.infra_specs(state, sha, base) + stack.service_specs(service, sha)


def build(
    state: State, progress: Progress, service: services.Service, sha: str
) -> dict[str, Built]:
    """Every image the release needs, in the registry: built on cd only when missing."""
    return stack.build(state, image_specs(state, service, sha), sha, progress)


def integration_test_image(state: State, spec: ImageSpec, sha: str) -> Built:
    """The integration-test image in the registry (built on cd when missing) and on prod."""
    built = stack.build(state, [spec], sha, Progress(out=None))[spec.name]
    stack.pull(state, "prod", [built.pinned])
    return built


def ensure_stack(state: State, built: dict[str, Built], progress: Progress) -> None:
    with progress.stage(f"stack on prod (compose project {stack.PROJECT})") as st:
        out = stack.up(state, built)
        names = stack.wait_healthy(state)
        created = {
            line.split()[1]
            for line in out.splitlines()
            if line.startswith(("Creating ", "Recreating ", "Starting ")) and len(line.split()) > 1
        }
        if created:
            st.changed(f"{len(created)} container(s) (re)created or started")
        else:
            st.unchanged(f"{len(names)} containers healthy")


def rollback(
    state: State, progress: Progress, service_name: str = "app", to: str | None = None
) -> tuple[records.Record, float]:
    """All traffic back to the previous release (or ``to``); the seconds until 100 % of
    responses came from it."""
    service = services.load(state.config.root, service_name)
    current = release.current_routes(state, service.name)
    target = routes.rollback_target(current, deployed(state, service.name), to)
    started, error, seconds = records.now(), None, 0.0
    try:
        with lock.held(release.route_store(state), f"rollback {service.name} to {target}"):
            seconds = release.rollback(state, service, target, progress, public_url(service))
    except LabError as exc:
        error = exc
        raise
    finally:
        rec = records.make(
            "rollback",
            service.name,
            target,
            current.live,
            "",
            "bluegreen",
            started,
            progress,
            error,
        )
        rec = records.Record(**{**rec.__dict__, "timings": {**rec.timings, "to_100": seconds}})
        keep(state, rec)
    return rec, seconds


def deployed(state: State, service: str) -> list[str]:
    """Releases made live by a successful run, oldest first (a release may repeat)."""
    return [
        r.release
        for r in records.history(state.runs, service, release.route_store(state))
        if r.result == "succeeded" and r.kind in MADE_LIVE
    ]


@dataclass(frozen=True)
class ReleaseRow:
    release: str
    status: str  # live, warm (drained, ready for rollback), retained (in the registry)
    last_made_live: str
    by: str


def releases(state: State, service: str = "app") -> list[ReleaseRow]:
    """Every release made live, newest first: live, warm (drained, ready for an instant
    rollback), retained (in the registry: a rollback starts it by digest) or pruned; a release
    on matched traffic comes first."""
    current = release.current_routes(state, service)
    warm = routes.previous(current)
    in_registry = set(state.registry_client().tags(f"{REPOSITORY}/{service}"))
    rows: dict[str, ReleaseRow] = {}
    for rec in records.history(state.runs, service, release.route_store(state)):
        if rec.result != "succeeded" or rec.kind not in MADE_LIVE:
            continue
        status = (
            "live"
            if rec.release == current.live
            else "warm"
            if rec.release == warm
            else "retained"
            if rec.release in in_registry
            else "pruned"
        )
        rows[rec.release] = ReleaseRow(rec.release, status, rec.started, rec.trigger)
    for rel in filter(None, (current.live, warm)):  # deployed before records existed
        if rel not in rows:
            rows[rel] = ReleaseRow(rel, "live" if rel == current.live else "warm", "?", "?")
    ordered = sorted(rows.values(), key=lambda r: r.last_made_live, reverse=True)
    if current.match:
        m = current.match
        ordered = [ReleaseRow(m.release, f"matched ({m.rule})", "-", "-")] + [
            r for r in ordered if r.release != m.release
        ]
    return ordered


def render_releases(rows: list[ReleaseRow]) -> str:
    return report.table(
        ("RELEASE", "STATUS", "LAST MADE LIVE", "BY"),
        [(r.release, r.status, r.last_made_live, r.by) for r in rows],
    )


def release_lock(state: State) -> lock.Holder | None:
    return lock.release(release.route_store(state))


def decide(state: State, progress: Progress, service_name: str, command: str) -> str:
    """``promote`` or ``abort`` the candidate on matched traffic (a recorded run), or tell a
    running canary to do so now. Returns what happened."""
    current = release.current_routes(state, service_name)
    if current.match is None:
        holder = lock.current(release.route_store(state))
        what = holder.what if holder else ""
        if not (what.startswith(f"deploy {service_name} ") and what.endswith("(canary)")):
            raise ConfigError(
                f"invoke {command} --service",
                service_name,
                "a service with a release on matched traffic (deploy --match) or a running "
                "canary (deploy --strategy canary); 'invoke releases' shows what is live",
            )
        release.route_store(state).put(release.CANARY_KEY + service_name, command.encode())
        return f"asked the running canary ({what}) to {command}"
    service = services.load(state.config.root, service_name)
    target = current.match.release
    started, error = records.now(), None
    try:
        with lock.held(release.route_store(state), f"{command} {service.name} {target}"):
            current = release.current_routes(state, service.name)
            if current.match is None or current.match.release != target:
                raise release.ReleaseError(
                    f"{service.name}: {target} left matched traffic meanwhile"
                )
            if command == "abort":
                release.abort_matched(state, current, progress)
                return f"{target} aborted; every request on {current.live}"
            candidate = release.from_registry(state, service, target)
            release.go_live(state, candidate, current, progress, public_url(service))
            retain(state, progress, service, target)
            return f"{target} promoted: live for every request (was {current.live})"
    except LabError as exc:
        error = exc
        raise
    finally:
        rec = records.make(
            "deploy" if command == "promote" else "abort",
            service.name,
            target,
            current.live,
            "",
            "match",
            started,
            progress,
            error,
        )
        keep(state, rec)
