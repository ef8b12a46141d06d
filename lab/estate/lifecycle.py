"""Bring the lab up, stop it, destroy it, and report its status.

``up`` reads facts, plans, and applies stage by stage; each stage is recorded (``progress``) and
the run is written to ``.lab/runs/`` as JSON. Every stage is idempotent, so a failed ``up`` is
resumed by the next one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import requests

from lab import report
from lab.config import LABEL, Host, LabConfig
from lab.errors import ConfigError, EngineError, LabError, RegistryError, tail
from lab.estate import existing, hosts, images, network, swarm
from lab.estate.state import State
from lab.ports import engines
from lab.progress import Progress
from lab.proof.redact import redact_doc


@dataclass(frozen=True)
class HostStatus:
    name: str
    address: str
    role: str
    state: str  # docker's status of the host container, or "not created"
    engine: str  # engine version, "registry <http status>", or why it is unknown
    containers: int | None  # running containers on the host's engine
    swarm: str = "-"  # a node of prod's swarm: "manager ready", "worker down"...; else "-"
    # a swarm node's running release replicas, by service and release ("app-3f9c2e1a0b1c": 1)
    replicas: dict[str, int] | None = None


def up(
    config: LabConfig, progress: Progress, with_prod: bool = True, take_over: bool = False
) -> list[dict[str, Any]]:
    """Bring every host up with a ready engine or registry and the base image in the registry;
    then (``with_prod``) the stack on prod with the current commit live.

    A lab built by another checkout of cdlab that still exists is refused, unless ``take_over``:
    then its containers and volumes are removed first (its images are content-addressed and kept).
    """
    state = State(config)
    started = dt.datetime.now(dt.UTC)
    try:
        _up(config, state, progress, with_prod, take_over)
    finally:
        _record(state, "up", started, progress)
    return [asdict(s) for s in progress.stages]


def _up(
    config: LabConfig, state: State, progress: Progress, with_prod: bool, take_over: bool
) -> None:
    with progress.stage("workstation Docker engine") as st:
        local = engines.local()
        st.unchanged(f"Docker {local.version()['Version']}")
    with progress.stage("lab owner") as st:
        taken = _take_over(config, local, take_over)
        st.changed(taken) if taken else st.unchanged(str(config.root))
    with progress.stage("lab state: CA, certificates, registry password") as st:
        changed = state.ensure()
        st.changed(summarize_state(changed)) if changed else st.unchanged(str(state.dir))
    bundles_changed = {c.split(":")[0] for c in changed if ":" in c}
    with progress.stage(f"network {config.network.name} and volumes") as st:
        made = network.ensure(config, local)
        st.changed(", ".join(made)) if made else st.unchanged(config.network.subnet)
    if any(h.existing for h in config.hosts):
        # before anything is built or created: a machine cdlab cannot start must answer first
        with progress.stage("existing machines' engines answer (mutual TLS)") as st:
            gone = _remove_replaced(config, local)  # else the old container would answer
            said = ", ".join(existing.check(state, engines.wait_ready))
            st.changed(f"{said}; {gone}") if gone else st.unchanged(said)
    imgs = images.Images(config, local, state.logs, state.dir / "cache")
    with progress.stage("base image (mmdebstrap + docker import)") as st:
        base, built = imgs.ensure_base(images.read_base_inputs())
        st.changed(base.ref) if built else st.unchanged(base.ref)
    with progress.stage("host image") as st:
        host_img, built = imgs.ensure_host(base)
        st.changed(host_img.ref) if built else st.unchanged(host_img.ref)
    (state.dir / "host-image").write_text(host_img.ref + "\n")
    (state.dir / "base-image").write_text(base.ref + "\n")
    state.write_runner_bundle()  # read by cd's git hook at each push, not at boot
    with progress.stage("hosts (vagrant, docker provider)") as st:
        did = _apply_hosts(config, local, host_img.ref, bundles_changed)
        st.changed(did) if did else st.unchanged(", ".join(h.name for h in config.hosts))
    imgs.prune_older(host_img)  # the hosts no longer use an older host image
    with progress.stage("engines (mutual TLS) and registry (TLS + htpasswd) answer") as st:
        versions = [
            f"{h.name} {_ready(state, local, h)}" for h in config.engine_hosts if not h.existing
        ]
        try:
            wait_registry(state)
        except RegistryError as exc:
            log = host_log(local, config, config.registry)
            raise RegistryError(
                exc.action,
                exc.url,
                f"{exc.detail}\nlast lines of the registry host's log:\n{tail(log)}",
            ) from exc
        st.unchanged(", ".join(versions))
    if config.swarm_manager is not None:
        nodes = 1 + len(config.swarm_workers)
        title = f"prod's swarm ({nodes} nodes)"
        with progress.stage(title, key="swarm") as st, contextlib.ExitStack() as es:

            def connect(h: Host) -> Any:
                return es.enter_context(engines.connect(state, h, timeout=60))

            joined = swarm.converge(config, connect, say=progress.say)
            every = ", ".join(h.name for h in (config.swarm_manager, *config.swarm_workers))
            st.changed("; ".join(joined)) if joined else st.unchanged(f"{every} ready")
    with progress.stage("base image in the lab registry") as st:
        pushed = push_base(state, base)
        st.changed(pushed) if pushed else st.unchanged(registry_ref(config, base))
    if {"dev", "cd"} <= {h.name for h in config.hosts}:
        from lab.release import devloop

        with progress.stage("dev clone (push to cd deploys)") as st:
            did, head = devloop.ensure_clone(config, local)
            where = f"{devloop.CLONE} at {head}, remote cd = {devloop.remote_url(config)}"
            st.changed(f"{did} {where}") if did else st.unchanged(where)
    if any(h.name == "prod" for h in config.hosts) and with_prod:
        # imported here: the lab's own layer stays importable without the stack's
        from lab.release import pipeline
        from lab.stack import converge, services

        # the stack as the checkout's commit says (what it recreates is said first), and every
        # service's frontend in etcd: the proxy runs one HAProxy per service from those
        converge.converge(state, progress, every_frontend=True)
        live = pipeline.deploy_current(state, progress)
        root = config.root
        for name, rel in live.items():
            url = pipeline.public_url(services.load(root, name))
            progress.say(f"prod serves {name} {rel} at {url}")
        with progress.stage("graphite dashboard") as st:
            from lab.ports.metrics import Graphite
            from lab.stack import dashboard

            names, graphite = services.names(root), Graphite()
            wanted = dashboard.state(names)
            try:
                url = graphite.dashboard_url(dashboard.NAME)
                if graphite.dashboard(dashboard.NAME) == json.loads(json.dumps(wanted)):
                    st.unchanged(f"{url} ({len(names)} services)")
                else:
                    url = graphite.save_dashboard(dashboard.NAME, wanted)
                    st.changed(f"{url} ({len(names)} services)")
            except requests.RequestException as exc:  # the lab works without it
                url = pipeline.graphite_url()
                st.unchanged(f"not saved ({type(exc).__name__}: {exc}); graphite at {url}")
        progress.say(f"graphite: {url} (requests, errors and p95 per release)")


def _remove_replaced(config: LabConfig, local: Any) -> str:
    """Remove the containers this checkout created for hosts that are existing machines now
    (what was done, or ``""``); another checkout's are left to ``hosts.plan`` to refuse."""
    facts = hosts.facts(config, local)
    gone = []
    for h in (h for h in config.hosts if h.existing):
        f = facts.get(h.name)
        if f is not None and f.owner in ("", str(config.root)):
            local.containers.get(config.container_name(h)).remove(force=True)
            gone.append(f"{h.name}: removed the container made for it (an existing machine now)")
    return "; ".join(gone)


