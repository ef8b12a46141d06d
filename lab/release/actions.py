"""The actions a plan's steps are made of: frozen data that, run, calls the ports (and nothing
else). Each one's ``run`` returns a ``Result`` (a detail for people, figures for records)."""

from __future__ import annotations

from dataclasses import dataclass

from lab.errors import CanaryAborted, MigrationFailed, ReleaseError, SchemaRefused
from lab.release import judge, routes, schema
from lab.release.model import Candidate, Result
from lab.release.ports import ReleasePorts

CHECK_TIMEOUT = 1.1  # a proxy health check ends within this: the longest one in flight


@dataclass(frozen=True)
class Pull:
    images: tuple[str, ...]

    def run(self, ports: ReleasePorts) -> Result:
        n = ports.pull(self.images)
        if n:
            return Result(f"{n} image(s) by digest from the lab registry")
        return Result("present", changed=False)


@dataclass(frozen=True)
class RemoveReleases:
    """Releases out of the pool (a crashed run's leftovers hold database connections)."""

    service: str
    keep: frozenset[str]

    def run(self, ports: ReleasePorts) -> Result:
        gone = ports.out_of_pool(self.service, self.keep)
        for release in gone:
            ports.remove(self.service, release, 5)
        return Result(", ".join(gone) or "none", changed=bool(gone))


@dataclass(frozen=True)
class Hook:
    candidate: Candidate
    which: str  # pre-deploy or post-deploy
    command: str

    def run(self, ports: ReleasePorts) -> Result:
        return Result(ports.run_hook(self.candidate, self.which, self.command))


@dataclass(frozen=True)
class SchemaCheck:
    """Before a migration touches prod's database: a scratch copy migrated by the candidate,
    and the live release (the warm rollback target once the candidate is live) passing its
    integration tests on it. ``force``: a failure is recorded and said, not a refusal."""

    candidate: Candidate
    live: Candidate | None
    force: bool = False

    def run(self, ports: ReleasePorts) -> Result:
        c = self.candidate
        now, needs = ports.schema_state(c)
        notes = {"before": schema.shown(now), "needs": schema.shown(needs)}
        move = f"{schema.shown(now)} -> {schema.shown(needs)}"
        if now == needs:
            return Result(
                f"the database is at {schema.shown(now)}, as {c.release} needs", {}, False, notes
            )
        if self.live is None:
            return Result(f"{move}; no live release to keep working", {}, False, notes)
        live = self.live.release
        try:
            said = ports.schema_check(c, (self.live,))
        except MigrationFailed as exc:
            err = MigrationFailed(
                f"the migration of {c.service.name} {c.release} ({move}) fails on a scratch "
                f"copy of the database: {exc}\nProd's database was not touched: still at "
                f"{schema.shown(now)}, {live} serving. Fix the migration and deploy again",
                c.service.name,
                c.release,
                "schema-check",
            )
            err.notes = notes
            raise err from exc
        except ReleaseError as exc:
            why = (
                f"the migration of {c.service.name} {c.release} ({move}) would break the live "
                f"release {live}, the warm rollback target once {c.release} is live: on a "
                f"scratch copy of the database, migrated, {exc}\nProd's database was not "
                "touched. Way out: expand first (a migration the live release's code works "
                "with: add columns or tables, never rename or drop what it reads or writes), "
                "deploy that, then contract in a later release once no live or warm release "
                "uses the old shape"
            )
            if not self.force:
                raise SchemaRefused(why, c.service.name, c.release, notes) from exc
            return Result(
                f"FORCED past a failed scratch check: {why}", {}, True, {**notes, "forced": live}
            )
        notes.update(checked=live, checked_at=schema.shown(needs))
        return Result(f"{live} passed on a scratch copy migrated {move}: {said}", {}, True, notes)


