"""``ProdPorts``: the release engine's ports on the lab (prod's engine, the route store, the
proxy's Runtime API, Graphite, the registry), all reached through one ``Lab``."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from lab.build.builder import Built
from lab.config import public_host, public_port
from lab.errors import LabError, ReleaseError
from lab.estate.images import REPOSITORY
from lab.ports import frontends
from lab.ports.etcd import Fence
from lab.ports.lab import Lab
from lab.release import containers, judge, pins, routes, scratch, swarm, verify
from lab.release.model import Candidate, Drained, Pruned, StepVerdict
from lab.stack import project as stack
from lab.stack import services


def read_routes(lab: Lab, service: str) -> routes.Routes:
    return routes.from_doc(lab.etcd.get_json(routes.PREFIX + service), service)


class ProdPorts:
    """See ``ports.ReleasePorts``, for one run on ``service`` (its manifest at the deployed
    commit). ``test_build``: the integration-test image while it is built and pulled in the
    background; ``deployed``: the service's releases made live before (for retention);
    ``fence``: the deploy lock's, when the run holds it: every write of routes and frontends
    is then refused (``FencedOut``) once the lock is no longer the run's."""

    def __init__(
        self,
        lab: Lab,
        service: services.Service,
        say: Callable[[str], None],
        test_build: Future[Built] | None = None,
        deployed: Callable[[], list[str]] | None = None,
        fence: Fence | None = None,
    ) -> None:
        self.lab, self.service, self.say, self.test_build = lab, service, say, test_build
        self.fence = fence
        self.deployed = deployed or list  # read when retention needs it, after the switch
        self._published: dict[str, frontends.Published] = {}
        self._databases: set[str] = set()  # known to exist
        self._schema: dict[str, tuple[str, str]] = {}  # image -> (database's, image's version)
        self._lost: set[str] = set()  # swarm node ids seen not ready in this run
        self._ended: dict[str, set[str]] = {}  # release -> its replicas ended at the first look

    @property
    def cluster(self) -> bool:
        """prod is a swarm: a release is a service of replicas over its nodes (``swarm``)."""
        return self.lab.config.swarm_manager is not None

    @property
    def engine(self) -> Any:
        return self.lab.engine("prod", timeout=300)

    # prod's engine
    def pull(self, images: tuple[str, ...]) -> int:
        if self.cluster:
            pull_one = functools.partial(stack.pull, self.lab.state)
            return swarm.pull(self.lab, pull_one, list(images))
        return len(stack.pull(self.lab.state, "prod", list(images)))

    def start(self, c: Candidate, replicas: int = 0) -> str:
        self._database(c)
        image = c.image.rsplit("/", 1)[-1][:40]
        if self.cluster:
            return f"{image}, {swarm.start(self.lab, c, replicas)}"
        containers.replace_container(self.lab.state, self.engine, c)
        return image

    def wait_healthy(self, c: Candidate, timeout: float) -> float:
        if self.cluster:
            return swarm.wait_healthy(self.lab, c, timeout)
        return containers.wait_healthy(self.engine, c, timeout)

    def remove(self, service: str, release: str, stop_timeout: int) -> None:
        import docker.errors

        if self.cluster:
            swarm.remove(self.lab, service, release, stop_timeout)
        for ctr in containers.release_containers(self.engine, service, release):
            with contextlib.suppress(docker.errors.NotFound):
                ctr.stop(timeout=stop_timeout)
            with contextlib.suppress(docker.errors.NotFound):
                ctr.remove(force=True)  # force: the keeper may have restarted it
        # a test or hook container a stopped run left behind
        mark = f"{containers.ONE_OFF}={service}-{release}"
        for ctr in self.engine.containers.list(all=True, filters={"label": mark}):
            with contextlib.suppress(docker.errors.NotFound):
                ctr.remove(force=True)

    def out_of_pool(self, service: str, keep: frozenset[str]) -> list[str]:
        if self.cluster:  # a plain container left from before prod was a swarm goes too
            return sorted(
                {
                    *swarm.out_of(self.lab, service, keep),
                    *containers.out_of(self.engine, service, keep),
                }
            )
        return containers.out_of(self.engine, service, keep)

    def run_hook(self, c: Candidate, which: str, command: str) -> str:
        return containers.hook(self.lab.state, self.engine, c, which, command)

    def test_image(self, c: Candidate) -> str | None:
        if self.test_build is None:
            return c.test_image
        built = self.test_build.result()
        name = built.ref.rsplit("/", 1)[-1]
        self.say(f"    {name} {'built' if built.built else 'from the registry'}, on prod")
        return built.pinned

    def _database(self, c: Candidate) -> None:
        """The service's own database exists (created, empty, on its first deploy)."""
        if c.service.database and c.service.name not in self._databases:
            if scratch.ensure_database(self.engine, c.service.name):
                self.say(f"    database {c.service.name} created on prod's PostgreSQL")
            self._databases.add(c.service.name)

    # the database's schema
    def schema_version(self, c: Candidate) -> str:
        self._database(c)
        return scratch.version(self.lab.state, self.engine, c)

    def schema_state(self, c: Candidate) -> tuple[str, str]:
        # read once a run until a migration changes it (the check and the migration both ask;
        # each reading is a container: most of a second)
        if c.image not in self._schema:
            self._database(c)
            self._schema[c.image] = scratch.state_of(self.lab.state, self.engine, c)
        return self._schema[c.image]

    def assume_schema(self, c: Candidate, now: str, needs: str) -> None:
        """What ``schema_state`` answers for ``c`` when the pipeline knows it already (from git
        and the records: ``pipeline.settled_schema``)."""
        self._schema[c.image] = (now, needs)

    def migrate(self, c: Candidate, command: str = "") -> str:
        assert c.service.migration is not None
        self._schema.clear()
        command = command or c.service.migration.command
        return scratch.run(self.lab.state, self.engine, c, command)

    def schema_check(
        self, c: Candidate, keep_working: tuple[Candidate, ...], command: str = ""
    ) -> str:
        assert c.service.migration is not None
        images = [i for k in keep_working for i in (k.image, k.test_image) if i]
        self.pull(tuple(dict.fromkeys(images)))
        return scratch.check(
            self.lab.state,
            self.engine,
            c,
            command or c.service.migration.command,
            keep_working,
        )

    def integration_tests(self, c: Candidate, test_image: str | None) -> str:
        return containers.integration_tests(self.lab.state, self.engine, c, test_image)

    def addresses(self, c: Candidate) -> tuple[str, ...]:
        if self.cluster:
            found_addrs = swarm.addresses(self.lab, c)
            if not found_addrs:
                raise ReleaseError(f"{c.project} has no running replica on prod's swarm")
            return found_addrs
        found = containers.release_containers(self.engine, c.service.name, c.release, all=False)
        if not found:
            raise ReleaseError(f"{c.project} has no running container on prod")
        return (containers.stack_address(found[0]),)

    def container_state(self, c: Candidate) -> dict[str, Any] | None:
        if self.cluster:
            # a replica that ended since the first reading (on a node never seen lost in the
            # run: a lost node's tasks are not the release's) changes StartedAt: the bake fails
            st = swarm.state(self.lab, c, self._lost)
            if st is None:
                return None
            ended = set(st.pop("Ended"))
            base = self._ended.setdefault(c.release, ended)
            st["StartedAt"] = ",".join(sorted(ended - base))
            return st
        found = containers.release_containers(self.engine, c.service.name, c.release)
        if not found:
            return None
        found[0].reload()
        return {**found[0].attrs["State"], "RestartCount": found[0].attrs.get("RestartCount", 0)}

    # the route store and the proxy
    def read_routes(self, service: str) -> routes.Routes:
        return read_routes(self.lab, service)

    def write_routes(self, new: routes.Routes) -> None:
        self.lab.etcd.put_json(new.key, new.to_doc(), self.fence)

    def answers_probe(self, c: Candidate, release: str) -> str:
        """Run ``c``'s health probe (its manifest's path and port) inside ``release``'s
        container (every replica's on a swarm); ``ReleaseError`` with the answer when it fails."""
        if self.cluster:
            return swarm.probe_all(self.lab, c, release)
        found = containers.release_containers(self.engine, c.service.name, release, all=False)
        if not found:
            raise ReleaseError(f"{c.service.name}-{release} has no running container")
        probe = services.http_probe(c.service.port, c.service.health)
        code, out = found[0].exec_run(["sh", "-c", probe])
        if code != 0:
            raise ReleaseError(f"probe exit {code}: {out.decode(errors='replace')[-200:]}")
        return f"exit {code}"

    def write_frontend(self, c: Candidate) -> bool:
        """The service's frontend document (from the manifest at the deployed commit) in the
        route store, and the proxy running it; True when it was new or changed."""
        stored = self.lab.etcd.get_json(frontends.prefix() + c.service.name)
        # what an undo puts back, known before the write (a signal may stop it mid-request)
        self._published[c.service.name] = frontends.Published(
            c.service.name, stored if isinstance(stored, dict) else None, True
        )
        published = frontends.publish(self.lab.etcd, c.service, self.fence)
        if not published.written:
            self._published.pop(c.service.name)
        self.lab.runtime.wait_frontend(frontends.frontend_doc(c.service))
        return published.written

    def restore_frontend(self, service: str) -> None:
        published = self._published.pop(service, None)
        if published is None:
            return
        frontends.undo(self.lab.etcd, published, self.fence)
        if published.previous is not None:  # the proxy back on it before the undo goes on
            with contextlib.suppress(LabError):  # best effort: the document is what counts
                self.lab.runtime.wait_frontend(published.previous, timeout=10)

    def wait_up(self, backend: str, host: str, addresses: tuple[str, ...]) -> float:
        started = time.monotonic()
        if self.cluster:  # a release's replicas, each in a slot of its own
            self.lab.runtime.wait_up(backend, host, addrs=addresses)
        else:
            self.lab.runtime.wait_up(backend, host, addr=addresses[0] if addresses else None)
        return time.monotonic() - started

    def wait_released(self, backend: str, host: str) -> None:
        self.lab.runtime.wait_released(backend, host)

    def wait_drained(self, backend: str, host: str) -> Drained:
        return self.lab.runtime.wait_drained(backend, host)

    def verify(self, service: str, release: str, headers: dict[str, str] | None) -> float:
        since = time.monotonic()
        # the port the proxy serves it on: the frontend it holds (a rollback's manifest may
        # name another), else the manifest's
        stored = self.lab.etcd.get_json(frontends.prefix() + self.service.name)
        port = stored.get("public_port") if isinstance(stored, dict) else None
        health = stored.get("health") if isinstance(stored, dict) else None
        if isinstance(port, int):  # prod's port: this lab publishes it on its own
            url = f"http://{public_host()}:{public_port(port)}"
        else:
            url = services.public_url(self.service)
        # the health path: every service has one (a /version is the service's own business);
        # the proxy names the release that answered
        path = health if isinstance(health, str) else self.service.health
        return verify.through_proxy(url, release, since=since, headers=headers, path=path)

    # metrics and time
    def judge_step(
        self, c: Candidate, live: str, interval: float, thresholds: judge.Thresholds
    ) -> StepVerdict:
        return verify.judge_step(self.lab.etcd, self.lab.graphite, c, live, interval, thresholds)

    def bake(
        self, c: Candidate, previous: str, seconds: float, thresholds: judge.Thresholds
    ) -> str:
        return verify.bake(
            self.lab.runtime,
            self.lab.graphite,
            lambda: self.container_state(c),
            c,
            previous,
            seconds,
            thresholds,
            self.say,
        )

    def event(self, what: str, tags: list[str], data: str = "") -> None:
        self.lab.graphite.event(what, tags, data)  # best effort: False when not stored

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    # the registry
    def prune(self, service: str, made_live: str) -> Pruned:
        return prune(self.lab, self.service, [*self.deployed(), made_live])

    def retire(self, service: str, keep: frozenset[str]) -> list[str]:
        gone = self.out_of_pool(service, keep)
        for release in gone:
            self.remove(service, release, 25)
        return gone


