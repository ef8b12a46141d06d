"""Negative controls: the ways of switching releases that cdlab exists to replace. The proving
suite runs them under the same load and asserts that they *do* lose requests, which shows the
load is real and the oracle sees downtime.

- ``naive``: stop the live release, then start the new one (one container on one port, as in
  the simplest deploy scripts); the proxy has nothing to send to in between.
- ``by_restart``: the new route applied by restarting the proxy with it (what a
  ``docker compose up -d`` does when a proxy's configuration changes, and what a
  configuration-reload switch amounts to when the proxy cannot hand its sockets over).
"""

from __future__ import annotations

import time

from lab import engines, release, routes, services, stack
from lab.progress import Progress
from lab.state import State


def naive(state: State, candidate: release.Candidate, progress: Progress) -> None:
    """Stop and remove the live release, then start ``candidate`` and route to it."""
    current = release.current_routes(state, candidate.service.name)
    for server in current.servers:
        release.remove(state, candidate.service.name, server.release, stop_timeout=2)
    empty = routes.Routes(candidate.service.name, ())
    release_store = release.route_store(state)
    release_store.put_json(empty.key, empty.to_doc())
    with engines.connect(state, state.config.host("prod"), timeout=300) as client:
        release.start(state, client, candidate, empty, progress)
    switched = routes.switch_to(routes.stage(empty, candidate.release), candidate.release)
    release_store.put_json(switched.key, switched.to_doc())
    release.verify_through_proxy(services.public_url(candidate.service), candidate.release)


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