def _apply_hosts(config: LabConfig, local: Any, image_ref: str, restart: set[str]) -> str:
    facts = hosts.facts(config, local)
    spec = hosts.spec_hash(config, image_ref)
    v = hosts.Vagrant(config, image_ref, spec)
    image_id = local.images.get(image_ref).id
    actions = hosts.plan(config, facts, image_id, v.known(), hosts.owner_paths_exist(facts), spec)
    network.check_ports(config, facts, {a.host for a in actions if a.action != "keep"})
    todo = [a for a in actions if a.action not in ("keep", "existing")]
    for a in todo:
        if a.action in ("replace-orphan", "remove"):
            local.containers.get(config.container_name(config.host(a.host))).remove(force=True)
        elif a.action == "recreate":
            v.destroy(a.host)
    if any(a.action != "remove" for a in todo):
        v.up()
    restarted = [h for h in sorted(restart) if h not in {a.host for a in todo}]
    for name in restarted:  # new certificates or config in the bundle: reboot to load them
        if not config.host(name).existing:  # an existing machine's bundle is installed by hand
            local.containers.get(config.container_name(config.host(name))).restart(timeout=20)
    done = [f"{a.host}: {a.action} ({a.reason})" for a in todo]
    done += [
        f"{h}: restart (bundle changed)"
        if not config.host(h).existing
        else f"{h}: its bundle changed; install it there again ('invoke lab.bundle --host {h}')"
        for h in restarted
    ]
    return "; ".join(done)