def prune(lab: Lab, service: services.Service, deployed: list[str]) -> Pruned:
    """Keep ``service.retain`` releases (the pool first, then the newest deployed) and every
    pinned one, and delete every other release of the service from the registry and from
    prod's engine. A pruned release can no longer be rolled back to."""
    import docker.errors

    reg, repo = lab.registry, f"{REPOSITORY}/{service.name}"
    kept, pruned = routes.retention(
        deployed,
        reg.tags(repo),
        read_routes(lab, service.name),
        service.retain,
        pins.pinned(lab.etcd, service.name),
    )
    gone = set(pruned)
    for name in (repo, f"{repo}-test"):
        digests = {tag: reg.digest(name, tag) for tag in reg.tags(name)}
        # two tags may name one manifest (an unchanged test image, a rebuilt-equal image):
        # deleting it would take it from a release that stays, so it stays with it
        held = {d for tag, d in digests.items() if tag not in gone and d}
        for rel in pruned:
            digest = digests.get(rel)
            if digest is None or digest in held:
                continue
            held.add(digest)  # deleted once, whatever other pruned tag names it
            reg.delete(name, digest)
            # an image a container still uses stays; the next prune retries
            ref = f"{lab.config.registry_addr}/{name}@{digest}"
            if lab.config.swarm_manager is not None:
                swarm.remove_image(lab, ref)  # every node's copy
                continue
            with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
                lab.engine("prod").images.remove(ref)
    return Pruned(tuple(kept), tuple(pruned))


