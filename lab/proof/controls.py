"""Negative controls: the ways of switching releases that cdlab exists to replace. The proving
suite runs them under the same load and asserts that they *do* lose requests, which shows the
load is real and the oracle sees downtime.

- ``naive``: stop the container, then start the new one on the same port (published on
  127.0.0.1:``CONTROL_PORT``, no proxy in front), as the simplest deploy scripts do.
- ``misbehaving`` (a positive control of the load oracle, not a way of switching): a release
  on that port told by the demo app's test hook (CDLAB_MISBEHAVE) to answer wrongly.
- ``reload``: a second HAProxy in front of the release (publishing ``CONTROL_PORT``), switched
  by rewriting its configuration and reloading it, at its best (master-worker, listening
  sockets handed over to the new worker), as configuration-driven setups (confd + a reload)
  do.
- ``by_restart``: the new route applied by restarting the proxy with it (what a
  ``docker compose up -d`` does when a proxy's configuration changes, and what a
  configuration-reload switch amounts to when the proxy cannot hand its sockets over).
- ``swarm``: Docker Swarm's rolling update with a healthcheck, on a one-node swarm on prod.
  This kernel has no IP virtual server module, so Swarm's routing mesh and service VIPs refuse
  connections: the service publishes ``CONTROL_PORT`` in **host mode** (endpoint mode dnsrr),
  which forces ``stop-first`` updates (one host port, one task at a time).
- ``swarm-start-first``: the same service at its best: no published port, endpoint mode dnsrr,
  ``start-first`` updates, behind an HAProxy (publishing ``CONTROL_PORT``) that finds the
  service's tasks through Docker's DNS (``tasks.<service>``) every second, as a Swarm user
  without the routing mesh would run it.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from lab.estate.state import State
from lab.ports import engines
from lab.progress import Progress
from lab.release import api as release
from lab.release import routes
from lab.stack import project as stack
from lab.stack import services


def naive(state: State, candidate: release.Candidate, progress: Progress) -> float:
    """Stop the container that serves ``CONTROL_PORT`` (published on 127.0.0.1, no proxy in
    front), then start ``candidate`` on the same port, as the simplest deploy scripts do;
    returns the seconds until it answered again. The first call only starts one."""
    del progress  # nothing staged: that is the point
    return _on_control_port(state, candidate, {}, "naive-control")


def misbehaving(state: State, candidate: release.Candidate, misbehave: str) -> float:
    """``candidate`` alone on ``CONTROL_PORT`` as ``naive`` runs it, told by the demo app's
    test hook to answer wrongly on purpose (``CDLAB_MISBEHAVE=misbehave``, e.g. "conflict=5",
    "truncate=1", "release=other"; "" for none: services/app/app/misbehave.py), in place of
    whatever served that port; returns the seconds until it answered. The load oracle's
    positive controls run it; ``remove_naive`` removes it."""
    env = {"CDLAB_MISBEHAVE": misbehave} if misbehave else {}
    return _on_control_port(state, candidate, env, "misbehaving-control")


def _on_control_port(
    state: State, candidate: release.Candidate, extra: dict[str, str], role: str
) -> float:
    import docker.errors

    name = f"naive-{candidate.service.name}"
    env = {**release.release_environment(state, candidate), **extra}
    with engines.connect(state, state.config.host("prod"), timeout=300) as client:
        stack.pull(state, "prod", [candidate.image])
        started = time.monotonic()
        try:
            old = client.containers.get(name)
            old.stop(timeout=5)
            old.remove(force=True)
        except docker.errors.NotFound:
            pass
        container = client.containers.run(
            candidate.image,
            name=name,
            detach=True,
            environment=env,
            network=stack.NETWORK,
            ports={f"{candidate.service.port}/tcp": services.CONTROL_PORT},
            labels={"cdlab.role": role},
            **release.hardening(candidate.service.limits),  # as a release runs: a fair control
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if container.exec_run(["sh", "-c", candidate.service.probe]).exit_code == 0:
                return time.monotonic() - started
            time.sleep(0.2)
    raise release.ReleaseError(f"the {role.replace('-', ' ')}'s {candidate.release} never answered")


def remove_naive(state: State, service: str) -> None:
    import docker.errors

    with (
        engines.connect(state, state.config.host("prod"), timeout=60) as client,
        contextlib.suppress(docker.errors.NotFound),
    ):
        client.containers.get(f"naive-{service}").remove(force=True)


RELOAD_CONTAINER = "reload-{service}"
WRITE_CFG = 'printf "%s" "$CFG" > /tmp/haproxy.cfg'


def reload_config(service: str, host: str, port: int, health: str) -> str:
    """A second HAProxy's configuration with one static server, ``host`` (pure). Reloaded at
    its best: master-worker, ``expose-fd listeners`` (the new worker takes the listening
    sockets over, none is closed), the same timeouts and retries as cdlab's proxy."""
    return _front_config(service, port, health, f"server live {host}:{port} check inter 1s")


