"""``invoke lab.restart-workers``: each worker of prod's swarm restarted in turn (its host, its
engine with it) while the releases serve, with no request failed.

Facts (the manager's nodes, the releases' running replicas by node) -> a plan (pure: five steps
per worker, refused with the reason when a worker is not ready or a release has every running
replica on one worker) -> apply, one step at a time under the deploy lock:

    proxy-drain    the proxy sends the worker's replicas no new request (the drained-addresses
                   document, ``/cdlab/drained/<worker>``) and waits for what they are answering
    swarm-drain    Swarm starts the worker's replicas on the other nodes and stops them there;
                   waited until every release runs its count of replicas again, none there
    restart        the host restarted; waited until the manager lists it ready
    swarm-active   the worker takes replicas again (the next deploy spreads over it)
    proxy-undrain  the drained-addresses document removed

Whatever stops a run (a failed step, SIGINT, SIGTERM), the undo of what was done runs in reverse:
the worker active again, the document removed, a stopped host started. The replicas moved stay
where Swarm put them until the next deploy of their service.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import docker

from lab.errors import ConfigError, LabError, Stop, SwarmError
from lab.estate import swarm as estate_swarm
from lab.ports import engines
from lab.ports.lab import Lab
from lab.ports.proxy import module as proxy_module
from lab.progress import Progress
from lab.release import lock, signals
from lab.release import swarm as release_swarm
from lab.stack import appsnet

ACTIONS = ("proxy-drain", "swarm-drain", "restart", "swarm-active", "proxy-undrain")
UNDO = {"proxy-drain": "proxy-undrain", "swarm-drain": "swarm-active", "restart": "start"}
MOVE_TIMEOUT = 120.0  # the worker's replicas running elsewhere (a start is a few seconds)
READY_TIMEOUT = 120.0  # the worker's host restarted and listed ready


@dataclass(frozen=True)
class Worker:
    """A worker as the manager lists it, with the releases' replicas running on it."""

    host: str
    node_id: str
    state: str  # ready, down...
    replicas: Mapping[str, int]  # release service -> running replicas on this worker


@dataclass(frozen=True)
class Step:
    action: str  # one of ACTIONS
    host: str

    @property
    def key(self) -> str:
        return f"{self.action} {self.host}"


def plan(workers: Sequence[Worker], elsewhere: Mapping[str, int]) -> tuple[Step, ...]:
    """The steps, worker by worker in the order given (pure). ``elsewhere``: each release
    service's running replicas on the manager. Refused (``ConfigError``) when a worker is not
    ready, or a release would have no replica left while one worker is out."""
    if not workers:
        raise ConfigError("prod's swarm", "no worker", "a topology with swarm workers")
    for w in workers:
        if w.state != "ready":
            raise ConfigError(
                f"swarm worker {w.host}",
                w.state,
                "ready: bring it back first ('invoke lab.up'), then restart the workers",
            )
    services = set(elsewhere) | {s for w in workers for s in w.replicas}
    for service in sorted(services):
        for w in workers:
            others = elsewhere.get(service, 0) + sum(
                o.replicas.get(service, 0) for o in workers if o is not w
            )
            if w.replicas.get(service, 0) and not others:
                raise ConfigError(
                    f"release {service}",
                    f"every running replica on {w.host}",
                    "replicas on two nodes at least (its manifest's replicas >= 2, or "
                    "absent: one per node), or deploy it again to spread it",
                )
    return tuple(Step(a, w.host) for w in workers for a in ACTIONS)


def facts(lab: Lab) -> tuple[list[Worker], dict[str, int]]:
    """The workers (topology order) and each release service's replicas on the manager."""
    manager = lab.engine("prod", timeout=30)
    by_address = {h.address: h.name for h in lab.config.hosts}
    members = {
        m.node_id: m for m in (estate_swarm.member_of(n.attrs) for n in manager.nodes.list())
    }
    counts: dict[str, dict[str, int]] = {}
    for svc in manager.services.list(filters={"label": release_swarm.LABEL}):
        for t in svc.tasks(filters={"desired-state": "running"}):
            if (t.get("Status") or {}).get("State") == "running":
                host = (
                    by_address.get(members[t["NodeID"]].address, "")
                    if t.get("NodeID") in members
                    else ""
                )
                per = counts.setdefault(host, {})
                per[svc.name] = per.get(svc.name, 0) + 1
    workers = []
    for h in lab.config.swarm_workers:
        m = next(
            (m for m in members.values() if m.address == h.address and m.state == "ready"), None
        )
        m = m or next((m for m in members.values() if m.address == h.address), None)
        workers.append(
            Worker(
                h.name,
                m.node_id if m else "",
                m.state if m else "not listed",
                counts.get(h.name, {}),
            )
        )
    manager_host = lab.config.swarm_manager
    return workers, counts.get(manager_host.name if manager_host else "", {})


