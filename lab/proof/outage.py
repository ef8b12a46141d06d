"""A container killed under load and timed until it is back: the proxy's fault case and the
proxy-killed lesson measure the same thing the same way.

    with load.running(rate=300, name="x") as traffic:
        time.sleep(2)
        out = outage.kill_and_wait(proxy, traffic)
    out.back_s   # from the kill to the start of the stretch of successes that lasts
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from lab.proof import load


@dataclass(frozen=True)
class Outage:
    killed: float  # unix time of the SIGKILL
    restarted: float  # when the container was seen running again (0: not within the bound)

    def back_s(self, requests: list[load.Request]) -> float:
        """Seconds from the kill to the first success after the last failure among the
        requests sent since the restart (a burst of clients reconnecting at once right after
        it can still see a refused connection or two): infinity when not back (yet)."""
        if not self.restarted:
            return float("inf")
        return load.steady_since([r for r in requests if r.t > self.killed], self.restarted) - (
            self.killed
        )


def kill_and_wait(
    container: Any, traffic: load.Traffic, within: float = 30.0, steady: float = 3.0
) -> Outage:
    """SIGKILL ``container`` (a Docker SDK container) while ``traffic`` runs; return once it is
    running again (its start time changed: the host's keeper started it) and the load's
    successes have lasted ``steady`` seconds, or after ``within`` seconds."""
    first = container.attrs["State"]["StartedAt"]
    traffic.mark(f"kill {container.name}")
    killed, restarted = time.time(), 0.0
    container.kill()
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not restarted:
            container.reload()
            if container.status == "running" and container.attrs["State"]["StartedAt"] != first:
                restarted = time.time()
        elif load.steady_since(traffic.seen_so_far(), restarted) < time.time() - steady:
            break
        time.sleep(0.2)
    return Outage(killed, restarted)
