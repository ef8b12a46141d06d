"""The suite leaves the lab as it found it: each service's live release before the run is live
again after it (a test's commit, deployed to prove something, never stays live).

    held = restore.hold(lab)                 # at the session's start: live releases, pinned
    ...                                      # the tests deploy, roll back, abort
    restore.put_back(lab, held.live, say)    # at its end: a rollback to each one that moved
    restore.let_go(lab, held)                # then this run's pins lifted

Through the public calls a user's task makes (``pipeline.rollback --to``): the release comes
back from the registry, however long ago it was live. Each release to put back is pinned for
the run (``lab.release.pins``, owner ``suite-<run>``), so the many deploys of a run never prune
it from the registry. The pins are bound to a lease of ``PIN_HOURS``: a run killed before its
end leaves pins that end on their own, and a run beside it keeps its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from lab.errors import LabError
from lab.ports.lab import Lab
from lab.progress import Progress
from lab.release import api as release
from lab.release import devloop, pins, pipeline
from lab.stack import services


def live_releases(lab: Lab) -> dict[str, str]:
    """service -> its live release, for each service of the checkout that has one."""
    out = {}
    for name in services.names(lab.config.root):
        live = release.current_routes(lab, name).live
        if live:
            out[name] = live
    return out


PIN_HOURS = 3  # longer than any run (CI stops one at 90 minutes)


@dataclass(frozen=True)
class Held:
    live: dict[str, str]  # service -> its live release at the run's start
    keys: tuple[str, ...]  # this run's pins
    dev: str = ""  # the dev clone's commit at the run's start ("": not read)


def hold(lab: Lab) -> Held:
    """The live releases (``live_releases``), each pinned for this run."""
    live = live_releases(lab)
    owner = f"suite-{uuid.uuid4().hex[:12]}"
    lease = lab.etcd.grant(PIN_HOURS * 3600) if live else ""
    keys = tuple(pins.key(service, rel, owner) for service, rel in live.items())
    for key in keys:
        lab.etcd.create(key, owner.encode(), lease=lease)
    return Held(live, keys, devloop.clone_head(lab.config))


def put_back_dev(lab: Lab, held: Held, say: Callable[[str], None]) -> None:
    """The dev clone back at its commit of the run's start (tests commit and push there)."""
    now = devloop.clone_head(lab.config)
    if held.dev and now and now != held.dev:
        try:
            devloop.reset_clone(lab.config, held.dev)
        except LabError as exc:
            say(f"dev clone: could not put it back at {held.dev[:12]} (now {now[:12]}): {exc}")
        else:
            say(f"dev clone: back at {held.dev[:12]} (the tests left {now[:12]})")


def let_go(lab: Lab, held: Held) -> None:
    """Lift this run's pins (a user's, another run's stay)."""
    for key in held.keys:
        lab.etcd.delete(key)


def moved(before: Mapping[str, str], now: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """service -> (live now, live before) for each service whose live release changed (pure)."""
    return {s: (now.get(s, ""), b) for s, b in before.items() if now.get(s) != b}


def put_back(lab: Lab, before: Mapping[str, str], say: Callable[[str], None]) -> list[str]:
    """Roll each service that moved back to its release of ``before``; one line per service
    put back or not (with why)."""
    lines = []
    for service, (now, was) in moved(before, live_releases(lab)).items():
        try:
            pipeline.rollback(lab, Progress(out=None), service, to=was)
        except LabError as exc:
            lines.append(f"{service}: could not put {was} back (live: {now or 'none'}): {exc}")
        else:
            lines.append(f"{service}: {was} is live again (the tests left {now or 'none'})")
        say(lines[-1])
    return lines
