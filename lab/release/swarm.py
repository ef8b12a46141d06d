"""A release on a prod that is a swarm: one Swarm service ``<service>-<release>`` whose replicas
spread over the nodes, on the attachable apps overlay (``lab.stack.appsnet``), answering in
Docker's DNS as ``tasks.<service>-<release>`` once healthy (``endpoint_mode: dnsrr``: this
kernel has no IPVS for a VIP). The one description of how a release runs stays
``containers.container_spec``; ``swarmspec`` derives the service from it.

Every function takes the ``Lab``: the manager's engine answers for the service and its tasks; a
task's container is reached through its node's engine (the topology host at the node's
address). Hooks, migrations and integration tests stay one-off containers on the manager, which
reach every replica over the overlay.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lab.errors import ReleaseError, tail
from lab.estate import swarm as estate_swarm
from lab.ports.lab import Lab
from lab.release import containers, replicas, swarmspec
from lab.release.model import Candidate
from lab.stack import appsnet
from lab.stack.services import http_probe

LABEL = "cdlab.service"
HEALTH_START_S = 60  # Docker's start period for a replica's healthcheck, as a container's


def ready_nodes(lab: Lab) -> list[estate_swarm.Member]:
    listed = estate_swarm.members(lab.config, lambda h: lab.engine(h.name, timeout=30))
    if isinstance(listed, str):
        raise ReleaseError(f"could not read prod's swarm nodes: {listed}")
    return [m for m in listed if m.state == "ready" and m.availability == "active"]


def node_hosts(lab: Lab) -> dict[str, str]:
    """Node id -> the topology host at its address (every node of the manager's list)."""
    by_address = {h.address: h.name for h in lab.config.hosts}
    manager = lab.engine("prod", timeout=30)
    found = {}
    for node in manager.nodes.list():
        m = estate_swarm.member_of(node.attrs)
        if m.address in by_address:
            found[m.node_id] = by_address[m.address]
    return found


def count(lab: Lab, c: Candidate) -> int:
    """Replicas of ``c``: its manifest's, else one per ready node."""
    return replicas.wanted(c.service.replicas, len(ready_nodes(lab)))


def engines_of(lab: Lab) -> list[str]:
    """Every swarm node's topology host name."""
    return [h.name for h in lab.config.hosts if h.swarm]


def pull(lab: Lab, pull_one: Callable[[str, list[str]], list[str]], refs: list[str]) -> int:
    """Pull ``refs`` onto every node at once (a task starts at once on a node that has its
    image); a node that cannot is named before anything starts."""
    hosts = engines_of(lab)

    def one(host: str) -> int:
        try:
            return len(pull_one(host, refs))
        except Exception as exc:
            raise ReleaseError(
                f"could not pull {', '.join(r.rsplit('/', 1)[-1][:40] for r in refs)} onto "
                f"swarm node {host}: {exc}"
            ) from exc

    with ThreadPoolExecutor(len(hosts)) as pool:
        return sum(pool.map(one, hosts))


def services(lab: Lab, service: str, release: str = "") -> list[Any]:
    labels = [f"{LABEL}={service}"] + ([f"cdlab.release={release}"] if release else [])
    return list(lab.engine("prod").services.list(filters={"label": labels}))


def start(lab: Lab, c: Candidate, n: int = 0) -> str:
    """Create the release's service (one left by an earlier, failed start of the same release
    is removed first); with the registry's credentials, so a node that lacks the image (a
    recreated one) pulls it by itself."""
    import docker.errors

    remove(lab, c.service.name, c.release)
    n = n or count(lab, c)  # the plan's count (its slots); else as the manifest and nodes say
    if n < 1:
        raise ReleaseError(
            f"cannot start {c.project}: prod's swarm has no ready, active node "
            "('invoke lab.status' shows the nodes; 'invoke lab.up' brings them back)"
        )
    manager = lab.engine("prod")
    auth = lab.state.credentials().auth_config()
    manager.login(auth["username"], auth["password"], registry=lab.config.registry_addr)
    try:
        spec = containers.container_spec(lab.state, c)
        health = max(HEALTH_START_S, c.service.health_timeout)  # Swarm kills an unhealthy one
        manager.services.create(**swarmspec.service_kwargs(spec, n, health))
    except docker.errors.APIError as exc:
        raise ReleaseError(
            f"prod's swarm refused to create service {c.project}: {exc.explanation or exc}"
        ) from exc
    return f"{n} replica(s)"


def tasks(lab: Lab, c: Candidate) -> list[dict[str, Any]]:
    found = services(lab, c.service.name, c.release)
    return list(found[0].tasks()) if found else []


def wait_healthy(lab: Lab, c: Candidate, timeout: float) -> float:
    """Bounded wait until every wanted replica runs healthy (Swarm reports a task with a
    healthcheck running only once healthy); a crash loop ends it early, with the evidence."""
    started, deadline = time.monotonic(), time.monotonic() + timeout
    found = services(lab, c.service.name, c.release)
    if not found:
        raise ReleaseError(f"release '{c.project}' has no service on prod's swarm")
    wanted = int(found[0].attrs["Spec"]["Mode"]["Replicated"]["Replicas"])
    last, nodes = "no task yet", node_hosts(lab)
    while time.monotonic() < deadline:
        seen = tasks(lab, c)
        verdict = replicas.verdict(seen, healths(lab, c), wanted, nodes)
        if verdict.done:
            return time.monotonic() - started
        last = verdict.word
        if verdict.failed:
            break
        time.sleep(0.2)
    raise ReleaseError(
        f"release '{c.project}' did not become healthy within "
        f"{min(timeout, time.monotonic() - started):.0f} s; last word: {last}; "
        f"last health answer: {_answer(lab, c)}\n"
        f"last lines of its log:\n{tail(_last_log(lab, c))}"
    )


def _answer(lab: Lab, c: Candidate) -> str:
    """The manifest's probe run once in a replica that runs, and its answer: the evidence of
    why it is not healthy (Docker's own probe runs every 5 s; its log may be empty yet)."""
    for host in engines_of(lab):
        with contextlib.suppress(Exception):  # a node down: the next one is asked
            for ctr in lab.engine(host, timeout=10).containers.list(
                filters={"label": f"com.docker.swarm.service.name={c.project}"}
            ):
                said = containers.probe_answer(ctr, c.service.probe).strip()
                return f"{said or 'passed when asked once more'} (replica on {host})"
    return "no replica running to ask"


def healths(lab: Lab, c: Candidate) -> dict[str, str]:
    """Container ID -> Docker's health of each replica container, read on every node."""
    found: dict[str, str] = {}
    for host in engines_of(lab):
        with contextlib.suppress(Exception):  # a node down: its replicas read as unknown
            listed = lab.engine(host, timeout=10).containers.list(
                filters={"label": f"com.docker.swarm.service.name={c.project}"}
            )
            for ctr in listed:
                found[ctr.id] = str((ctr.attrs["State"].get("Health") or {}).get("Status", ""))
    return found


def _last_log(lab: Lab, c: Candidate) -> str:
    """The newest task container's last lines, read on its node."""
    nodes = node_hosts(lab)
    seen = sorted(tasks(lab, c), key=lambda t: str(t.get("UpdatedAt", "")), reverse=True)
    for t in seen:
        cid = ((t.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
        host = nodes.get(str(t.get("NodeID", "")))
        if cid and host:
            with contextlib.suppress(Exception):
                out: bytes = lab.engine(host, timeout=30).containers.get(cid).logs(tail=15)
                return f"(replica on {host})\n{out.decode(errors='replace')}"
    return ""


def remove(lab: Lab, service: str, release: str, stop_timeout: int = 25) -> None:
    """The release's service gone, and its replicas' containers with it (bounded: a node that
    is down keeps its container until it comes back and Swarm removes it)."""
    import docker.errors

    found = services(lab, service, release)
    for svc in found:
        with contextlib.suppress(docker.errors.NotFound):
            svc.remove()
    if not found:
        return
    deadline = time.monotonic() + stop_timeout + 5
    name = f"{service}-{release}"
    for host in engines_of(lab):
        with contextlib.suppress(Exception):  # a node down: Swarm cleans it when it is back
            client = lab.engine(host, timeout=30)
            while time.monotonic() < deadline and client.containers.list(
                filters={"label": f"com.docker.swarm.service.name={name}"}
            ):
                time.sleep(0.2)


def releases(lab: Lab, service: str) -> tuple[frozenset[str], frozenset[str]]:
    """(with at least one replica running healthy, present at all) releases of ``service``."""
    running, present = set(), set()
    for svc in services(lab, service):
        release = (svc.attrs["Spec"].get("Labels") or {}).get("cdlab.release", "")
        if not release:
            continue
        present.add(release)
        if replicas.running(svc.tasks()):
            running.add(release)
    return frozenset(running), frozenset(present)


def out_of(lab: Lab, service: str, keep: frozenset[str]) -> list[str]:
    return sorted(releases(lab, service)[1] - keep)


def addresses(lab: Lab, c: Candidate) -> tuple[str, ...]:
    """Each running replica's address on the apps network."""
    return tuple(r.address for r in replicas.running(tasks(lab, c), appsnet.NAME))


def replica_containers(lab: Lab, c: Candidate) -> list[tuple[str, Any]]:
    """(node host, container) of each running replica of ``c``."""
    nodes, found = node_hosts(lab), []
    for t in map(replicas.task, tasks(lab, c)):
        host = nodes.get(t.node)
        if t.running and t.container and host:
            found.append((host, lab.engine(host, timeout=30).containers.get(t.container)))
    return found


def probe_all(lab: Lab, c: Candidate, release: str) -> str:
    """``c``'s health probe passes inside every running replica of ``release``."""
    target = Candidate(c.service, release, c.image)
    found = replica_containers(lab, target)
    if not found:
        raise ReleaseError(f"{target.project} has no running replica")
    probe = http_probe(c.service.port, c.service.health)
    for host, ctr in found:
        code, out = ctr.exec_run(["sh", "-c", probe])
        if code != 0:
            raise ReleaseError(
                f"probe exit {code} in the replica on {host}: {out.decode(errors='replace')[-200:]}"
            )
    return f"exit 0 in {len(found)} replica(s)"


def state(lab: Lab, c: Candidate, lost: set[str] | None = None) -> dict[str, Any] | None:
    """The release as ``verify.bake`` reads a container's state: running while a replica runs;
    ``Ended``, its tasks that ended (exit, OOM, killed unhealthy) on a node not in ``lost``.
    ``lost`` gathers every node seen not ready (the caller keeps it across readings: a task
    gone with its node is the node's fault, not the release's; Swarm starts it elsewhere)."""
    seen = [replicas.task(t) for t in tasks(lab, c)]
    if not seen:
        return None
    manager = lab.engine("prod", timeout=30)
    lost = lost if lost is not None else set()
    lost |= {  # kept by the caller across readings: a node back up stays lost for the bake
        m.node_id
        for m in (estate_swarm.member_of(n.attrs) for n in manager.nodes.list())
        if m.state != "ready"
    }
    return {
        "Running": any(t.running for t in seen),
        "Restarting": False,
        "Ended": [t.id for t in seen if t.ended and t.node not in lost],
        "RestartCount": 0,
    }


def remove_image(lab: Lab, ref: str) -> None:
    """An image gone from every node (one a container still uses stays)."""
    import docker.errors

    for host in engines_of(lab):
        with contextlib.suppress(docker.errors.APIError, OSError):
            lab.engine(host).images.remove(ref)