def swarm_front_config(service: str, tasks: str, port: int, health: str) -> str:
    """The HAProxy in front of a dnsrr Swarm service (pure): up to 4 servers, the addresses
    Docker's DNS gives for ``tasks`` (``tasks.<service>``), asked every second (a task enters
    that answer once healthy and leaves it when Swarm stops it); the same timeouts, retries
    and health check as cdlab's proxy."""
    return _front_config(
        service,
        port,
        health,
        f"server-template task 1-4 {tasks}:{port} check inter 1s resolvers docker init-addr none",
        resolvers="""\
resolvers docker
    nameserver dns 127.0.0.11:53
    timeout resolve 1s
    timeout retry 1s
    hold valid 1s
    hold obsolete 0s
""",
    )


def _front_config(service: str, port: int, health: str, servers: str, resolvers: str = "") -> str:
    return f"""\
global
    master-worker
    stats socket /tmp/admin.sock mode 600 level admin expose-fd listeners
    hard-stop-after 30s
{resolvers}defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 30s
    timeout http-keep-alive 60s
    option redispatch
    retries 3
    retry-on conn-failure empty-response
frontend {service}
    bind :{port}
    default_backend live
backend live
    option httpchk GET {health}
    http-check expect status 200
    {servers}
"""


def _run_haproxy(client: Any, name: str, cfg: str, network: str, port: int, role: str) -> None:
    """A control's own HAProxy (the image of cdlab's proxy, master-worker, configuration
    ``cfg``) on ``network``, its frontend ``port`` published on ``CONTROL_PORT``; on the stack's
    control network, it joins the apps network too (the releases it sends to are there), before
    it starts: HAProxy resolves its servers' names once, as it starts (joined after, it lost
    that race on a swarm's overlay: "could not resolve address", and exited)."""
    container = client.containers.create(
        client.containers.get(f"{stack.PROJECT}_proxy_1").image.id,
        ["sh", "-c", f"{WRITE_CFG} && exec haproxy -W -db -f /tmp/haproxy.cfg"],
        name=name,
        environment={"CFG": cfg},
        network=network,
        ports={f"{port}/tcp": services.CONTROL_PORT},
        labels={"cdlab.role": role},
    )
    if network == stack.NETWORK:
        client.networks.get(stack.APPS_NETWORK).connect(container)
    container.start()


