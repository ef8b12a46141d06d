"""The bench's deploys under load: each strategy (cdlab's blue/green and canary, a switch by
proxy restart, and the negative controls: a reload, a naive stop/start, Docker Swarm's rolling
updates) deploys the same new releases while locust sends a steady rate; the result is the
failed requests, the latency and the longest gap, per strategy and rate.

Contract: ``strategy_runs`` builds its releases first (the switch is what is measured), runs the
deploys under load, removes what the controls started, and returns plain figures. ``Chain`` makes
the new releases every bench deploy needs (the measurements use it too); ``quiet`` is the
progress a bench run passes when nobody watches. Proof code is a client: deploys go through
``lab.release``'s public API and pipeline only.
"""

from __future__ import annotations

import dataclasses
import secrets
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.build import git
from lab.estate.state import State
from lab.progress import Progress
from lab.proof import controls, load
from lab.release import api as release
from lab.release import judge, pipeline
from lab.stack import services

CONTROLS = {  # on CONTROL_PORT, not behind cdlab's proxy
    "reload": controls.reload,
    "naive": controls.naive,
    "swarm": controls.swarm,
    "swarm-start-first": controls.swarm_start_first,
}
SWARM = (
    "Docker Swarm rolling update on a one-node swarm on prod, endpoint mode dnsrr (no routing "
    "mesh or VIP: this kernel has no IPVS), healthcheck every 1 s, monitor 2 s, failure_action "
    "rollback; 'swarm': host-mode published port, order stop-first (forced by the one host "
    "port); 'swarm-start-first': no published port, order start-first, behind an HAProxy whose "
    "servers are the addresses of tasks.<service> in Docker's DNS, asked every second"
)


def quiet() -> Progress:
    """A progress that prints nothing (a fresh one each time: a run's record holds its stages)."""
    return Progress(out=None)


@dataclasses.dataclass
class Chain:
    """A throwaway clone with one-line commits of the app, for deploys that need new releases.

    Each chain marks its commits with a token of its own, so no run's change repeats an earlier
    run's tree: a repeated tree would be a cache hit on cd (no unit tests, no build), not a
    code change."""

    state: State
    root: Path
    n: int = 0
    token: str = dataclasses.field(default_factory=lambda: secrets.token_hex(4))

    def commit(self, path: str = "services/app/app/web.py", marker: str = "<title>") -> str:
        target = self.root / path
        text = target.read_text()
        self.n += 1
        if marker in text:
            i = text.index(marker) + len(marker)
            text = text[:i] + f"bench {self.token}.{self.n} " + text[i:]
        else:
            text += f"\n# bench {self.token}.{self.n}\n"
        target.write_text(text)
        return git.commit_all(self.root, f"bench {self.n}", author="cdlab-bench")


def chain(lab: State, where: Path) -> Chain:
    subprocess.run(["git", "clone", "-q", "--shared", str(lab.config.root), str(where)], check=True)
    return Chain(lab.at(where), where)


def strategy_runs(
    lab: State, ch: Chain, strategy: str, deploys: int, rate: int, say: Callable[[str], None]
) -> dict[str, Any]:
    app = services.load(lab.config.root, "app")
    shas = [ch.commit() for _ in range(deploys)]
    for sha in shas:  # built before the load: the switch is what is measured
        pipeline.build(ch.state, quiet(), app, sha)
    url = services.public_url(app)
    if strategy in CONTROLS:  # on a published port, no proxy: the old release first
        url = services.control_url()
        head = git.commit(lab.config.root)
        CONTROLS[strategy](
            lab,
            release.candidate(app, pipeline.build(lab, quiet(), app, head), git.short(head)),
            quiet(),
        )
    aborted: list[str] = []
    try:
        traffic = _under_load(lab, ch, app, strategy, shas, rate, url, aborted)
    finally:
        controls.remove_naive(lab, "app")
        controls.remove_reload(lab, "app")
        controls.remove_swarm(lab, "app")
    s = traffic.summary()
    note = f", {len(aborted)} aborted by the judge" if aborted else ""
    say(
        f"  {strategy:17s} {rate} req/s: {s['failed']} failed of {s['total']} "
        f"({deploys} deploys{note})"
    )
    return {
        "aborted": aborted,
        "strategy": strategy,
        "rate": rate,
        "deploys": deploys,
        "total": s["total"],
        "achieved_rate": s["achieved_rate"],
        "failed": s["failed"],
        "p99_ms": s["p99_ms"],
        "longest_gap_ms": s["longest_gap_ms"],
    }


def _under_load(
    lab: State,
    ch: Chain,
    app: services.Service,
    strategy: str,
    shas: list[str],
    rate: int,
    url: str,
    aborted: list[str],
) -> load.Traffic:
    with load.running(rate=rate, name=f"bench-{strategy}-{rate}", url=url) as traffic:
        time.sleep(3)
        for sha in shas:
            traffic.mark(f"{strategy} {git.short(sha)}")
            if strategy == "bluegreen":
                pipeline.deploy(ch.state, quiet(), "app", sha, bake=0)
            elif strategy == "canary":
                try:
                    pipeline.deploy(
                        ch.state,
                        quiet(),
                        "app",
                        sha,
                        "canary",
                        (50, 100),
                        3.0,
                        judge.Thresholds(min_requests=20),
                        bake=0,
                    )
                except release.ReleaseError as exc:  # the judge said no: a result, not a crash
                    aborted.append(str(exc).split(". Every request")[0])
            else:
                built = pipeline.build(ch.state, quiet(), app, sha)
                candidate = release.candidate(app, built, git.short(sha))
                if strategy in CONTROLS:
                    CONTROLS[strategy](lab, candidate, quiet())
                else:  # restart: start beside, then switch by restarting the proxy
                    release.start_beside(lab, candidate)
                    controls.by_restart(lab, "app", candidate.release)
                    # as cdlab's switch does: releases out of the pool go (each holds database
                    # connections; ten of them exhaust postgres' 200)
                    current = release.current_routes(lab, "app")
                    release.retire(lab, "app", {s.release for s in current.servers})
            time.sleep(2)
    return traffic
