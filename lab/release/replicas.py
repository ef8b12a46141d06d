"""A release on a swarm prod is a Swarm service of N replicas: how many it wants, and what its
tasks say about it (pure: data in, frozen verdicts out; reading them is the runner's).

The tasks are the Docker API's task objects (``service.tasks()``, ``GET /tasks``, API 1.41) as
JSON; the fields read::

    ID, Slot, NodeID ("" until scheduled), DesiredState ("running", "shutdown", ...)
    Status.State      new pending assigned accepted preparing ready starting running
                      complete shutdown failed rejected remove orphaned
    Status.Err        why it failed or waits: "No such image: ...", "no suitable node (...)",
                      "task: non-zero exit (137): dockerexec: unhealthy container"
    Status.Timestamp  when it reached that state (RFC 3339, nanoseconds, UTC)
    Status.ContainerStatus.ContainerID
    NetworksAttachments[].Network.Spec.Name, .Addresses (CIDR: "10.0.9.4/24")

and, beside them, each task's container health as its node's engine reports it
(``State.Health.Status``: "starting", "healthy", "unhealthy"), keyed by container ID. Swarm's
executor keeps a task "starting" until its container is first healthy (then the task enters
``tasks.<service>`` in DNS) and kills one that turns unhealthy later (exit 137): a task's state
says where it was, its container's health where it is now.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from lab.stack.project import APPS_NETWORK
from lab.stack.services import MAX_REPLICAS

CRASH_LOOP = 3  # ended tasks of one release that make a crash loop: waiting will not heal it
# a task in one of these states ended by itself: a non-zero exit (an unhealthy container is
# killed: 137), a rejection (an image its node cannot pull), or an exit 0 of a server
ENDED = frozenset({"failed", "rejected", "complete"})
TaskList = Iterable[Mapping[str, Any]]  # task objects as the API gives them


def wanted(manifest_value: int | None, nodes: int) -> int:
    """Replicas a release wants: 0 when ``nodes`` (ready prod nodes of a swarm) is 0, i.e. no
    swarm, a plain container (a manifest value then goes unapplied); else the manifest's value,
    or one per ready node (at most ``MAX_REPLICAS``)."""
    if nodes < 0:
        raise ValueError(f"ready nodes cannot be negative: {nodes}")
    if nodes == 0:
        return 0
    return manifest_value if manifest_value is not None else min(nodes, MAX_REPLICAS)


@dataclass(frozen=True)
class Task:
    """The parts of one Swarm task object that cdlab reads."""

    id: str
    slot: int
    node: str  # node ID; "" until scheduled
    state: str  # Status.State
    desired: str  # DesiredState
    err: str = ""  # Status.Err
    container: str = ""  # its container's ID; "" before it has one
    when: str = ""  # Status.Timestamp
    addresses: tuple[tuple[str, str], ...] = ()  # (network name, IP), in the API's order

    @property
    def running(self) -> bool:
        """Running, and meant to (a task on a lost node keeps "running", desired "shutdown")."""
        return self.state == "running" and self.desired == "running"

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def address(self, network: str = APPS_NETWORK) -> str:
        """Its IP on ``network``; "" when it has none there."""
        return next((ip for name, ip in self.addresses if name == network), "")


def task(doc: Mapping[str, Any]) -> Task:
    """A task object (JSON) as a ``Task``; a field the API leaves out reads as empty."""
    status = doc.get("Status") or {}
    addresses = tuple(
        (str(((att.get("Network") or {}).get("Spec") or {}).get("Name", "")), cidr.split("/")[0])
        for att in doc.get("NetworksAttachments") or ()
        for cidr in att.get("Addresses") or ()
    )
    return Task(
        str(doc.get("ID", "")),
        int(doc.get("Slot") or 0),
        str(doc.get("NodeID") or ""),
        str(status.get("State", "")),
        str(doc.get("DesiredState", "")),
        str(status.get("Err") or ""),
        str((status.get("ContainerStatus") or {}).get("ContainerID") or ""),
        str(status.get("Timestamp") or ""),
        addresses,
    )


def _newest_first(tasks: Iterable[Task]) -> list[Task]:
    """By ``Status.Timestamp``, newest first. Go trims a fraction's trailing zeros, so the
    texts compare in time order only without their "Z" ("5.59" after "5.5"; "5.59Z" sorts
    before "5.5Z")."""
    return sorted(tasks, key=lambda t: t.when.removesuffix("Z"), reverse=True)


def _where(t: Task, nodes: Mapping[str, str]) -> str:
    """ "task 2 on prod-3" (the node's name when known, else its ID; "no node" unscheduled)."""
    node = nodes.get(t.node, t.node) if t.node else "no node"
    return f"task {t.slot} on {node}"


def _why(t: Task) -> str:
    return t.err or f"{t.state}, no error given"


@dataclass(frozen=True)
class Verdict:
    """What a release's tasks say: ``done`` (``wanted`` tasks running and healthy), ``waiting``
    (``word``: the last word, for the error when the wait runs out) or ``failed`` (a crash
    loop; ``word`` is the evidence and ``evidence`` the newest ended task: its node and
    container, whose log tells why)."""

    outcome: Literal["done", "waiting", "failed"]
    word: str
    healthy: int
    wanted: int
    evidence: Task | None = None

    @property
    def done(self) -> bool:
        return self.outcome == "done"

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"


def verdict(
    tasks: TaskList,
    healths: Mapping[str, str],
    wanted: int,
    nodes: Mapping[str, str] | None = None,
) -> Verdict:
    """Where a starting release stands: ``CRASH_LOOP`` or more ended tasks is a failure (as
    three restarts of a container are), checked first; else done once ``wanted`` tasks run with
    a healthy container (``healths``: container ID -> health); else waiting, the word naming
    each task not yet healthy and the newest ended one. ``nodes`` maps node IDs to names."""
    if wanted < 1:
        raise ValueError(f"a swarm release wants at least one replica, not {wanted}")
    names = nodes or {}
    found = [task(doc) for doc in tasks]
    ended = _newest_first(t for t in found if t.ended)

    def ok(t: Task) -> bool:
        return t.running and healths.get(t.container) == "healthy"

    healthy = sum(1 for t in found if ok(t))
    counts = f"{healthy} of {wanted} healthy"
    if len(ended) >= CRASH_LOOP:
        last = ended[0]
        word = (
            f"crash loop: {len(ended)} tasks ended; the last, {_where(last, names)}: {_why(last)}"
        )
        return Verdict("failed", word, healthy, wanted, last)
    if healthy >= wanted:
        return Verdict("done", counts, healthy, wanted)
    notes = [
        f"{_where(t, names)} {_progress(t, healths)}"
        for t in sorted(found, key=lambda t: (t.slot, t.id))
        if t.desired == "running" and not t.ended and not ok(t)
    ]
    if ended:
        notes.append(f"{_where(ended[0], names)} ended: {_why(ended[0])}")
    return Verdict("waiting", "; ".join([counts, *(notes or ["no task yet"])]), healthy, wanted)


def _progress(t: Task, healths: Mapping[str, str]) -> str:
    """What a task meant to run is doing."""
    health = healths.get(t.container, "")
    if t.running:
        return f"running, health {health or 'not read yet'}"
    if t.state == "preparing":
        return "preparing (pulling its image)"
    if t.err:
        return f"{t.state}: {t.err}"
    return f"{t.state}, health {health}" if health else t.state


@dataclass(frozen=True)
class Replica:
    """A running task of a release, where the proxy and the tests reach it."""

    address: str  # on the apps network
    node: str  # node ID
    slot: int
    task: str  # task ID


def running(tasks: TaskList, network: str = APPS_NETWORK) -> tuple[Replica, ...]:
    """The running tasks that have an address on ``network``, by slot."""
    found = sorted((task(doc) for doc in tasks), key=lambda t: (t.slot, t.id))
    return tuple(
        Replica(t.address(network), t.node, t.slot, t.id)
        for t in found
        if t.running and t.address(network)
    )


def test_target(tasks: TaskList, manager_node_id: str) -> Replica | None:
    """The replica the integration tests run against, once: a running one on a worker when
    there is one (the test container runs on the manager, so its requests cross the overlay),
    else one on the manager; the lowest slot of those. None when nothing runs."""
    replicas = running(tasks)
    workers = [r for r in replicas if r.node != manager_node_id]
    return next(iter(workers or replicas), None)


@dataclass(frozen=True)
class Bake:
    """How a release's tasks fared in its bake window: ``ok``, else ``word`` says which task
    failed how, and ``evidence`` is that task (its node and container, for the log)."""

    ok: bool
    word: str
    evidence: Task | None = None


def bake_verdict(
    tasks: TaskList,
    healths: Mapping[str, str],
    lost: Collection[str],
    *,
    started: TaskList = (),
    down: Collection[str] = (),
    nodes: Mapping[str, str] | None = None,
) -> Bake:
    """Whether a release kept its replicas through the bake: it fails when one of its tasks
    ended on a node not ``lost`` (an exit, an OOM kill, a container killed unhealthy) unless
    it had already ended in ``started`` (the tasks read when the bake began), when a running
    task's container is unhealthy, or when the proxy has a running task's address ``down``.
    A task on a ``lost`` node (node IDs Down at any time in the window) is the node's fault,
    not the release's: Swarm replaces it.

    ``down`` is the proxy's view: a node that died is DOWN there at once but Down in Swarm only
    after its heartbeats stop (about 20 s), so a caller should pass addresses DOWN for longer."""
    names = nodes or {}
    before = {t.id for t in map(task, started) if t.ended}
    found = [task(doc) for doc in tasks]
    mine = [t for t in found if t.node not in lost]
    ended = _newest_first(t for t in mine if t.ended and t.id not in before)
    if ended:
        return Bake(False, f"{_where(ended[0], names)} ended: {_why(ended[0])}", ended[0])
    for t in (t for t in mine if t.running):
        if healths.get(t.container) == "unhealthy":
            return Bake(False, f"{_where(t, names)} is unhealthy", t)
        if t.address() in down:
            return Bake(False, f"the proxy has {_where(t, names)} DOWN while it runs", t)
    gone = sorted({_where(t, names) for t in found if t.node in lost and t.id not in before})
    note = f"; lost with a node (Swarm replaces them): {', '.join(gone)}" if gone else ""
    return Bake(True, f"running replicas: {sum(1 for t in mine if t.running)}{note}")
