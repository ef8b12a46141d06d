"""Drift: is prod running exactly what the pipeline made?

``container_spec`` writes, in each release container's ``cdlab.made`` label, how the pipeline
made it, in a canonical form (``made``): the image, user, read-only root, tmpfs, capabilities,
security options, memory, swap, pids, CPUs, restart policy, and the environment's names with a
hash of its lines (never a value: it holds ``DATABASE_URL`` and its password). A label cannot
change once the container exists, so it stays the record when someone runs ``docker update``
or replaces the container by hand. ``seen`` reads the same form from ``docker inspect``;
``differences`` says what changed, in words.

``find`` (pure, over ``Facts``) adds what the pool says: a release of the pool whose container
is missing or not running, and a container running outside the pool. ``facts`` reads prod;
``render`` and ``as_json`` are ``invoke drift``'s output.

On a prod that is a swarm, a release's containers are its service's tasks, on every node:
``facts`` reads each node's engine (a node that does not answer is said, as what cannot be
checked), and a task is named with its node. A task is compared on what a service carries
(all but ``NOT_ON_TASKS``); one that ended is Swarm's to replace, not drift, and a pool
release is missing when no replica runs on any node.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from lab.ports.lab import Lab
from lab.release import lock
from lab.stack.limits import MIB, parse_memory

SEEN = "/cdlab/lessons/results/drift-seen"  # the last drift ``check`` found (reset clears it)
MADE = "cdlab.made"  # label: the canonical form (``made``) of how the pipeline made it
GIB = 1024 * MIB
TASK = "com.docker.swarm.task.id"  # label: the container is a Swarm task's
NODE = "com.docker.swarm.node.id"  # label: the node a task runs on


# each canonical field: the ``containers.run`` argument it comes from, and where
# ``docker inspect`` shows it (section, key)
SOURCES: dict[str, tuple[str, tuple[str, str]]] = {
    "image": ("image", ("Config", "Image")),  # as asked for (the top-level Image is its id)
    "user": ("user", ("Config", "User")),
    "read_only": ("read_only", ("HostConfig", "ReadonlyRootfs")),
    "tmpfs": ("tmpfs", ("HostConfig", "Tmpfs")),
    "cap_drop": ("cap_drop", ("HostConfig", "CapDrop")),
    "security_opt": ("security_opt", ("HostConfig", "SecurityOpt")),
    "memory": ("mem_limit", ("HostConfig", "Memory")),
    "memswap": ("memswap_limit", ("HostConfig", "MemorySwap")),
    "pids": ("pids_limit", ("HostConfig", "PidsLimit")),
    "nano_cpus": ("nano_cpus", ("HostConfig", "NanoCpus")),
    "restart": ("restart_policy", ("HostConfig", "RestartPolicy")),
}


# what a task is not compared on: the service API cannot carry the no-new-privileges option or a
# swap limit (``swarmspec.INSTEAD``), and Swarm, not the engine, restarts a task
NOT_ON_TASKS = frozenset({"security_opt", "memswap", "restart"})


def _canonical(raw: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The one form both sides are put in (``raw``: by canonical field, as either side has
    it): no limit is 0, no restart policy is "no"; the environment's names and a hash."""
    lines = "\n".join(sorted(f"{k}={v}" for k, v in env.items()))
    return {
        "image": str(raw["image"] or ""),
        "user": str(raw["user"] or ""),
        "read_only": bool(raw["read_only"]),
        "tmpfs": sorted(raw["tmpfs"] or {}),
        "cap_drop": sorted(_capability(str(c)) for c in raw["cap_drop"] or ()),
        "security_opt": sorted(str(o) for o in raw["security_opt"] or ()),
        "memory": _bytes(raw["memory"]),
        "memswap": _bytes(raw["memswap"]),  # -1: no limit on swap
        "pids": max(int(raw["pids"] or 0), 0),  # the engine says 0, -1 or null for none
        "nano_cpus": int(raw["nano_cpus"] or 0),
        "restart": str((raw["restart"] or {}).get("Name") or "no"),  # an older engine: ""
        "env": sorted(env),
        "env_sha256": hashlib.sha256(lines.encode()).hexdigest(),
    }