def _ready(state: State, local: Any, host: Host) -> str:
    """Wait for ``host``'s engine; on failure, the host container's log is the evidence."""
    try:
        return engines.wait_ready(state, host)
    except EngineError as exc:
        log = host_log(local, state.config, host)
        raise EngineError(
            exc.host,
            exc.url,
            exc.last_error,
            "fix the cause shown above and run 'invoke lab.up' again",
            log,
        ) from exc


def summarize_state(changed: list[str]) -> str:
    """One short line for what ``State.ensure`` changed (pure)."""
    bundles = sorted({c.split(":")[0] for c in changed if ":" in c})
    certs = [c for c in changed if ":" not in c and c not in ("ca", "registry password")]
    parts = ["new lab CA"] if "ca" in changed else []
    parts += [f"{len(certs)} certificate(s) issued"] if certs else []
    parts += ["registry password"] if "registry password" in changed else []
    parts += [f"bundles for {', '.join(bundles)}"] if bundles else []
    return "; ".join(parts)


def host_log(local: Any, config: LabConfig, host: Host, lines: int = 15) -> str:
    """The last lines of a host container's log (best effort: evidence for an error)."""
    name = config.container_name(host)
    try:
        return str(local.containers.get(name).logs(tail=lines).decode(errors="replace"))
    except Exception as exc:  # the evidence is best effort; the caller's error stands
        return f"(no log from container {name}: {exc})"


def wait_registry(state: State, timeout: float = 60.0) -> None:
    """Poll until the registry answers 401 anonymously and 200 with the lab's credentials."""
    deadline, last = time.monotonic() + timeout, "no attempt made"
    client = state.registry_client()
    while time.monotonic() < deadline:
        try:
            anon, auth = client.ping(authenticated=False), client.ping()
            if (anon, auth) == (401, 200):
                return
            last = f"/v2/ answered {anon} without and {auth} with credentials (want 401, 200)"
        except RegistryError as exc:
            last = str(exc).splitlines()[0]
        time.sleep(0.5)
    raise RegistryError(
        f"reach the registry within {timeout:.0f} s",
        f"https://{state.config.registry_addr}/v2/",
        last,
    )


def registry_ref(config: LabConfig, image: images.ImageRef) -> str:
    return f"{config.registry_addr}/{image.repository}:{image.tag}"


def push_base(state: State, base: images.ImageRef) -> str:
    """Push the base image to the registry through the builder's (cd's) engine, as in production."""
    config = state.config
    if base.tag in state.registry_client().tags(base.repository):
        return ""
    import docker.errors

    local = engines.local()
    target = registry_ref(config, base)
    with engines.connect(state, config.builder, timeout=600) as cd:
        try:
            cd.images.load(local.images.get(base.ref).save(chunk_size=1 << 20, named=base.ref))
            cd.images.get(base.ref).tag(target)
            for line in cd.images.push(
                target, auth_config=state.credentials().auth_config(), stream=True, decode=True
            ):
                if "error" in line:
                    raise RegistryError(
                        f"push '{target}' from {config.builder.name}",
                        f"https://{config.registry_addr}",
                        line["error"],
                    )
            cd.images.remove(base.ref)
        except docker.errors.APIError as exc:
            raise RegistryError(
                f"copy '{base.ref}' to {config.builder.name} and push it as '{target}'",
                f"https://{config.registry_addr}",
                str(exc),
            ) from exc
    return target


