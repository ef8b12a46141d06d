"""Release runs as the tasks call them: deploy, rollback, promote, abort. Each one reads facts,
plans, and applies the plan under the deploy lock (an etcd lease), then writes a flight record
to ``.lab/runs/`` (and the route store) whatever the result: succeeded, failed or interrupted.

    deploy:  static checks -> images on cd -> stack present -> [lock] facts -> plan -> apply
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

from lab.build import git
from lab.build.builder import Built
from lab.errors import ConfigError, LabError, ReleaseError, RunStopped, Stop
from lab.estate.images import REPOSITORY
from lab.estate.state import State
from lab.ports import frontends, metrics
from lab.ports.lab import Lab
from lab.progress import Progress
from lab.release import (
    actions,
    activity,
    apply,
    history,
    judge,
    lock,
    plan,
    records,
    replicas,
    routes,
    schema,
    signals,
    swarm,
    verify,
)
from lab.release.model import Candidate, Facts, Options, Plan
from lab.release.prelude import build as build  # the images a release needs (public)
from lab.release.prelude import (
    ensure_stack,
    image_specs,
    integration_test_image,
    service_at,
    static_checks,
    tidy_builder,
)
from lab.release.prod import ProdPorts, facts_releases, from_registry, read_routes
from lab.stack import project as stack
from lab.stack import services

public_url = services.public_url
STRATEGIES = ("bluegreen", "canary")


graphite_url = metrics.graphite_url


def deploy_current(state: State | Lab, progress: Progress) -> dict[str, str]:
    """The checkout's current commit of every service live (what ``lab.up`` ends with);
    returns service -> release."""
    lab = Lab.of(state)
    root = lab.config.root
    if git.dirty(root):
        progress.say(
            "note: uncommitted changes are not deployed; deploying commit "
            f"{git.short(git.commit(root))}"
        )
    return {name: deploy(lab, progress, name, "HEAD").release for name in services.names(root)}


def options(
    strategy: str,
    steps: tuple[int, ...],
    interval: float,
    thresholds: judge.Thresholds,
    match: str | None,
    bake: float | None,
    service: services.Service,
) -> Options:
    """The run's options, checked (``ConfigError`` names the option and its expected form)."""
    if strategy not in STRATEGIES:
        raise ConfigError("--strategy", strategy, " or ".join(STRATEGIES))
    if match is not None and strategy != "bluegreen":
        raise ConfigError("--match", match, "no --strategy (matched traffic is all or nothing)")
    if bake is not None and not 0 <= bake <= 3600:
        raise ConfigError("--bake", bake, "seconds from 0 (no bake window) to 3600")
    return Options(
        strategy=strategy,
        steps=steps if strategy == "canary" else (100,),
        interval=interval,
        thresholds=thresholds,
        match=routes.parse_match(match) if match is not None else None,
        bake=service.bake if bake is None else bake,
    )