def _capability(name: str) -> str:
    """``chown`` and ``CAP_CHOWN`` alike (an engine may store either); ``ALL`` as it is."""
    name = name.upper()
    return name if name == "ALL" or name.startswith("CAP_") else f"CAP_{name}"


def _bytes(size: Any) -> int:
    """A size in bytes: a number already, or "256m" (``[limits]``' form, the SDK takes it)."""
    return parse_memory(size, MADE) if isinstance(size, str) else int(size or 0)


def made(spec: Mapping[str, Any]) -> dict[str, Any]:
    """How ``spec`` (``containers.run`` arguments, as ``container_spec`` makes them) makes a
    container, in the canonical form (pure)."""
    env = spec.get("environment") or {}
    if not isinstance(env, Mapping):  # the SDK takes a list of "NAME=value" too
        env = _env(env)
    return _canonical({key: spec.get(arg) for key, (arg, _) in SOURCES.items()}, env)


def label(spec: Mapping[str, Any]) -> str:
    """``made(spec)`` as the ``cdlab.made`` label: compact JSON, keys sorted (pure)."""
    return json.dumps(made(spec), separators=(",", ":"), sort_keys=True)


def _env(lines: Iterable[str]) -> dict[str, str]:
    return {name: value for name, _, value in (line.partition("=") for line in lines)}


def seen(attrs: Mapping[str, Any], env_names: Iterable[str]) -> dict[str, Any]:
    """The canonical form of a container as ``docker inspect`` shows it (``attrs``), its
    environment cut to ``env_names`` (the pipeline's: the image's own ``ENV`` is there too);
    a name it lacks is left out, so it counts as a difference (pure)."""
    raw = {key: (attrs.get(a) or {}).get(b) for key, (_, (a, b)) in SOURCES.items()}
    if _is_task(attrs):  # a service's tmpfs is a mount of the task's container
        mounts = (attrs.get("HostConfig") or {}).get("Mounts") or ()
        raw["tmpfs"] = {m.get("Target"): "" for m in mounts if m.get("Type") == "tmpfs"}
    env = _env((attrs.get("Config") or {}).get("Env") or ())
    return _canonical(raw, {name: env[name] for name in env_names if name in env})


def _labels(attrs: Mapping[str, Any]) -> Mapping[str, Any]:
    return ((attrs.get("Config") or {}).get("Labels")) or {}


def _is_task(attrs: Mapping[str, Any]) -> bool:
    return TASK in _labels(attrs)


def _size(n: int) -> str:
    if n <= 0:
        return "none" if n == 0 else "unlimited"  # -1: the engine's "no limit on swap"
    for unit, name in ((GIB, "GiB"), (MIB, "MiB")):
        if n % unit == 0:
            return f"{n // unit} {name}"
    return f"{n} bytes"


def _image(ref: str) -> str:
    return re.sub(r"(sha256:[0-9a-f]{12})[0-9a-f]+", r"\1..", ref) or "none"


# (key, what it is called, how a value is shown), in the order differences are said
FIELDS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("image", "image", _image),
    ("user", "user", lambda v: f"'{v}'"),
    ("read_only", "read-only root", lambda v: "on" if v else "off"),
    ("tmpfs", "tmpfs", lambda v: ", ".join(v) or "none"),
    ("cap_drop", "capabilities dropped", lambda v: ", ".join(v) or "none"),
    ("security_opt", "security options", lambda v: ", ".join(v) or "none"),
    ("memory", "memory", _size),
    ("memswap", "memory with swap", _size),
    ("pids", "process limit", lambda v: str(v) if v else "none"),
    ("nano_cpus", "CPU cap", lambda v: f"{v / 1e9:g} CPUs" if v else "none"),
    ("restart", "restart policy", lambda v: f"'{v}'"),
)