def down(config: LabConfig, progress: Progress) -> None:
    with progress.stage("stop the hosts (everything is kept)") as st:
        hosts.Vagrant(config).halt()
        kept = [h.name for h in config.hosts if h.existing]
        said = ", ".join(h.name for h in config.created_hosts)
        st.changed(said + (f" (existing machines run on: {', '.join(kept)})" if kept else ""))


def destroy(config: LabConfig, progress: Progress) -> dict[str, list[str]]:
    """Remove every container, volume, network and image carrying this lab's label (timed and
    recorded in ``.lab/runs/`` like ``up``); an image another lab's hosts run is kept (labs
    share the images built from the same inputs)."""
    import docker.errors

    started = dt.datetime.now(dt.UTC)
    local = engines.local()
    flt = {"label": f"{LABEL}={config.name}"}
    removed: dict[str, list[str]] = {}
    if any(h.existing for h in config.hosts):
        with progress.stage("take back what cdlab put on the existing machines") as st:
            removed["existing"] = _release_existing(State(config))
            st.changed("; ".join(removed["existing"]))
    with progress.stage("remove the hosts' containers") as st:
        removed["containers"] = _remove_hosts(config, local)
        st.changed(", ".join(removed["containers"]) or "none")
    with progress.stage("remove volumes, network and images") as st:
        removed["volumes"] = _remove_volumes(local, flt)
        removed["networks"], kept = [], []
        for net in local.networks.list(filters=flt):
            net.reload()  # a listed network does not say its containers; inspected, it does
            users = [c["Name"] for c in (net.attrs.get("Containers") or {}).values()]
            if users:  # machines of someone else's on the lab's network: never cut them off
                kept.append(f"network {net.name} (still used by {', '.join(sorted(users))})")
                continue
            net.remove()
            removed["networks"].append(net.name)
        removed["images"] = []
        for img in sorted(
            local.images.list(filters=flt), key=lambda i: i.labels.get("cdlab.image") == "base"
        ):
            try:
                local.images.remove(img.id, force=True)
            except docker.errors.APIError:  # another lab's hosts run it (labs share images)
                continue
            removed["images"] += img.tags or [img.short_id]
        said = "; ".join(f"{len(v)} {k}" for k, v in removed.items() if k != "existing")
        st.changed(said + (f"; kept {', '.join(kept)}: remove it once they leave" if kept else ""))
    _record(State(config), "destroy", started, progress)
    return removed


def _release_existing(state: State) -> list[str]:
    """Each existing machine out of the swarm and rid of cdlab's containers, networks and
    volumes (``existing.release``); the machine and its engine keep running. Workers first,
    prod's manager last. One that does not answer is said, not raised: destroy goes on."""
    from lab.stack.project import PROJECT  # the stack's layer, only when there is one to undo

    said = []
    manager = state.config.swarm_manager.address if state.config.swarm_manager else ""
    order = sorted((h for h in state.config.hosts if h.existing), key=lambda h: h.name == "prod")
    for h in order:
        try:
            with engines.connect(state, h, timeout=60) as c:
                done = existing.release(c, PROJECT, manager)
            said.append(f"{h.name}: {', '.join(done) or 'nothing of cdlab'} (the machine runs on)")
        except Exception as exc:  # best effort: the lab's own hosts are removed regardless
            first = str(exc).splitlines()[0][:120] if str(exc) else ""
            how = "not reached" if isinstance(exc, EngineError) else "stopped halfway"
            said.append(f"{h.name}: {how} ({type(exc).__name__}: {first}); left as it is")
    return said


def _remove_hosts(config: LabConfig, local: Any) -> list[str]:
    """Remove the lab's host containers (by label) and Vagrant's bookkeeping of them here.
    A host container carries ``cdlab.host`` too: a container that only inherits the lab's
    label from a lab image (someone's machine started from the host image) is not the lab's."""
    names = []
    mine = {"label": [f"{LABEL}={config.name}", "cdlab.host"]}
    for c in local.containers.list(all=True, filters=mine):
        c.remove(force=True, v=False)
        names.append(c.name)
    with contextlib.suppress(LabError):  # Vagrant's bookkeeping: the containers are gone
        hosts.Vagrant(config).destroy()
    return names