@dataclass(frozen=True)
class SchemaDown:
    """A rollback's way back down (``--migrate-down``): a scratch copy migrated down to
    ``to`` by ``migrator`` (the live release: its image knows the way down), the rollback's
    target and the live release (warm once the target is live) each passing its integration
    tests on it; then prod's database migrated down the same way."""

    migrator: Candidate
    to: str
    checks: tuple[Candidate, ...]

    def run(self, ports: ReleasePorts) -> Result:
        m = self.migrator
        command = schema.downgrade_command(m, self.to)
        now = ports.schema_version(m)
        notes = {"before": schema.shown(now), "needs": schema.shown(self.to)}
        if now == self.to:
            return Result(f"the database is at {schema.shown(now)} already", {}, False, notes)
        try:
            said = ports.schema_check(m, self.checks, command)
        except ReleaseError as exc:
            err = SchemaRefused(
                f"migrating {m.service.name} down ({schema.shown(now)} -> "
                f"{schema.shown(self.to)}, '{command}' of {m.release}) would break "
                f"{exc.release or 'a release'}: on a scratch copy of the database, migrated "
                f"down, {exc}\nProd's database was not touched. Way out: deploy a release that "
                f"works with {schema.shown(now)} instead of rolling back to one that does not",
                m.service.name,
                m.release,
                notes,
            )
            raise err from exc
        notes.update(checked=self.checks[0].release, checked_at=schema.shown(self.to))
        try:
            ports.migrate(m, command)
        except ReleaseError as exc:
            after = ports.schema_version(m)
            err2 = ReleaseError(
                f"'{command}' failed on prod's database, now at {schema.shown(after)}: {exc}",
                m.service.name,
                m.release,
                "schema-down",
            )
            err2.notes = {**notes, "left": schema.shown(after)}
            raise err2 from exc
        after = ports.schema_version(m)
        notes["left"] = schema.shown(after)
        move = f"{schema.shown(now)} -> {schema.shown(after)}"
        return Result(f"{move} after a scratch check ({said})", {}, True, notes)


@dataclass(frozen=True)
class SchemaGate:
    """A rollback goes on only to a release known to work with the database's version (judged
    from the records before the plan: ``refusal`` says why not)."""

    release: str
    known: schema.Known
    refusal: str

    def run(self, ports: ReleasePorts) -> Result:
        now = schema.shown(self.known.now)
        notes = {"before": now, "left": now}
        if self.release in self.known.needs:
            notes["needs"] = schema.shown(self.known.needs[self.release])
        if self.refusal:
            err = ReleaseError(self.refusal, stage="schema")
            err.notes = notes
            raise err
        return Result(f"{self.release} is known to work at {now}", {}, False, notes)


@dataclass(frozen=True)
class Migrate:
    """Prod's database migrated to what the candidate needs (``[migrate] command`` in a one-off
    container of its image): a failed migration changes nothing (transactional DDL)."""

    candidate: Candidate

    def run(self, ports: ReleasePorts) -> Result:
        c = self.candidate
        before, needs = ports.schema_state(c)
        if before == needs:
            return Result(
                f"at {schema.shown(before)} already", {}, False, {"left": schema.shown(before)}
            )
        try:
            ports.migrate(c)
        except ReleaseError as exc:
            after = ports.schema_version(c)
            err = MigrationFailed(
                f"the migration of {c.service.name} {c.release} ({schema.shown(before)} -> "
                f"{schema.shown(needs)}) failed; the database is at {schema.shown(after)}"
                + (" as before" if after == before else "")
                + f", nothing switched. {exc}",
                c.service.name,
                c.release,
                "migrate",
            )
            err.notes = {"needs": schema.shown(needs), "left": schema.shown(after)}
            raise err from exc
        after = ports.schema_version(c)
        return Result(
            f"{schema.shown(before)} -> {schema.shown(after)}",
            {},
            True,
            {"left": schema.shown(after)},
        )