def differences(made: Mapping[str, Any], seen: Mapping[str, Any]) -> list[str]:
    """What differs between how the pipeline made a container and how it is now, one line
    each, e.g. "memory 512 MiB, the pipeline made it 256 MiB"; the environment by names only
    (pure). A field ``made`` lacks (a label older than the field) is not compared."""
    out = [
        f"{what} {show(seen.get(key))}, the pipeline made it {show(made[key])}"
        for key, what, show in FIELDS
        if key in made and made[key] != seen.get(key)
    ]
    names = list(made.get("env", ()))
    missing = [n for n in names if n not in seen.get("env", ())]
    if missing:
        them = "it" if len(missing) == 1 else "them"
        out.append(f"environment: {', '.join(missing)} not set, the pipeline set {them}")
    elif made.get("env_sha256", seen.get("env_sha256")) != seen.get("env_sha256"):
        out.append(
            f"environment changed ({', '.join(names)}): values differ from what the pipeline "
            "set (its label keeps a hash of them, not which one changed)"
        )
    return out


@dataclass(frozen=True)
class Drift:
    """A release container that is not as the pipeline made it, or a pool release without a
    running one; ``unknown``: one that cannot be checked (not drift: ``what`` says why)."""

    service: str
    release: str
    container: str  # its name; "" when the release has none
    what: tuple[str, ...]
    fix: str
    unknown: bool = False


@dataclass(frozen=True)
class ServiceFacts:
    service: str
    pool: frozenset[str]  # the releases its routes name
    containers: tuple[Mapping[str, Any], ...]  # ``docker inspect`` of its release containers


@dataclass(frozen=True)
class Facts:
    services: tuple[ServiceFacts, ...]
    deploying: str = ""  # what the deploy lock's holder does; "": the lock is free
    swarm: bool = False  # prod is a swarm: the containers are tasks, read on every node
    nodes: tuple[tuple[str, str], ...] = ()  # (node id, its topology host) of the swarm
    unreached: tuple[tuple[str, str], ...] = ()  # (host, why) of each node not read


CHANGED_FIX = (
    "deploy a new commit through the pipeline (`invoke deploy`): it makes a new container as "
    "the manifest says; to keep the change, put it in services/{service}/service.toml"
)
UNLABELLED_FIX = (
    "deploy a new commit through the pipeline (`invoke deploy`): the containers it makes carry "
    f"the {MADE} label, and can be checked"
)
STOPPED_FIX = (
    "see why in its log (`invoke logs --service {service} --release {release}`); start it "
    "again on prod (`invoke lab.shell prod`, then `docker start {container}`) or deploy a new "
    "commit (`invoke deploy`)"
)
MISSING_FIX = (
    "deploy a new commit (`invoke deploy`), or `invoke rollback --service {service} --to "
    "{release}` to start it again from the registry and make it live"
)
OUTSIDE_FIX = (
    "the next deploy removes it (a release out of the pool); now: `invoke lab.shell prod`, "
    "then `docker rm -f {container}`"
)
OUTSIDE_TASK_FIX = (
    "the next deploy removes it (a release out of the pool); now: `invoke lab.shell prod`, "
    "then `docker service rm {service}-{release}`"
)
UNREACHED_FIX = "`invoke lab.status` shows the node; `invoke lab.up` brings it back"
DEPLOYING_FIX = "check again once the deploy has ended (`invoke lock.status`)"