def from_registry(lab: Lab, service: services.Service, target: str) -> Candidate:
    """A release already in the registry, pinned by its digest there."""
    digest = lab.registry.digest(f"{REPOSITORY}/{service.name}", target)
    if digest is None:
        raise ReleaseError(
            f"release '{target}' of '{service.name}' is not in the registry (no tag "
            f"{REPOSITORY}/{service.name}:{target}: pruned, as the manifest keeps only "
            f"retain = {service.retain} releases); it cannot be started again: deploy its "
            "commit again (`invoke deploy --ref COMMIT`). To keep a release still in the "
            "registry whatever retain says: `invoke pin RELEASE`",
            service.name,
            target,
        )
    image = f"{lab.config.registry_addr}/{REPOSITORY}/{service.name}@{digest}"
    return Candidate(service, target, image, None)


def facts_releases(lab: Lab, service: str) -> tuple[frozenset[str], frozenset[str]]:
    """(running and not unhealthy, present at all) releases of ``service`` on prod (on a
    swarm: its services, with the plain containers of a lab that was not one before)."""
    if lab.config.swarm_manager is not None:
        running, present = swarm.releases(lab, service)
        alone = _container_releases(lab, service)
        return running | alone[0], present | alone[1]
    return _container_releases(lab, service)


def _container_releases(lab: Lab, service: str) -> tuple[frozenset[str], frozenset[str]]:
    found = lab.engine("prod").containers.list(  # one request (sparse: no inspect per container)
        all=True, sparse=True, filters={"label": f"cdlab.service={service}"}
    )
    running, present = set(), set()
    for ctr in found:
        release = (ctr.attrs.get("Labels") or {}).get("cdlab.release", "")
        if not release:
            continue
        present.add(release)
        up = ctr.attrs.get("State") == "running"
        if up and "(unhealthy)" not in str(ctr.attrs.get("Status", "")):
            running.add(release)
    return frozenset(running), frozenset(present)


__all__ = ["ProdPorts", "facts_releases", "from_registry", "prune", "read_routes"]
