"""Negative controls: the ways of switching releases that cdlab exists to replace. The proving
suite runs them under the same load and asserts that they *do* lose requests, which shows the
load is real and the oracle sees downtime.

- ``naive``: stop the container, then start the new one on the same port (published on
  127.0.0.1:``CONTROL_PORT``, no proxy in front), as the simplest deploy scripts do.
- ``by_restart``: the new route applied by restarting the proxy with it (what a
  ``docker compose up -d`` does when a proxy's configuration changes, and what a
  configuration-reload switch amounts to when the proxy cannot hand its sockets over).
"""

from __future__ import annotations

import contextlib
import time

from lab import engines, release, routes, services, stack
from lab.progress import Progress
from lab.state import State


def naive(state: State, candidate: release.Candidate, progress: Progress) -> float:
    """Stop the container that serves ``CONTROL_PORT`` (published on 127.0.0.1, no proxy in
    front), then start ``candidate`` on the same port, as the simplest deploy scripts do;
    returns the seconds until it answered again. The first call only starts one."""
    import docker.errors

    del progress  # nothing staged: that is the point
    name = f"naive-{candidate.service.name}"
    env = {
        **release.environment(state, candidate.service),
        "SERVICE_NAME": candidate.service.name,
        "RELEASE": candidate.release,
        "IMAGE": candidate.image,
        "PORT": str(candidate.service.port),
    }
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
            labels={"cdlab.role": "naive-control"},
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if container.exec_run(["sh", "-c", candidate.service.probe]).exit_code == 0:
                return time.monotonic() - started
            time.sleep(0.2)
    raise release.ReleaseError(f"the naive control's {candidate.release} never answered")


def remove_naive(state: State, service: str) -> None:
    import docker.errors

    with (
        engines.connect(state, state.config.host("prod"), timeout=60) as client,
        contextlib.suppress(docker.errors.NotFound),
    ):
        client.containers.get(f"naive-{service}").remove(force=True)


def by_restart(state: State, service: str, target: str) -> float:
    """Route all traffic to ``target`` (already in the pool) by restarting the proxy with the
    new routes; returns the seconds until the proxy answered again."""
    current = release.current_routes(state, service)
    switched = routes.switch_to(current, target)
    with engines.connect(state, state.config.host("prod"), timeout=120) as client:
        proxy = client.containers.get(f"{stack.PROJECT}_proxy_1")
        release.route_store(state).put_json(switched.key, switched.to_doc())
        started = time.monotonic()
        proxy.restart(timeout=1)
    stack.wait_healthy(state, timeout=60)
    return time.monotonic() - started