def deploy(
    state: State | Lab,
    progress: Progress,
    service_name: str = "app",
    ref: str = "HEAD",
    strategy: str = "bluegreen",
    steps: tuple[int, ...] = (10, 25, 50, 100),
    interval: float = 30.0,
    thresholds: judge.Thresholds | None = None,
    match: str | None = None,
    bake: float | None = None,
    force: bool = False,
) -> records.Record:
    """Build ``ref`` of ``service_name`` on cd (if needed), make sure the stack is up, and make
    it the live release: all at once (``bluegreen``) or by ``steps`` with a judge at each one
    (``canary``); with ``match`` (``header:NAME=VALUE`` or ``cookie:NAME=VALUE``) it only
    serves matching requests until ``promote`` or ``abort``. After the switch the new release
    is watched for ``bake`` seconds (default: the manifest's) and replaced by the previous one
    if it fails. A service with ``[migrate]`` has its database migrated before the candidate
    starts, once a scratch copy showed the live release works on it (``force``: a failed check
    is recorded, not a refusal). Raises after writing a failed or interrupted record."""
    lab = Lab.of(state)
    root = lab.config.root
    sha = git.commit(root, ref)
    service, files = service_at(root, sha, service_name)
    opts = options(
        strategy, steps, interval, thresholds or service.thresholds, match, bake, service
    )
    opts = dataclasses.replace(opts, force=force)
    kind = "match" if opts.match else "deploy"
    run = Run(lab, progress, kind, service.name, git.short(sha), "match" if match else strategy)
    background = ThreadPoolExecutor(1, thread_name_prefix="test-image")
    built: dict[str, Built] = {}
    test_build: Future[Built] | None = None
    try:
        with run.recorded():
            static_checks(progress, service, sha, files)
            specs = image_specs(lab, service, sha)
            tests = next((s for s in specs if s.name == f"{service.name}-test"), None)
            # the integration-test image is not needed before the candidate is healthy: it is
            # built, pushed and pulled onto prod meanwhile, off the critical path
            if tests:
                test_build = background.submit(integration_test_image, lab, tests, sha)
            built = stack.build(lab.state, [s for s in specs if s is not tests], sha, progress)
            ensure_stack(lab, built, progress)
            c = Candidate(service, git.short(sha), built[service.name].pinned)
            run.image = c.image
            opts = dataclasses.replace(opts, background_tests=test_build is not None)
            if opts.match:
                opts = dataclasses.replace(
                    opts, match=dataclasses.replace(opts.match, release=c.release)
                )
            release_candidate(run, c, opts, test_build)
    finally:
        # a failure before the tests still waits for that build; then cd drops what it pushed
        if test_build is not None and not test_build.done():
            progress.say("    waiting for the integration-test image's build on cd to end ...")
        if built:  # cd answered: it drops what it pushed (a gone cd would only be waited for)
            background.submit(tidy_builder, lab, built, test_build)
        background.shutdown(wait=True)
    return run.record


def release_candidate(
    run: Run, c: Candidate, opts: Options, test_build: Future[Built] | None = None
) -> None:
    """Under the lock: facts, the plan, applied (``run`` records it)."""
    lab, service = run.lab, c.service
    what = f"{run.kind} {service.name} {c.release}"
    what += " (canary)" if opts.strategy == "canary" else ""
    with lock.held(lab.etcd, what, signals.lease_lost) as holder:
        if opts.strategy == "canary":  # a command left for an earlier canary is not for this one
            lab.etcd.delete(verify.CANARY_KEY + service.name)
        facts = read_facts(lab, service.name, service)
        refuse_while_matched(facts, service.name, opts.match is not None)
        run.previous = facts.routes.live
        live = facts.routes.live
        if service.migration is not None and live and live != c.release:
            facts = dataclasses.replace(facts, live=with_tests(lab, service.name, live))
        history_of = functools.partial(history.deployed, lab, service.name)
        ports = ProdPorts(lab, service, run.progress.say, test_build, history_of, holder.fence)
        settled = settled_schema(lab, service, live, c.release)
        if settled is not None:
            ports.assume_schema(c, settled, settled)
        run.apply(plan.deploy(facts, c, opts), ports)


def deploy_built(
    state: State | Lab, c: Candidate, progress: Progress, opts: Options | None = None
) -> records.Record:
    """Deploy a candidate whose image is already in the registry (no checks, no build): the
    same plan, lock and record as ``deploy``."""
    lab = Lab.of(state)
    opts = opts or Options(bake=c.service.bake, thresholds=c.service.thresholds)
    run = Run(lab, progress, "deploy", c.service.name, c.release, opts.strategy, image=c.image)
    with run.recorded():
        release_candidate(run, c, opts)
    return run.record