def _looked_at(
    svc: ServiceFacts, nodes: Mapping[str, str]
) -> Iterator[tuple[str, str, bool, Mapping[str, Any]]]:
    """(name, release, running, attrs) of each container of ``svc`` that counts: one of a
    release of the pool, or one running (a stopped one out of the pool is a retired leftover,
    removed by the next deploy; an ended task is Swarm's to replace). A task's name says its
    node (``nodes``: node id -> host)."""
    for attrs in svc.containers:
        name = str(attrs.get("Name", "")).lstrip("/")
        labels = _labels(attrs)
        release = str(labels.get("cdlab.release", ""))
        running = (attrs.get("State") or {}).get("Status") == "running"
        if TASK in labels:
            if not running:
                continue
            name = f"{name} on {nodes.get(str(labels.get(NODE, '')), 'an unknown node')}"
        if running or release in svc.pool:
            yield name, release, running, attrs


def checked(facts: Facts) -> list[tuple[str, str, str]]:
    """(service, release, container) of every container ``find`` checks (pure)."""
    nodes = dict(facts.nodes)
    return [
        (s.service, rel, name) for s in facts.services for name, rel, _, _ in _looked_at(s, nodes)
    ]


def _state(attrs: Mapping[str, Any]) -> str:
    """How a container that is not running is, from its ``State``: "exited (exit code 137)"."""
    st = attrs.get("State") or {}
    status = str(st.get("Status") or "unknown")
    if status not in ("exited", "dead"):
        return status  # created, paused, restarting (a crash loop)
    oom = ", out of memory" if st.get("OOMKilled") else ""
    return f"{status} (exit code {st.get('ExitCode')}{oom})"


def find(facts: Facts) -> list[Drift]:
    """What on prod is not as the pipeline made it, per service (pure): a container whose
    inspected form differs from its ``cdlab.made`` label, a release of the pool whose
    container is missing or not running, a container running outside the pool; and, as
    ``unknown``, a container without the label, and what a running deploy may be changing."""
    found: list[Drift] = []
    nodes, missing = dict(facts.nodes), "no running replica on prod's swarm"
    for host, why in facts.unreached:  # its replicas may be anything: said, not guessed
        said = f"swarm node {host} did not answer: its replicas cannot be checked ({why})"
        found.append(Drift("", "", "", (said,), UNREACHED_FIX, unknown=True))
    for svc in facts.services:
        have: set[str] = set()
        for name, release, running, attrs in _looked_at(svc, nodes):
            have.add(release)
            if release not in svc.pool:
                what = "running outside the pool: started by hand?"
                fix = OUTSIDE_TASK_FIX if _is_task(attrs) else OUTSIDE_FIX
            elif not running:
                what, fix = f"not running: {_state(attrs)}", STOPPED_FIX
            else:
                found += _compared(svc.service, release, name, attrs)
                continue
            found.append(_finding(facts.deploying, svc.service, release, name, what, fix))
        for release in sorted(svc.pool - have):
            what = missing if facts.swarm else "no container on prod"
            found.append(_finding(facts.deploying, svc.service, release, "", what, MISSING_FIX))
    return found


def _finding(
    deploying: str, service: str, release: str, container: str, what: str, fix: str
) -> Drift:
    """Drift, or, while a deploy runs (it starts, pools and removes containers), unknown."""
    if deploying:
        busy = f"a deploy is running ({deploying}): it may be what changes this"
        return Drift(service, release, container, (what, busy), DEPLOYING_FIX, unknown=True)
    said = fix.format(service=service, release=release, container=container)
    return Drift(service, release, container, (what,), said)


def _compared(service: str, release: str, name: str, attrs: Mapping[str, Any]) -> list[Drift]:
    """A running container of the pool against its ``cdlab.made`` label."""
    raw = ((attrs.get("Config") or {}).get("Labels") or {}).get(MADE)
    try:
        recorded = json.loads(raw) if raw else None
    except ValueError:
        recorded = None
    if isinstance(recorded, dict) and _is_task(attrs):
        recorded = {k: v for k, v in recorded.items() if k not in NOT_ON_TASKS}
    if not isinstance(recorded, dict):
        why = (
            f"no {MADE} label that cdlab wrote: made before drift detection, or by hand; "
            "what it runs cannot be compared"
        )
        return [Drift(service, release, name, (why,), UNLABELLED_FIX, unknown=True)]
    lines = differences(recorded, seen(attrs, recorded.get("env", ())))
    if not lines:
        return []
    return [Drift(service, release, name, tuple(lines), CHANGED_FIX.format(service=service))]