def reload(state: State, candidate: release.Candidate, progress: Progress) -> float:
    """Switch to ``candidate`` the way configuration-driven proxies do: start it beside the
    live release, rewrite a second HAProxy's configuration (its one server: the candidate) and
    reload it (SIGUSR2 to the master: a new worker, the old one finishing its requests). That
    HAProxy publishes ``CONTROL_PORT``. Returns the seconds until every answer came from
    ``candidate``. The first call only starts that HAProxy in front of the live release."""
    import docker.errors

    del progress
    svc = candidate.service
    cfg = reload_config(svc.name, candidate.host, svc.port, svc.health)
    name = RELOAD_CONTAINER.format(service=svc.name)
    url = services.control_url()
    with engines.connect(state, state.config.host("prod"), timeout=300) as client:
        if not release.release_containers(client, svc.name, candidate.release, all=False):
            release.start_beside(state, candidate)
        try:
            proxy = client.containers.get(name)
        except docker.errors.NotFound:  # the first call: in front of that release
            _run_haproxy(client, name, cfg, stack.NETWORK, svc.port, "reload-control")
            return release.verify_through_proxy(url, candidate.release, timeout=30)
        started = time.monotonic()
        out = proxy.exec_run(
            ["sh", "-c", f"{WRITE_CFG} && kill -USR2 1"],  # pid 1: haproxy's master
            environment={"CFG": cfg},
        )
        if out.exit_code != 0:
            raise release.ReleaseError(f"the reload control's reload failed: {out.output!r}")
        seconds = release.verify_through_proxy(url, candidate.release, since=started, timeout=30)
    # cdlab's own routes follow (its pool decides which releases stay), then the releases out
    # of the pool go, as after cdlab's switch (each holds database connections)
    switched = routes.switch_to(release.current_routes(state, svc.name), candidate.release)
    release.write_routes(state, switched)
    release.retire(state, svc.name, {s.release for s in switched.servers})
    return seconds


def remove_reload(state: State, service: str) -> None:
    import docker.errors

    with (
        engines.connect(state, state.config.host("prod"), timeout=60) as client,
        contextlib.suppress(docker.errors.NotFound),
    ):
        client.containers.get(RELOAD_CONTAINER.format(service=service)).remove(force=True)


def by_restart(state: State, service: str, target: str) -> float:
    """Route all traffic to ``target`` (already in the pool) by restarting the proxy with the
    new routes; returns the seconds until the proxy answered again."""
    current = release.current_routes(state, service)
    switched = routes.switch_to(current, target)
    with engines.connect(state, state.config.host("prod"), timeout=120) as client:
        proxy = client.containers.get(f"{stack.PROJECT}_proxy_1")
        release.write_routes(state, switched)
        started = time.monotonic()
        proxy.restart(timeout=1)
    stack.wait_healthy(state, timeout=60)
    return time.monotonic() - started


SWARM_SERVICE = "swarm-{service}"
SWARM_FRONT = "swarm-front-{service}"
# an overlay (attachable: the database and the front HAProxy join it): services cannot join the
# stack's network, and only an overlay has Docker's DNS records of a service's tasks
SWARM_NETWORK = "bench-swarm"


def swarm(state: State, candidate: release.Candidate, progress: Progress) -> float:
    """Roll ``candidate`` out as Swarm does (``docker service update``, stop-first, healthcheck,
    automatic rollback on failure) on ``CONTROL_PORT`` in host mode; returns the seconds until
    the update converged. The first call makes prod a one-node swarm and creates the service."""
    del progress
    return _swarm_update(state, candidate, start_first=False)


def swarm_start_first(state: State, candidate: release.Candidate, progress: Progress) -> float:
    """Roll ``candidate`` out with Swarm's start-first update (the new task healthy before the
    old one stops) behind an HAProxy that follows ``tasks.<service>`` in Docker's DNS; returns
    the seconds until every answer through that HAProxy came from ``candidate``. The first call
    also starts that HAProxy."""
    import docker.errors

    del progress
    svc = candidate.service
    started = time.monotonic()
    _swarm_update(state, candidate, start_first=True)
    name = SWARM_FRONT.format(service=svc.name)
    with engines.connect(state, state.config.host("prod"), timeout=120) as client:
        try:
            client.containers.get(name)
        except docker.errors.NotFound:
            tasks = f"tasks.{SWARM_SERVICE.format(service=svc.name)}"
            cfg = swarm_front_config(svc.name, tasks, svc.port, svc.health)
            _run_haproxy(client, name, cfg, SWARM_NETWORK, svc.port, "swarm-control")
    url = services.control_url()
    return release.verify_through_proxy(url, candidate.release, since=started, timeout=120)