def rollback(
    state: State | Lab,
    progress: Progress,
    service_name: str = "app",
    to: str | None = None,
    migrate_down: bool = False,
) -> tuple[records.Record, float]:
    """All traffic back to the previous release (or ``to``); the seconds until 100 % of
    responses came from it. A release the records do not show working with the database's
    schema is refused, unless ``migrate_down``: the manifest's ``[migrate] downgrade`` then
    takes the database back to what it needs, once a scratch copy showed it safe."""
    lab = Lab.of(state)
    current = read_routes(lab, service_name)
    if not current.servers:
        names = services.names(lab.config.root)
        raise ConfigError(
            "--service", service_name, "a deployed service: one of " + ", ".join(names)
        )
    target = routes.rollback_target(current, history.deployed(lab, service_name), to)
    service = manifest_of(lab, service_name, target)
    run = Run(lab, progress, "rollback", service.name, target, "bluegreen")
    run.previous = current.live
    what = f"rollback {service.name} to {target}"
    with run.recorded(), lock.held(lab.etcd, what, signals.lease_lost) as holder:
        facts = read_facts(lab, service.name, wanted=service)
        known = schema.known(records.history(lab.runs, service.name, lab.etcd))
        refusal = schema.rollback_refusal(known, service.name, target, current.live)
        down = None
        if refusal and migrate_down:
            down = way_down(lab, service.name, target, known, current.live)
            refusal = ""
        c = from_registry(lab, service, target)
        run.image = c.image
        p = plan.rollback(facts, c, known, refusal, down)
        run.apply(p, ProdPorts(lab, service, progress.say, fence=holder.fence))
    return run.record, run.record.timings.get("to_100_s", 0.0)


def decide(state: State | Lab, progress: Progress, service_name: str, command: str) -> str:
    """``promote`` or ``abort`` the candidate on matched traffic (a recorded run), or tell a
    running canary to do so now. Returns what happened."""
    lab = Lab.of(state)
    current = read_routes(lab, service_name)
    if current.match is None:
        holder = lock.current(lab.etcd)
        what = holder.what if holder else ""
        if not (what.startswith(f"deploy {service_name} ") and what.endswith("(canary)")):
            raise ConfigError(
                f"invoke {command} --service",
                service_name,
                "a service with a release on matched traffic (deploy --match) or a running "
                "canary (deploy --strategy canary); 'invoke releases' shows what is live",
            )
        lab.etcd.put(verify.CANARY_KEY + service_name, command.encode())
        return f"asked the running canary ({what}) to {command}"
    target = current.match.release
    service = manifest_of(lab, service_name, target)
    run = Run(
        lab, progress, "deploy" if command == "promote" else "abort", service.name, target, "match"
    )
    run.previous = current.live
    what = f"{command} {service.name} {target}"
    with run.recorded(), lock.held(lab.etcd, what, signals.lease_lost) as holder:
        facts = read_facts(lab, service.name, wanted=service)
        if facts.routes.match is None or facts.routes.match.release != target:
            raise ReleaseError(f"{service.name}: {target} left matched traffic meanwhile")
        ports = ProdPorts(
            lab,
            service,
            progress.say,
            deployed=functools.partial(history.deployed, lab, service.name),
            fence=holder.fence,
        )
        if command == "abort":
            run.apply(plan.abort(facts, service.name), ports)
            return f"{target} aborted; every request on {current.live}"
        c = from_registry(lab, service, target)
        run.image = c.image
        run.apply(
            plan.promote(facts, c, Options(bake=service.bake, thresholds=service.thresholds)), ports
        )
    return f"{target} promoted: live for every request (was {current.live})"