def _others(workers: Sequence[Worker], on_manager: Mapping[str, int], host: str) -> dict[str, int]:
    """Each release service's running replicas anywhere but on ``host``."""
    out = dict(on_manager)
    for w in workers:
        if w.host != host:
            for service, n in w.replicas.items():
                out[service] = out.get(service, 0) + n
    return out


def _drained_key(host: str) -> str:
    prefix: str = proxy_module("document").DRAINED_PREFIX
    return prefix + host


class Apply:
    """The steps' side effects on the lab (``run`` a step by its action)."""

    def __init__(self, lab: Lab, workers: Sequence[Worker]) -> None:
        self.lab = lab
        self.nodes = {w.host: w.node_id for w in workers}

    def run(self, action: str, host: str) -> str:
        done: str = getattr(self, action.replace("-", "_"))(host)
        return done

    # the proxy
    def proxy_drain(self, host: str) -> str:
        workers, on_manager = facts(self.lab)  # as they are now: earlier workers moved replicas
        plan([w for w in workers if w.host == host], _others(workers, on_manager, host))
        addrs = self._addresses(host)
        doc = {"addrs": list(addrs), "why": f"rolling restart of {host}"}
        self.lab.etcd.put_json(_drained_key(host), doc)
        drained = self.lab.runtime.wait_addrs_drained(addrs, timeout=30.0)
        left = f"; {drained.left} connection(s) still open" if drained.left else ""
        return f"{len(addrs)} address(es) drained in {drained.seconds:.1f} s{left}"

    def proxy_undrain(self, host: str) -> str:
        self.lab.etcd.delete(_drained_key(host))
        return "the proxy's drained-addresses document removed"

    # Swarm
    def swarm_drain(self, host: str) -> str:
        self._availability(host, "drain")
        started = time.monotonic()
        last = "not read"
        while time.monotonic() - started < MOVE_TIMEOUT:
            last = self._unsettled(host)
            if not last:
                return f"its replicas running elsewhere after {time.monotonic() - started:.1f} s"
            time.sleep(0.5)
        raise SwarmError(f"move {host}'s replicas within {MOVE_TIMEOUT:.0f} s", host, last)

    def swarm_active(self, host: str) -> str:
        self._availability(host, "active")
        return "takes replicas again"

    # the host
    def restart(self, host: str) -> str:
        started = time.monotonic()
        self._container(host).restart(timeout=30)
        self._wait_ready(host)
        return f"restarted and ready in {time.monotonic() - started:.1f} s"

    def start(self, host: str) -> str:
        c = self._container(host)
        c.reload()
        was = c.status
        if was != "running":
            c.start()
        self._wait_ready(host)  # running may still mean going down: wait for it listed ready
        return "ready" if was == "running" else "started again"

    def _container(self, host: str) -> Any:
        return engines.local().containers.get(
            self.lab.config.container_name(self.lab.config.host(host))
        )

    def _wait_ready(self, host: str) -> None:
        estate_swarm.wait_ready(
            self.lab.engine("prod", timeout=30), [self.lab.config.host(host)], READY_TIMEOUT
        )

    def _availability(self, host: str, availability: str) -> None:
        """Set ``host``'s availability; a node just back has its record rewritten by Swarm,
        and an update against an older version is refused ("out of sequence"): read again."""
        last = "not tried"
        for _ in range(5):
            node = self.lab.engine("prod", timeout=30).nodes.get(self.nodes[host])
            spec = dict(node.attrs["Spec"])
            if spec.get("Availability") == availability:
                return
            spec["Availability"] = availability
            try:
                node.update(spec)
                return
            except docker.errors.APIError as exc:
                last = str(exc)
                time.sleep(1)
        raise SwarmError(f"make {host} {availability}", host, last)

    def _addresses(self, host: str) -> tuple[str, ...]:
        """The apps-network addresses of the release replicas running on ``host``."""
        manager = self.lab.engine("prod", timeout=30)
        found = []
        for svc in manager.services.list(filters={"label": release_swarm.LABEL}):
            for t in svc.tasks(filters={"node": self.nodes[host], "desired-state": "running"}):
                for att in t.get("NetworksAttachments") or ():
                    if (att.get("Network") or {}).get("Spec", {}).get("Name") == appsnet.NAME:
                        found += [a.split("/")[0] for a in att.get("Addresses") or ()]
        return tuple(sorted(found))

    def _unsettled(self, host: str) -> str:
        """What keeps the move from being done ("" once every release runs its count of
        replicas, none of them on ``host``)."""
        manager = self.lab.engine("prod", timeout=30)
        waiting = []
        for svc in manager.services.list(filters={"label": release_swarm.LABEL}):
            want = int(svc.attrs["Spec"]["Mode"].get("Replicated", {}).get("Replicas", 0))
            tasks = [
                t
                for t in svc.tasks(filters={"desired-state": "running"})
                if (t.get("Status") or {}).get("State") == "running"
            ]
            here = sum(1 for t in tasks if t.get("NodeID") == self.nodes[host])
            if here or len(tasks) < want:
                waiting.append(f"{svc.name} {len(tasks) - here}/{want} elsewhere, {here} here")
        return "; ".join(waiting)