def _remove_volumes(local: Any, flt: dict[str, str]) -> list[str]:
    names = []
    for vol in local.volumes.list(filters=flt):
        vol.remove(force=True)
        names.append(vol.name)
    return names


def _take_over(config: LabConfig, local: Any, allowed: bool) -> str:
    """Clear a lab that another checkout built (hosts, engines' and registry's volumes), so this
    checkout builds its own from a clean slate: its CA, registry and releases.

    Returns what was done, or ``""``; see ``hosts.foreign_owners`` for when it refuses.
    """
    facts = hosts.facts(config, local)
    owners = hosts.foreign_owners(config, facts, hosts.owner_paths_exist(facts), allowed)
    if not owners:
        return ""
    gone = _remove_hosts(config, local)
    vols = _remove_volumes(local, {"label": f"{LABEL}={config.name}"})
    whose = ", ".join(f"{o} ({'exists' if alive else 'removed'})" for o, alive in owners.items())
    return f"took over the lab of {whose}: removed {len(gone)} host(s), {len(vols)} volume(s)"


def status(config: LabConfig) -> list[HostStatus]:
    state = State(config)
    local = engines.local()
    facts = hosts.facts(config, local)
    rows = []
    cluster: dict[str, str] = {}
    unknown = "not a node"  # what a swarm host the manager does not list shows
    manager = config.swarm_manager
    if manager is not None:
        running = manager.existing or bool(getattr(facts.get(manager.name), "running", False))
        listed: list[swarm.Member] | str = f"{manager.name} is not running"
        if running:
            with contextlib.ExitStack() as es:
                listed = swarm.members(
                    config, lambda h: es.enter_context(engines.connect(state, h, timeout=3))
                )
        if isinstance(listed, str):
            unknown = f"unknown: {listed}"
        else:
            cluster = {m.address: f"{m.role} {m.state}" for m in listed}
    for h in config.hosts:
        f = facts.get(h.name) or hosts.HostFacts(h.name, exists=False)
        if h.existing and not f.exists:
            f = hosts.HostFacts(h.name, exists=True, running=True, status="existing")
        engine, count, replicas = "-", None, None
        if f.running and h.has_engine:
            try:
                with engines.connect(state, h, timeout=3) as c:
                    engine = str(c.version()["Version"])
                    running = c.containers.list()
                    count = len(running)
                    if h.swarm:
                        replicas = _replicas(running)
            except Exception as exc:  # shown in the table, not raised: status must always print
                engine = f"no answer ({type(exc).__name__})"
        elif f.running:
            try:
                engine = f"registry HTTP {state.registry_client().ping()}"
            except (RegistryError, OSError) as exc:
                engine = f"registry: {str(exc).splitlines()[0][:40]}"
        node = cluster.get(h.address, unknown) if h.swarm else "-"
        rows.append(HostStatus(h.name, h.address, h.role, f.status, engine, count, node, replicas))
    return rows


def _replicas(running: list[Any]) -> dict[str, int]:
    """Running release replicas by Swarm service name (``app-<release>``)."""
    found: dict[str, int] = {}
    for ctr in running:
        name = ctr.labels.get("com.docker.swarm.service.name")
        if name and ctr.labels.get("cdlab.role") == "release":
            found[name] = found.get(name, 0) + 1
    return found


def render_status(rows: list[HostStatus]) -> str:
    """A fixed-width table of ``rows`` (pure); a SWARM column when prod is a cluster."""
    cluster = any(r.swarm != "-" for r in rows)
    return report.table(
        (
            "HOST",
            "ADDRESS",
            "ROLE",
            "STATE",
            "ENGINE",
            "CONTAINERS",
            *(("SWARM", "REPLICAS") * cluster),
        ),
        [
            (
                r.name,
                r.address,
                r.role,
                r.state,
                r.engine,
                "-" if r.containers is None else str(r.containers),
                *((r.swarm, _said_replicas(r.replicas)) * cluster),
            )
            for r in rows
        ],
    )