def settled_schema(
    lab: Lab, service: services.Service, live: str | None, release: str
) -> str | None:
    """The database's version when git and the records settle what ``release`` needs without
    a container: the records say the database is at what the live release needs, and no file
    of the manifest's ``[migrate] files`` (nor the manifest) changed between the two commits.
    None: not settled (the candidate's image is asked)."""
    m = service.migration
    if m is None or not m.files or live is None or live == release:
        return None
    known = schema.known(records.history(lab.runs, service.name, lab.etcd))
    if known.now is None or known.needs.get(live) != known.now:
        return None
    root = lab.config.root
    watched = [f"{service.folder}/{f}".rstrip("/") for f in (*m.files, "service.toml")]
    # the live release first, then any other known to need that version, whose commit this
    # checkout holds (a release deployed from another clone may not be here)
    same = [live] + [r for r, v in reversed(known.needs.items()) if v == known.now and r != live]
    for other in same[:5]:
        try:
            changed = git.changed_paths(root, git.commit(root, other), git.commit(root, release))
        except ConfigError:
            continue
        if changed is not None and not any(
            p == w or p.startswith(w + "/") for p in changed for w in watched
        ):
            return known.now
    return None


def way_down(
    lab: Lab, name: str, target: str, known: schema.Known, live: str | None
) -> actions.SchemaDown:
    """How ``--migrate-down`` takes the database back to what ``target`` needs: the live
    release's ``[migrate] downgrade`` (its image has the migrations since), checked on a
    scratch copy with ``target`` and then the live release (warm after the rollback)."""
    needs = known.needs.get(target)
    if needs is None:
        raise ConfigError(
            "--migrate-down",
            target,
            "a release whose records say which schema it needs (deployed with [migrate])",
        )
    if live is None:
        raise ConfigError("--migrate-down", target, "a service with a live release to migrate down")
    migrator = with_tests(lab, name, live)
    if migrator.service.migration is None or not migrator.service.migration.downgrade:
        raise ConfigError(
            "--migrate-down",
            target,
            f"a live release ({live}) whose manifest has [migrate] downgrade, e.g. "
            "'alembic downgrade {version}'",
        )
    return actions.SchemaDown(migrator, needs, (with_tests(lab, name, target), migrator))


def with_tests(lab: Lab, name: str, release: str) -> Candidate:
    """``release`` of ``name`` from the registry, with its integration-test image when the
    registry still has it (its manifest's, at its commit)."""
    service = manifest_of(lab, name, release)
    c = from_registry(lab, service, release)
    digest = lab.registry.digest(f"{REPOSITORY}/{name}-test", release)
    test = f"{lab.config.registry_addr}/{REPOSITORY}/{name}-test@{digest}" if digest else None
    return dataclasses.replace(c, test_image=test)


def manifest_of(lab: Lab, name: str, release: str) -> services.Service:
    """The manifest ``release`` was deployed with (its commit's), when this checkout has that
    commit; the working tree's otherwise (a release pushed from elsewhere)."""
    try:
        return service_at(lab.config.root, git.commit(lab.config.root, release), name)[0]
    except ConfigError:
        return services.load(lab.config.root, name)


def read_facts(
    lab: Lab,
    service: str,
    manifest: services.Service | None = None,
    wanted: services.Service | None = None,
) -> Facts:
    """Routes and prod's containers of ``service``; with ``manifest`` (the one
    being deployed), whether the proxy holds its frontend already."""
    running, present = facts_releases(lab, service)
    n = 0
    if lab.config.swarm_manager is not None:
        # the manifest the release starts with decides its replicas (``wanted``: a rollback's)
        decides = wanted or manifest
        declared = decides.replicas if decides is not None else None
        n = replicas.wanted(declared, len(swarm.ready_nodes(lab)))
    current = True
    if manifest is not None:
        current = lab.etcd.get_json(frontends.prefix() + service) == frontends.frontend_doc(
            manifest
        )
    return Facts(
        read_routes(lab, service),
        running,
        present,
        frontend_current=current,
        replicas=n,
    )


def refuse_while_matched(facts: Facts, service: str, matching: bool) -> None:
    """One candidate at a time: while one serves matched traffic, deploys wait for a decision;
    a matched deploy needs a live release to serve everyone else."""
    current = facts.routes
    if current.match:
        raise ReleaseError(
            f"{service}: release {current.match.release} serves the requests with "
            f"{current.match.rule} (the others go to {current.live}). Decide on it first: "
            f"'invoke promote --service {service}' makes it live, "
            f"'invoke abort --service {service}' removes it.",
            service,
        )
    if matching and not current.live:
        raise ConfigError(
            "--match", None, f"a live release of {service} for the other requests; deploy one first"
        )


