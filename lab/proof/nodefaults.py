"""A prod host lost under load, two ways, with the same load and the same counts: the one prod
host's engine restarted (the stack and every release go with it), and a worker of prod's swarm
killed the way a machine dies (its replicas elsewhere; the proxy routes around it). Used by the
fault suites (they assert) and by ``invoke bench --faults`` (it records); nothing here asserts.

A worker is killed with SIGKILL to dockerd inside its host container: dockerd is the child of
the container's init, so the host, its engine and its replicas die at once, with no goodbye on
the network (no FIN, no RST: packets to its replicas are dropped).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lab.errors import ConfigError
from lab.estate import swarm as estate_swarm
from lab.estate.state import State
from lab.ports import engines
from lab.ports.lab import Lab
from lab.proof import load, loadreport
from lab.release import api as release
from lab.release import replicas, swarm
from lab.release.model import Candidate
from lab.stack import project as stack
from lab.stack import services

KILL_DOCKERD = ["sh", "-c", "kill -KILL $(cat /var/run/docker.pid)"]


@dataclass
class Outcome:
    """One fault under load: the traffic and what was timed (seconds since the fault)."""

    traffic: load.Traffic
    timings: dict[str, float]
    lost: list[Any]  # registrations answered 201 that cannot be read back

    def figures(self) -> dict[str, Any]:
        s = self.traffic.summary()
        return {
            "failed": s["failed"],
            "total": s["total"],
            "outage_s": round(self.traffic.gap(), 2),
            "lost": len(self.lost),
            **{k: round(v, 1) for k, v in self.timings.items()},
            "errors": s["errors"],
        }


def wait_for(what: str, check: Callable[[], str], timeout: float) -> float:
    """Poll ``check`` (it returns "" when done, else what it saw) every half second; the
    seconds it took. ``TimeoutError`` names ``what`` and the last thing seen."""
    started, last = time.monotonic(), "not checked"
    while time.monotonic() - started < timeout:
        last = check()
        if not last:
            return time.monotonic() - started
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s (last: {last})")


def live(lab: State, service: str = "app") -> Candidate:
    rel = release.current_routes(lab, service).live
    if rel is None:
        raise ConfigError(f"{service}'s live release", "none", "a deployed service (invoke lab.up)")
    return Candidate(services.load(lab.config.root, service), rel, "")


def placed(lab: Lab, c: Candidate) -> dict[str, int]:
    """Running replicas of ``c`` by node host name."""
    nodes = swarm.node_hosts(lab)
    found: dict[str, int] = {}
    for r in replicas.running(swarm.tasks(lab, c)):
        host = nodes.get(r.node, "?")
        found[host] = found.get(host, 0) + 1
    return found


def node_state(lab: Lab, host: str) -> str:
    """``ready``, ``down``... as the swarm's manager lists ``host``; what went wrong otherwise."""
    address = lab.config.host(host).address
    listed = estate_swarm.members(lab.config, lambda h: lab.engine(h.name, timeout=10))
    if isinstance(listed, str):
        return listed
    return next((m.state for m in listed if m.address == address), "not listed")


def a_worker(lab: Lab, c: Candidate) -> str:
    """A worker of prod's swarm that runs a replica of ``c`` (the first by name)."""
    if not lab.config.swarm_manager:
        raise ConfigError(
            "the topology's prod",
            "one host",
            "a swarm (hosts with \"swarm\": manager/worker; docs/lab.md, 'prod as a swarm')",
        )
    # cdlab kills or stops a worker through its container: one it created
    workers = [h.name for h in lab.config.swarm_workers if not h.existing]
    where = placed(lab, c)
    used = [w for w in workers if where.get(w)]
    if not used:
        raise ConfigError("the live release's replicas", str(where), "one on a worker at least")
    return sorted(used)[0]


def host_started_at(lab: State, name: str) -> str:
    """When ``name``'s host container last started (its engine with it)."""
    c = _host(lab, name)
    return str(c.attrs["State"]["StartedAt"])