@dataclass(frozen=True)
class LiveAnswers:
    """Before the proxy's health check of a service changes (another path or port, from the
    manifest at the deployed commit), the live release must answer it: the proxy checks every
    release of a service the same way, and would take the live one out of the pool."""

    candidate: Candidate
    live: str

    def run(self, ports: ReleasePorts) -> Result:
        s = self.candidate.service
        try:
            ports.answers_probe(self.candidate, self.live)
        except ReleaseError as exc:
            raise ReleaseError(
                f"the manifest at {self.candidate.release} changes the proxy's health check of "
                f"{s.name} to {s.health} on port {s.port}, and the live release {self.live} "
                f"does not answer it ({exc}): the proxy would take it out of the pool. Next "
                "step: deploy first a release that answers both the old and the new check, "
                "then this one (expand, then contract)",
                s.name,
                self.candidate.release,
            ) from exc
        return Result(f"{self.live} answers {s.health} on port {s.port}", changed=False)


@dataclass(frozen=True)
class Frontend:
    """The service's frontend on the proxy, from the manifest at the deployed commit."""

    candidate: Candidate

    def run(self, ports: ReleasePorts) -> Result:
        new = ports.write_frontend(self.candidate)
        s = self.candidate.service
        return Result(f":{s.public_port} -> {s.name} (health {s.health})", changed=new)


@dataclass(frozen=True)
class RestoreFrontend:
    """The frontend as it was before this run's ``Frontend`` (none, for a new service)."""

    service: str

    def run(self, ports: ReleasePorts) -> Result:
        ports.restore_frontend(self.service)
        return Result(f"frontend of {self.service} as it was")


@dataclass(frozen=True)
class Start:
    candidate: Candidate
    replicas: int = 0  # on a swarm: the replicas the proxy's slots are planned for

    def run(self, ports: ReleasePorts) -> Result:
        return Result(ports.start(self.candidate, self.replicas))


@dataclass(frozen=True)
class Remove:
    service: str
    release: str
    stop_timeout: int = 5

    def run(self, ports: ReleasePorts) -> Result:
        ports.remove(self.service, self.release, self.stop_timeout)
        return Result(f"{self.service}-{self.release} stopped and removed")


@dataclass(frozen=True)
class WaitHealthy:
    candidate: Candidate
    timeout: float

    def run(self, ports: ReleasePorts) -> Result:
        took = ports.wait_healthy(self.candidate, self.timeout)
        return Result(f"healthy after {took:.1f} s", {"healthy_s": took})


@dataclass(frozen=True)
class WriteRoutes:
    """Routes as given: one write to the route store, which the proxy applies at once."""

    routes: routes.Routes
    why: str = ""

    def run(self, ports: ReleasePorts) -> Result:
        ports.write_routes(self.routes)
        return Result(self.why or f"routes of {self.routes.service} written")


@dataclass(frozen=True)
class FreeSlot:
    """A pool release whose containers are gone leaves its slot (checks in flight to its old
    address would take the new container down) until it takes it back, tested."""

    without: routes.Routes
    host: str

    def run(self, ports: ReleasePorts) -> Result:
        ports.write_routes(self.without)
        ports.wait_released(self.without.service, self.host)
        ports.sleep(CHECK_TIMEOUT)  # a check in flight to the old address ends first
        return Result(f"{self.host} out of the pool until it is tested again")


@dataclass(frozen=True)
class IntegrationTests:
    candidate: Candidate

    def run(self, ports: ReleasePorts) -> Result:
        image = ports.test_image(self.candidate)
        return Result(ports.integration_tests(self.candidate, image))


@dataclass(frozen=True)
class WaitUp:
    candidate: Candidate
    backend: str

    def run(self, ports: ReleasePorts) -> Result:
        addresses = ports.addresses(self.candidate)
        took = ports.wait_up(self.backend, self.candidate.host, addresses)
        return Result(f"UP in {self.backend} at {','.join(addresses)}", {"up_s": took})