@dataclasses.dataclass
class Run:
    """One recorded run: its record is written whatever ends it."""

    lab: Lab
    progress: Progress
    kind: str
    service: str
    release: str
    strategy: str
    previous: str | None = None
    image: str = ""
    _record: records.Record | None = None
    _outcome: apply.Outcome | None = None

    def apply(self, the_plan: Plan, ports: ProdPorts) -> None:
        """Apply ``the_plan``; raises its error once it is undone (the record is written by
        ``recorded``)."""
        if not the_plan.steps:
            self.progress.say(f"{self.service} {self.release}: {the_plan.note}")
            return
        tags = ["cdlab", self.kind, self.service, self.release]
        ports.event(
            f"{self.kind} start {self.service}-{self.release}", tags, f"live: {self.previous}"
        )
        self._outcome = apply.apply(the_plan, ports, self.progress)
        end = self._outcome.result if self._outcome.error else "end"
        ports.event(
            f"{self.kind} {end} {self.service}-{self.release}", tags, self._outcome.reason[:500]
        )
        if self._outcome.error is not None:
            raise self._outcome.error

    @contextmanager
    def recorded(self) -> Iterator[None]:
        """The run's body, stoppable; then its record, written whatever ended it (signals
        wait meanwhile). A signal after a plan that succeeded leaves it succeeded (with a
        warning) and still ends the process as interrupted: nothing was undone."""
        started, result = records.now(), ""
        error: BaseException | None = None
        late: RunStopped | None = None
        what = f"{self.kind} {self.service} {self.release}"
        with signals.deferred(self.progress.say):
            try:
                # the board starts and ends while signals wait (outside ``stoppable``)
                with activity.board(self.lab.etcd, what, self.progress), signals.stoppable():
                    yield
            except Stop as stop:  # outside the plan's apply: nothing of the plan to undo
                done = self._outcome is not None and self._outcome.result == "succeeded"
                note = " The release run had ended: nothing was undone." if done else ""
                late = RunStopped(stop.signal, self._stage(), [], note)
                if not done:
                    error, result = late, "interrupted"
            except LabError as exc:
                error = exc
                result = "interrupted" if isinstance(exc, RunStopped) else "failed"
                raise
            except BaseException as exc:  # a crash is a failure too, never a success
                error, result = exc, "failed"
                raise
            finally:
                self._write(started, error, result, late)
        if late is not None:
            raise late from None

    def _write(
        self,
        started: dt.datetime,
        error: BaseException | None,
        result: str,
        late: RunStopped | None,
    ) -> None:
        out = self._outcome
        rec = records.make(
            self.kind,
            self.service,
            self.release,
            self.previous,
            self.image,
            self.strategy,
            started,
            self.progress,
            error,
            result,
            out.stage if out else None,
            out.undone if out else (),
            (out.warnings if out else ()) + ((str(late),) if late and not error else ()),
        )
        if error and out and "start" in out.undone:
            rec = dataclasses.replace(rec, logs=records.logs_command(rec.service, rec.release))
        self._record = rec
        if self.previous != rec.release or error or self.kind != "deploy":
            history.keep(self.lab, rec)

    @property
    def record(self) -> records.Record:
        assert self._record is not None, "the run has not ended"
        return self._record

    def _stage(self) -> str:
        return self.progress.stages[-1].key if self.progress.stages else "start"


def release_lock(state: State | Lab) -> lock.Holder | None:
    """Remove the deploy lock whoever holds it (``invoke lock.release``); who held it."""
    return lock.release(Lab.of(state).etcd)


def lock_holder(state: State | Lab) -> lock.Holder | None:
    """Who holds the deploy lock (``invoke lock.status``); None when it is free."""
    return lock.current(Lab.of(state).etcd)