def _host(lab: State, name: str) -> Any:
    """The container of host ``name``, which cdlab kills, stops or restarts: one it created."""
    host = lab.config.host(name)
    if host.existing:
        raise ConfigError(
            "host",
            name,
            "a host cdlab created: an existing machine is not killed, stopped or restarted by "
            "cdlab (its owner's; docs/lab.md, 'Existing machines')",
        )
    return engines.local().containers.get(lab.config.container_name(host))


def worker_lost(
    lab: State,
    rate: int,
    name: str,
    say: Callable[[str], None] = lambda _: None,
    how: str = "kill",
    victim: str = "",
) -> tuple[Outcome, str]:
    """Lose a worker under ``rate`` req/s: its engine killed (``how="kill"``, a machine dying)
    or its host stopped (``"stop"``: the engine stops its containers, SIGTERM first, as a
    shutdown does); wait until the live release's replicas all run on the nodes left, start
    the host again and wait until the swarm lists it ready. ``victim``: the worker (by
    default the first one running a replica of the live release). The outcome and the
    worker's name; the load's report is written as ``name``."""
    ports = Lab(lab)
    c = live(lab)
    victim = victim or a_worker(ports, c)
    wanted = sum(placed(ports, c).values())
    host = _host(lab, victim)
    timings: dict[str, float] = {}
    try:
        with load.running(rate=rate, name=name) as traffic:
            time.sleep(3)
            what = f"kill {victim}'s engine" if how == "kill" else f"stop {victim}"
            traffic.mark(what)
            say(f"  {what} under {rate} req/s")
            if how == "kill":
                code, out = host.exec_run(KILL_DOCKERD)

                def gone() -> str:
                    host.reload()
                    return "" if host.status != "running" else f"kill said {code}: {out!r}"

                wait_for(f"{victim}'s host gone with its engine", gone, 15)
            else:
                host.stop(timeout=30)

            def elsewhere() -> str:
                where = placed(ports, c)
                left = sum(n for h, n in where.items() if h != victim)
                return "" if left >= wanted else f"running: {where}"

            timings["replicas_elsewhere_s"] = wait_for(
                "every replica running on the nodes left", elsewhere, 90
            )
            time.sleep(3)
            traffic.mark("end")
    finally:
        try:
            host.start()
        except Exception as exc:  # the error that ended the run (if any) is the one to see
            say(f"  could not start {victim} again: {exc}")
    said = f"{victim}'s engine killed" if how == "kill" else f"{victim} stopped"
    loadreport.write(traffic, load.REPORTS, {"fault": said})

    def ready() -> str:
        now = node_state(ports, victim)
        return "" if now == "ready" else now

    timings["node_ready_after_start_s"] = wait_for(f"{victim} ready again", ready, 120)
    return Outcome(traffic, timings, load.readback(traffic)), victim


def engine_restarted(
    lab: State, rate: int, name: str, say: Callable[[str], None] = lambda _: None
) -> Outcome:
    """Restart prod's host (its engine, the stack, the releases) under ``rate`` req/s; wait
    until the stack is healthy and the live release answers again (20 answers in a second)."""
    prod = _host(lab, "prod")
    with load.running(rate=rate, name=name) as traffic:
        traffic.mark("restart prod's engine (the host)")
        say(f"  restarting prod's engine under {rate} req/s")
        started = time.monotonic()
        prod.restart(timeout=20)
        engines.wait_ready(lab, lab.config.host("prod"), timeout=120)
        stack.wait_healthy(lab, timeout=180)

        def answering() -> str:
            recent = [r for r in traffic.seen_so_far() if r.ok and r.t > time.time() - 1]
            return "" if len(recent) > 20 else f"{len(recent)} answers in the last second"

        # not back within 2 minutes: the caller sees it in ``back_s`` and the counts
        with contextlib.suppress(TimeoutError):
            wait_for("the live release answering again", answering, 120)
        back = time.monotonic() - started
        time.sleep(3)
        traffic.mark("end")
    loadreport.write(
        traffic, load.REPORTS, {"fault": "prod engine restart", "back_after_s": round(back, 1)}
    )
    return Outcome(traffic, {"back_s": back}, load.readback(traffic))