@dataclass(frozen=True)
class Switch:
    """All traffic as ``routes`` says, then verified through the proxy: the seconds from the
    route write until every response came from ``release`` are the figure ``to_100_s``."""

    routes: routes.Routes
    release: str
    headers: tuple[tuple[str, str], ...] = ()

    def run(self, ports: ReleasePorts) -> Result:
        ports.write_routes(self.routes)
        seconds = ports.verify(self.routes.service, self.release, dict(self.headers) or None)
        ports.event(
            f"switch to {self.routes.service}-{self.release}",
            ["cdlab", "switch", self.routes.service, self.release],
            f"{seconds * 1000:.1f} ms",
        )
        return Result(
            f"100% of responses from {self.release} {seconds * 1000:.1f} ms after the route change",
            {"to_100_s": seconds},
        )


@dataclass(frozen=True)
class Verify:
    service: str
    release: str
    headers: tuple[tuple[str, str], ...] = ()

    def run(self, ports: ReleasePorts) -> Result:
        seconds = ports.verify(self.service, self.release, dict(self.headers) or None)
        return Result(f"answered by {self.release}", {"to_100_s": seconds}, changed=False)


@dataclass(frozen=True)
class CanaryStep:
    candidate: Candidate
    weighted: routes.Routes
    live: str
    weight: int
    interval: float
    thresholds: judge.Thresholds

    def run(self, ports: ReleasePorts) -> Result:
        c = self.candidate
        ports.write_routes(self.weighted)
        ports.event(f"canary {self.weight}% {c.project}", ["cdlab", "canary", c.service.name])
        judged = ports.judge_step(c, self.live, self.interval, self.thresholds)
        verdict = judged.verdict
        figures = {"weight_pct": float(self.weight), **judged.figures}
        if verdict.decision != "promote":
            raise CanaryAborted(c.service.name, c.release, self.weight, verdict.reason, figures)
        return Result(
            verdict.reason, figures, skip_to="switch" if judged.by_hand == "promote" else ""
        )


@dataclass(frozen=True)
class Drain:
    """Wait until the release's connections through the proxy reach 0 (it takes no new ones):
    the previous release before it is kept warm, or (``undo``) a candidate that served before
    it is removed, so no request in flight is cut off."""

    service: str
    release: str
    undo: bool = False

    def run(self, ports: ReleasePorts) -> Result:
        drained = ports.wait_drained(self.service, routes.host_name(self.service, self.release))
        left, took = drained.left, drained.seconds
        detail = f"{left} connection(s) still open after {took:.1f} s" if left else "drained"
        if self.undo:
            return Result(f"{self.release} {detail}", {"undo_drain_s": took})
        return Result(f"{detail}; kept running for an instant rollback", {"drain_s": took})


@dataclass(frozen=True)
class Bake:
    candidate: Candidate
    previous: str
    seconds: float
    thresholds: judge.Thresholds

    def run(self, ports: ReleasePorts) -> Result:
        said = ports.bake(self.candidate, self.previous, self.seconds, self.thresholds)
        return Result(said, {"bake_s": self.seconds})


@dataclass(frozen=True)
class Retire:
    service: str
    keep: frozenset[str]

    def run(self, ports: ReleasePorts) -> Result:
        gone = ports.retire(self.service, self.keep)
        if gone:
            return Result(", ".join(gone))
        return Result("previous release kept warm", changed=False)


@dataclass(frozen=True)
class Retain:
    service: str
    retain: int
    made_live: str

    def run(self, ports: ReleasePorts) -> Result:
        done = ports.prune(self.service, self.made_live)
        note = f"kept {', '.join(done.kept)}"
        if done.pruned:
            return Result(f"pruned {', '.join(done.pruned)}; {note}")
        return Result(note, changed=False)


@dataclass(frozen=True)
class Event:
    what: str
    tags: tuple[str, ...]
    data: str = ""

    def run(self, ports: ReleasePorts) -> Result:
        ports.event(self.what, list(self.tags), self.data)
        return Result(changed=False)


@dataclass(frozen=True)
class Refuse:
    """A step that fails on purpose (a plan that must not go on, e.g. a stale fact)."""

    message: str

    def run(self, ports: ReleasePorts) -> Result:
        raise ReleaseError(self.message)
