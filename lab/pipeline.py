"""Deploy and rollback as recorded, locked runs: what the ``deploy``/``rollback`` tasks call.

Every run holds the deploy lock (etcd lease) while it changes prod and writes a flight record
to ``.lab/runs/`` whether it succeeds or fails.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab import checks, git, judge, lock, records, release, report, routes, services, stack
from lab.build import Built
from lab.config import public_host
from lab.errors import ConfigError, LabError
from lab.metrics import GRAPHITE_PORT
from lab.progress import Progress
from lab.state import State

public_url = services.public_url


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
) -> records.Record:
    """Build ``ref`` of ``service_name`` on cd (if needed), make sure the stack is up, and make
    it the live release: all at once (``bluegreen``) or by ``steps`` with a judge at each one
    (``canary``). Raises after writing a failed record."""
    if strategy not in ("bluegreen", "canary"):
        raise ConfigError("--strategy", strategy, "bluegreen or canary")
    root = state.config.root
    sha = git.commit(root, ref)
    services.load(root, service_name)  # an unknown service is refused before anything runs
    files = git.files(root, sha, f"services/{service_name}")
    service = services.at_commit(root, sha, service_name, files)
    started, error, previous, image = records.now(), None, None, ""
    try:
        with progress.stage(f"static checks of {service.folder} at {git.short(sha)}") as st:
            found = checks.problems(files)
            if found:
                raise checks.CheckError(service.folder, git.short(sha), found)
            st.unchanged(f"{len(files)} files: manifest, Python syntax, TOML, JSON, Dockerfiles")
        built = build(state, progress, service, sha)
        ensure_stack(state, built, progress)
        candidate = release.candidate(service, built, git.short(sha))
        image = candidate.image
        etcd = release.route_store(state)
        with lock.held(etcd, f"deploy {service.name} {candidate.release}"):
            previous = release.current_routes(state, service.name).live
            release.deploy(
                state,
                candidate,
                progress,
                public_url(service),
                steps=steps if strategy == "canary" else (100,),
                interval=interval,
                thresholds=thresholds or service.thresholds,
            )
            with progress.stage(f"retain {service.retain} releases of {service.name}") as st:
                history = [*deployed(state, service.name), candidate.release]
                kept, pruned = release.prune(state, service, history)
                note = f"kept {', '.join(kept)}"
                st.changed(f"pruned {', '.join(pruned)}; {note}") if pruned else st.unchanged(note)
    except LabError as exc:
        error = exc
        raise
    finally:
        rec = records.make(
            "deploy",
            service.name,
            git.short(sha),
            previous,
            image,
            strategy,
            started,
            progress,
            error,
        )
        if previous != rec.release or error:  # "already live" is not a deploy worth a record
            keep(state, rec)
    return rec


def keep(state: State, rec: records.Record) -> None:
    """The record in ``.lab/runs/``, in the route store (shared history) and copied to cd."""
    path = records.write(state.runs, rec)
    records.publish(release.route_store(state), rec)
    records.copy_to_cd(state.config, path)


def build(
    state: State, progress: Progress, service: services.Service, sha: str
) -> dict[str, Built]:
    """Every image the release needs (the stack's and the service's), in the registry: built
    on cd only when missing."""
    base = f"{state.config.registry_addr}/{(state.dir / 'base-image').read_text().strip()}"
    specs = stack.infra_specs(state, sha, base) + stack.service_specs(service, sha)
    return stack.build(state, specs, sha, progress)


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
        if r.result == "succeeded"
    ]


@dataclass(frozen=True)
class ReleaseRow:
    release: str
    status: str  # live, warm (drained, ready for rollback), retained (in the registry)
    last_made_live: str
    by: str


def releases(state: State, service: str = "app") -> list[ReleaseRow]:
    current = release.current_routes(state, service)
    warm = routes.previous(current)
    rows: dict[str, ReleaseRow] = {}
    for rec in records.history(state.runs, service, release.route_store(state)):
        if rec.result != "succeeded":
            continue
        status = (
            "live" if rec.release == current.live else "warm" if rec.release == warm else "retained"
        )
        rows[rec.release] = ReleaseRow(rec.release, status, rec.started, rec.trigger)
    for rel in filter(None, (current.live, warm)):  # deployed before records existed
        if rel not in rows:
            rows[rel] = ReleaseRow(rel, "live" if rel == current.live else "warm", "?", "?")
    return sorted(rows.values(), key=lambda r: r.last_made_live, reverse=True)


def render_releases(rows: list[ReleaseRow]) -> str:
    return report.table(
        ("RELEASE", "STATUS", "LAST MADE LIVE", "BY"),
        [(r.release, r.status, r.last_made_live, r.by) for r in rows],
    )


def release_lock(state: State) -> lock.Holder | None:
    return lock.release(release.route_store(state))


def canary_command(state: State, service: str, command: str) -> None:
    """Tell a running canary to ``promote`` or ``abort`` now."""
    release.route_store(state).put(release.CANARY_KEY + service, command.encode())
