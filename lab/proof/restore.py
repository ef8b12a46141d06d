"""The suite leaves the lab as it found it: each service's live release before the run is live
again after it (a test's commit, deployed to prove something, never stays live).

    before = restore.hold(lab)               # at the session's start: live releases, pinned
    ...                                      # the tests deploy, roll back, abort
    restore.put_back(lab, before, say)       # at its end: a rollback to each one that moved
    restore.let_go(lab)                      # then the suite's pins lifted

Through the public calls a user's task makes (``pipeline.rollback --to``): the release comes
back from the registry, however long ago it was live. Each release to put back is pinned for
the run (``lab.release.pins``, owner ``suite``), so the many deploys of a run never prune it
from the registry; a run stopped before its end leaves its pins, and the next run lifts them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from lab.errors import LabError
from lab.ports.lab import Lab
from lab.progress import Progress
from lab.release import api as release
from lab.release import pins, pipeline
from lab.stack import services


def live_releases(lab: Lab) -> dict[str, str]:
    """service -> its live release, for each service of the checkout that has one."""
    out = {}
    for name in services.names(lab.config.root):
        live = release.current_routes(lab, name).live
        if live:
            out[name] = live
    return out


def hold(lab: Lab) -> dict[str, str]:
    """The live releases (``live_releases``), each pinned for the run; the pins of an earlier
    run that did not reach its end lifted first."""
    let_go(lab)
    before = live_releases(lab)
    for service, rel in before.items():
        pins.pin(lab.etcd, service, rel, "suite")
    return before


def let_go(lab: Lab) -> None:
    """Lift every pin the suite holds (a user's pins stay)."""
    for key in lab.etcd.get_prefix(pins.PREFIX):
        if key.endswith("/suite"):
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