def _swarm_update(state: State, candidate: release.Candidate, start_first: bool) -> float:
    import docker.types

    name = SWARM_SERVICE.format(service=candidate.service.name)
    env = release.release_environment(state, candidate)
    ports = {} if start_first else {services.CONTROL_PORT: (candidate.service.port, "tcp", "host")}
    spec = {
        "image": candidate.image,
        "name": name,
        "env": [f"{k}={v}" for k, v in env.items()],
        "networks": [SWARM_NETWORK],
        "endpoint_spec": docker.types.EndpointSpec(mode="dnsrr", ports=ports),
        "healthcheck": docker.types.Healthcheck(
            test=["CMD-SHELL", candidate.service.probe],
            interval=1_000_000_000,
            timeout=2_000_000_000,
            retries=2,
            start_period=1_000_000_000,
        ),
        "update_config": docker.types.UpdateConfig(
            parallelism=1,
            order="start-first" if start_first else "stop-first",
            failure_action="rollback",
            monitor=2_000_000_000,
        ),
        "labels": {"cdlab.role": "swarm-control"},
        # on prod, where CONTROL_PORT is published and the image pulled (prod a swarm of
        # several nodes: Swarm would place it on any of them)
        "constraints": ["node.role == manager"],
    }
    with engines.connect(state, state.config.host("prod"), timeout=300) as client:
        _ensure_swarm(state, client)
        stack.pull(state, "prod", [candidate.image])
        started = time.monotonic()
        found = client.services.list(filters={"name": name})
        if found:
            found[0].update(**spec)
        else:
            client.services.create(**spec)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if _converged(client, name, candidate.image):
                return time.monotonic() - started
            time.sleep(0.2)
    raise release.ReleaseError(f"Swarm's update of {name} to {candidate.release} never converged")


def _ensure_swarm(state: State, client: Any) -> None:
    import docker.errors

    info = client.info()
    if info.get("Swarm", {}).get("LocalNodeState") != "active":
        address = state.config.host("prod").address
        client.swarm.init(advertise_addr=address, listen_addr=f"{address}:2377")
    if not client.networks.list(names=[SWARM_NETWORK]):
        client.networks.create(SWARM_NETWORK, driver="overlay", attachable=True)
    db = client.containers.get(f"{stack.PROJECT}_db_1")
    if SWARM_NETWORK not in db.attrs["NetworkSettings"]["Networks"]:
        with contextlib.suppress(docker.errors.APIError):
            client.networks.get(SWARM_NETWORK).connect(db, aliases=["db"])


def _converged(client: Any, name: str, image: str) -> bool:
    """The service's update is done and its one task runs ``image``, healthy."""
    service = client.services.get(name)
    state = (service.attrs.get("UpdateStatus") or {}).get("State", "completed")
    if state not in ("completed", ""):
        return False
    running = [
        t for t in service.tasks({"desired-state": "running"}) if t["Status"]["State"] == "running"
    ]
    return len(running) == 1 and running[0]["Spec"]["ContainerSpec"]["Image"].startswith(image)


def remove_swarm(state: State, service: str) -> None:
    """The service gone and the database off the swarm network. prod stays a one-node swarm
    manager: on leaving a swarm, Docker 20.10 also deletes the endpoints of local networks
    ("Failed to remove swarm network cdlab on cluster leave"), which took every container of
    prod's stack off its network when we tried it."""
    import docker.errors

    with engines.connect(state, state.config.host("prod"), timeout=120) as client:
        if client.info().get("Swarm", {}).get("LocalNodeState") != "active":
            return
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(SWARM_FRONT.format(service=service)).remove(force=True)
        name = SWARM_SERVICE.format(service=service)
        for found in client.services.list(filters={"name": name}):
            found.remove()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and client.containers.list(  # its tasks' only: on a
            all=True,  # swarm prod, the releases are tasks too
            filters={"label": f"com.docker.swarm.service.name={name}"},
            sparse=True,  # no inspect of a task container that is being removed meanwhile
        ):
            time.sleep(0.3)
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            network = client.networks.get(SWARM_NETWORK)
            network.disconnect(f"{stack.PROJECT}_db_1", force=True)
            network.remove()