def drifted(drifts: Iterable[Drift]) -> bool:
    """Whether any of ``drifts`` is drift (not only what cannot be checked)."""
    return any(not d.unknown for d in drifts)


def render(drifts: list[Drift], checked_containers: list[tuple[str, str, str]]) -> str:
    """``invoke drift``'s text: a block per finding with its fix, then how many containers run
    as the pipeline made them (pure)."""
    off = {(d.service, d.container) for d in drifts if d.container}
    fine = [(s, r) for s, r, name in checked_containers if (s, name) not in off]
    ok = f"{len(fine)} container(s) of {len(set(fine))} release(s) run as the pipeline made them"
    blocks = []
    for d in drifts:
        head = f"{d.service} {d.release}" if d.service else "prod's swarm"  # a node unread
        head += f" ({d.container})" if d.container else ""
        body = "".join(f"\n  {line}" for line in d.what)
        verdict = "cannot be checked" if d.unknown else "drift"
        blocks.append(f"{head}: {verdict}{body}\n  fix: {d.fix}")
    bad, unknown = sum(not d.unknown for d in drifts), sum(d.unknown for d in drifts)
    also = f", {unknown} cannot be checked" if unknown else ""
    last = f"drift: {bad} finding(s){also}; {ok}" if bad else f"no drift{also}: {ok}"
    return "\n\n".join([*blocks, last])


def as_json(drifts: list[Drift]) -> str:
    """``invoke drift --json``: a list of the findings as objects."""
    return json.dumps([asdict(d) for d in drifts], indent=2)


def facts(lab: Lab, services: Iterable[str]) -> Facts:
    """Per service, its pool (the routes) and its release containers, inspected; and whether
    a deploy is running (the deploy lock)."""
    from lab.release import swarm  # prod -> containers -> this module
    from lab.release.prod import read_routes

    is_swarm = lab.config.swarm_manager is not None
    hosts = swarm.engines_of(lab) if is_swarm else ["prod"]
    nodes = tuple(sorted(swarm.node_hosts(lab).items())) if is_swarm else ()
    found, unreached = [], []
    listed: dict[str, list[Any]] = {}
    for host in hosts:
        try:
            listed[host] = lab.engine(host, timeout=10).containers.list(
                all=True,  # not sparse: each one inspected
                ignore_removed=True,  # one removed meanwhile (a deploy's retire) is left out
                filters={"label": "cdlab.role=release"},
            )
        except Exception as exc:
            if not is_swarm:
                raise
            unreached.append((host, (str(exc).splitlines() or [repr(exc)])[0][:160]))
    for name in services:
        pool = {s.release for s in read_routes(lab, name).servers}  # an A/B one is one of them
        attrs = tuple(
            c.attrs
            for cs in listed.values()
            for c in cs
            if _labels(c.attrs).get("cdlab.service") == name
        )
        found.append(ServiceFacts(name, frozenset(pool), attrs))
    holder = lock.current(lab.etcd)
    return Facts(tuple(found), holder.what if holder else "", is_swarm, nodes, tuple(unreached))


def check(lab: Lab, services: Iterable[str]) -> tuple[list[Drift], list[tuple[str, str, str]]]:
    """What ``find`` finds on prod for ``services``, and what it checked (for ``render``)."""
    known = facts(lab, services)
    found = find(known)
    if drifted(found):  # the lab remembers it saw drift (a lesson's evidence) until a reset
        seen = {"findings": [asdict(d) for d in found if not d.unknown]}
        lab.etcd.put(SEEN, json.dumps(seen).encode())
    return found, checked(known)