def restart_workers(lab: Lab, progress: Progress) -> list[str]:
    """Restart every worker of prod's swarm in turn (module docstring); what was done. Raises
    ``LabError`` (what failed, what was undone) when a step fails or a signal stops it."""
    if lab.config.swarm_manager is None:
        raise ConfigError(
            "the topology's prod",
            "one host",
            'a swarm (hosts with "swarm": "manager"/"worker"; docs/lab.md, "prod as a swarm")',
        )
    theirs = [h.name for h in lab.config.swarm_workers if h.existing]
    if theirs:  # refused before anything is touched: cdlab cannot restart a machine it did not make
        raise ConfigError(
            "swarm workers",
            theirs,
            "workers cdlab created: an existing machine is restarted by its owner (drain it "
            "first: 'docker node update --availability drain' on prod, then 'active' again)",
        )
    with lock.held(lab.etcd, "restart prod's swarm workers", signals.lease_lost):
        workers, on_manager = facts(lab)
        steps = plan(workers, on_manager)
        return _apply(steps, Apply(lab, workers), progress)


def _apply(steps: Sequence[Step], ports: Apply, progress: Progress) -> list[str]:
    progress.plan([s.key for s in steps])
    started: list[Step] = []  # every step begun, the one stopped halfway included (undone too)
    finished: set[tuple[str, str]] = set()  # the steps that returned
    said: list[str] = []
    with signals.deferred(progress.say):  # out of ``stoppable``, a signal is noted only
        try:
            with signals.stoppable():
                for step in steps:
                    with progress.stage(step.key, step.key) as st:
                        started.append(step)
                        detail = ports.run(step.action, step.host)
                        st.changed(detail)
                    finished.add((step.action, step.host))
                    said.append(f"{step.key}: {detail}")
        except (Stop, Exception) as exc:
            undone = _undo(started, finished, ports, progress)
            why = f"stopped by {exc.signal}" if isinstance(exc, Stop) else f"failed: {exc}"
            at = started[-1].key if started else "start"
            raise LabError(
                f"restart of prod's swarm workers {why} at '{at}'. Undone: "
                f"{', '.join(undone) or 'nothing'}. 'invoke lab.status' shows the nodes."
            ) from exc
    return said


def _undo(
    started: Sequence[Step], finished: set[tuple[str, str]], ports: Apply, progress: Progress
) -> list[str]:
    """The undo of each step begun (reverse order) unless the step that undoes it returned
    (a worker brought back already); every undo runs whatever the others did."""
    undone: list[str] = []
    for step in reversed(started):
        undo = UNDO.get(step.action)
        if undo is None or (undo, step.host) in finished:
            continue
        try:
            with progress.stage(f"undo: {step.key}", f"undo-{step.key}") as st:
                st.changed(ports.run(undo, step.host))
            undone.append(step.key)
        except Exception as exc:  # an undo that fails must not stop the others
            undone.append(f"{step.key} (its undo failed: {exc})".splitlines()[0])
    return undone
