"""The release engine's public API beyond the runs in ``pipeline``: what the proof code (the
bench, the negative controls) and the tests use. Everything else in ``lab.release`` is
internal."""

from __future__ import annotations

from lab.build.builder import Built
from lab.errors import ReleaseError
from lab.estate.state import State
from lab.ports.etcd import Etcd
from lab.ports.lab import Lab
from lab.progress import Progress
from lab.release import apply, plan, prod, routes, verify
from lab.release.containers import (
    hardening,
    one_off,
    release_containers,
    release_environment,
)
from lab.release.model import Candidate, Options, Pruned
from lab.release.pipeline import deploy_built, read_facts
from lab.release.prod import ProdPorts, from_registry, read_routes
from lab.stack import services
from lab.stack.services import Service

verify_through_proxy = verify.through_proxy

__all__ = [
    "Candidate",
    "Options",
    "Pruned",
    "ReleaseError",
    "candidate",
    "current_routes",
    "deploy_built",
    "from_registry",
    "hardening",
    "one_off",
    "prune",
    "release_containers",
    "release_environment",
    "remove",
    "remove_service",
    "retire",
    "route_store",
    "start_beside",
    "verify_through_proxy",
    "write_routes",
]


def current_routes(state: State | Lab, service: str) -> routes.Routes:
    return read_routes(Lab.of(state), service)


def route_store(state: State | Lab) -> Etcd:
    return Lab.of(state).etcd


def prune(state: State | Lab, service: Service, deployed: list[str]) -> Pruned:
    return prod.prune(Lab.of(state), service, deployed)


def write_routes(state: State | Lab, new: routes.Routes) -> None:
    """Routes written as given (a control's own switch: no plan, no undo, no record)."""
    Lab.of(state).etcd.put_json(new.key, new.to_doc())


def candidate(service: Service, built: dict[str, Built], release: str) -> Candidate:
    test = built.get(f"{service.name}-test")
    return Candidate(service, release, built[service.name].pinned, test.pinned if test else None)


def start_beside(state: State | Lab, c: Candidate, progress: Progress | None = None) -> None:
    """``c`` started beside the live release, healthy and pooled at weight 0 (undone on
    failure); nothing is switched."""
    lab = Lab.of(state)
    progress = progress or Progress(out=None)
    outcome = apply.apply(
        plan.prepare(read_facts(lab, c.service.name, wanted=c.service), c),
        ProdPorts(lab, c.service, progress.say),
        progress,
    )
    if outcome.error is not None:
        raise outcome.error


def retire(state: State | Lab, service: str, keep: set[str] | frozenset[str]) -> list[str]:
    """Stop and remove the releases of ``service`` not in ``keep``."""
    lab = Lab.of(state)
    return ports_for(lab, service).retire(service, frozenset(keep))


def remove(state: State | Lab, service: str, release: str, stop_timeout: int = 25) -> None:
    lab = Lab.of(state)
    ports_for(lab, service).remove(service, release, stop_timeout)


def remove_service(state: State | Lab, name: str, database: bool = False) -> list[str]:
    """Service ``name`` gone from prod: its routes, its frontend (the proxy stops its HAProxy,
    touching no other service's) and every container of it; with ``database``, its database
    too (its connections ended). Its records and its images in the registry are kept. What was
    removed, one line each."""
    from lab.ports import frontends
    from lab.release import scratch

    lab = Lab.of(state)
    gone = []
    for key in (f"/cdlab/routes/{name}", frontends.prefix() + name):
        if lab.etcd.get(key) is not None:
            lab.etcd.delete(key)
            gone.append(key)
    prod = lab.engine("prod")
    if lab.config.swarm_manager is not None:  # its releases' services first: else Swarm
        from lab.release import swarm  # starts their replicas again

        for svc in swarm.services(lab, name):
            release = (svc.attrs["Spec"].get("Labels") or {}).get("cdlab.release", "")
            swarm.remove(lab, name, release)
            gone.append(f"service {svc.name}")
    for c in prod.containers.list(all=True, filters={"label": f"cdlab.service={name}"}):
        c.remove(force=True)
        gone.append(f"container {c.name}")
    if database:
        scratch.drop_database(prod, name)
        gone.append(f"database {name}")
    return gone


def ports_for(lab: Lab, service: str) -> ProdPorts:
    return ProdPorts(lab, services.load(lab.config.root, service), lambda text: None)