def _record(state: State, action: str, started: dt.datetime, progress: Progress) -> None:
    state.runs.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%S")
    record = {
        "action": action,
        "started": started.isoformat(),
        "seconds": round(progress.total_seconds, 2),
        "stages": [asdict(s) for s in progress.stages],
    }
    record = redact_doc(record, state.secret_values())  # a stage's detail may quote output
    (state.runs / f"{action}-{stamp}.json").write_text(json.dumps(record, indent=2) + "\n")


def shell_argv(config: LabConfig, host: str, folder: str = "") -> list[str]:
    """The command that opens an interactive shell on ``host`` (its container), in ``folder``
    when given."""
    h = config.host(host)
    if h.existing:
        raise ConfigError(
            "host",
            host,
            "a host cdlab created: an existing machine's shell is reached your own way "
            f"(ssh {h.address}); its engine with 'invoke lab.status'",
        )
    where = ["-w", folder] if folder else []
    return ["docker", "exec", "-it", "-e", "TERM", *where, config.container_name(h), "bash", "-l"]


@dataclass(frozen=True)
class LabRow:
    """One lab on this machine, as its host containers say (``lab.list``)."""

    lab: str  # its name: cdlab (the default), cdlab-alice...
    hosts: str  # "4/4 running"
    checkout: str  # the checkout it was brought up from (the cdlab.root label)
    ports: str  # its workstation ports: "127.0.0.1:8100-8109, 127.0.0.1:8182"


def labs(containers: list[dict[str, Any]]) -> list[LabRow]:
    """The labs that ``containers`` (the local engine's, each ``docker inspect``ed) belong to,
    by their ``cdlab.lab`` label, in name order (pure)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for c in containers:
        name = (c.get("Config", {}).get("Labels") or {}).get(LABEL)
        if name and (c["Config"]["Labels"].get("cdlab.host")):
            found.setdefault(name, []).append(c)
    rows = []
    for name in sorted(found):
        members = found[name]
        running = sum(c.get("State", {}).get("Running", False) for c in members)
        ports = sorted(
            {
                int(b["HostPort"])
                for c in members
                for bound in (c.get("HostConfig", {}).get("PortBindings") or {}).values()
                for b in bound or ()
            }
        )
        roots = {c["Config"]["Labels"].get("cdlab.root", "?") for c in members}
        rows.append(
            LabRow(
                name, f"{running}/{len(members)} running", ", ".join(sorted(roots)), _spans(ports)
            )
        )
    return rows


def _spans(ports: list[int]) -> str:
    """``[8100, 8101, 8102, 8182]`` as ``127.0.0.1:8100-8102, 127.0.0.1:8182`` (pure)."""
    spans: list[list[int]] = []
    for p in ports:
        if spans and p == spans[-1][1] + 1:
            spans[-1][1] = p
        else:
            spans.append([p, p])
    return ", ".join(f"127.0.0.1:{a}" + (f"-{b}" if b != a else "") for a, b in spans) or "-"


def list_labs() -> list[LabRow]:
    local = engines.local()
    listed = local.containers.list(all=True, filters={"label": LABEL})
    return labs([c.attrs for c in listed])


def render_labs(rows: list[LabRow]) -> str:
    if not rows:
        return "no lab on this machine: `invoke lab.up` (or CDLAB_LAB=NAME invoke lab.up)"
    return report.table(
        ("LAB", "HOSTS", "PORTS", "CHECKOUT"),
        [(r.lab, r.hosts, r.ports, r.checkout) for r in rows],
    )


def describe(config: LabConfig) -> str:
    """One line on which lab this is and where it answers (``lab.status``'s first line)."""
    app, graphite = config.published(8000), config.published(8082)
    at = config.public_address  # an existing prod answers at its own address
    return (
        f"lab {config.name} ({config.network.subnet}): app http://{at}:{app}, "
        f"Graphite http://{at}:{graphite}, state in {config.state_dir}"
    )


def _said_replicas(replicas: dict[str, int] | None) -> str:
    if replicas is None:
        return "-"
    return str(sum(replicas.values()))
