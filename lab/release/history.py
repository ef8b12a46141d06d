"""The release history: records kept and read back, and what it says (the releases made live,
the ``invoke releases`` table)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from lab import report
from lab.errors import LabError, disk_full_hint
from lab.estate.images import REPOSITORY
from lab.estate.state import State
from lab.ports.lab import Lab
from lab.release import pins, records, routes
from lab.release.prod import read_routes

# record kinds after which a release served everyone (a reset makes the checkout's commit live)
MADE_LIVE = ("deploy", "rollback", "reset")


def keep(lab: Lab, rec: records.Record) -> None:
    """The record, redacted of the lab's secrets, in ``.lab/runs/``, in the route store (shared
    history) and copied to cd."""
    rec = records.redacted(rec, lab.state.secret_values())
    try:
        path = records.write(lab.runs, rec)
    except OSError as exc:  # a full disk here: the shared history still gets the record
        print(
            f"cdlab: the record of this run could not be written to {lab.runs} "
            f"({exc.strerror or exc}); it is kept in the route store only{disk_full_hint(exc)}",
            file=sys.stderr,
        )
        records.publish(lab.etcd, rec)
        return
    records.publish(lab.etcd, rec)
    records.copy_to_cd(lab.config, path)


def deployed(state: State | Lab, service: str) -> list[str]:
    """Releases made live by a successful run, oldest first (a release may repeat)."""
    lab = Lab.of(state)
    return [
        r.release
        for r in records.history(lab.runs, service, lab.etcd)
        if r.result == "succeeded" and r.kind in MADE_LIVE
    ]


@dataclass(frozen=True)
class ReleaseRow:
    release: str
    status: str  # live, warm (drained, ready for rollback), retained (in the registry)
    last_made_live: str
    by: str
    pinned: tuple[str, ...] = ()  # who pins it (``lab.release.pins``): kept whatever retain says


def releases(state: State | Lab, service: str = "app") -> list[ReleaseRow]:
    """Every release made live, newest first: live, warm (drained, ready for an instant
    rollback), retained (in the registry: a rollback starts it by digest) or pruned; a release
    on matched traffic comes first."""
    lab = Lab.of(state)
    current = read_routes(lab, service)
    in_registry = set(lab.registry.tags(f"{REPOSITORY}/{service}"))
    pinned = pins.parse(lab.etcd.get_prefix(f"{pins.PREFIX}{service}/"), service)
    return rows(records.history(lab.runs, service, lab.etcd), current, in_registry, pinned)


def rows(
    history: list[records.Record],
    current: routes.Routes,
    in_registry: set[str],
    pinned: Mapping[str, list[str]] | None = None,
) -> list[ReleaseRow]:
    """The ``releases`` table (pure): newest first in the order of ``history`` (oldest first,
    see ``records.history``), never by the runners' clocks; a live or warm release without a
    record (made live before records existed) on top, then the matched release above all.
    ``pinned``: release -> who pins it (a row says so while the release is in the registry); a
    pinned release no recorded run made live comes last, ``retained``."""
    pins_of = {r: tuple(o) for r, o in (pinned or {}).items() if r in in_registry}
    warm = routes.previous(current)
    made: dict[str, ReleaseRow] = {}  # the last run that made each release live, in order
    for rec in history:
        if rec.result != "succeeded" or rec.kind not in MADE_LIVE:
            continue
        status = (
            "live"
            if rec.release == current.live
            else "warm"
            if rec.release == warm
            else "retained"
            if rec.release in in_registry
            else "pruned"
        )
        made.pop(rec.release, None)
        made[rec.release] = ReleaseRow(
            rec.release, status, rec.started, rec.trigger, pins_of.get(rec.release, ())
        )
    ordered = list(reversed(made.values()))
    unrecorded = [
        ReleaseRow(rel, "live" if rel == current.live else "warm", "?", "?", pins_of.get(rel, ()))
        for rel in filter(None, (current.live, warm))
        if rel not in made
    ]
    ordered = unrecorded + ordered
    listed = {r.release for r in ordered} | {current.match.release if current.match else ""}
    # pinned and still in the registry, but never made live by a recorded run (pushed by a
    # run that failed or a canary that aborted, then pinned): retention keeps it, so it shows
    ordered += [
        ReleaseRow(rel, "retained", "-", "-", owners)
        for rel, owners in sorted(pins_of.items())
        if rel not in listed
    ]
    if current.match:
        m = current.match
        ordered = [
            ReleaseRow(m.release, f"matched ({m.rule})", "-", "-", pins_of.get(m.release, ()))
        ] + [r for r in ordered if r.release != m.release]
    return ordered


def releases_json(rows: list[ReleaseRow]) -> str:
    """The ``releases`` table for a program: a list of objects, newest first."""
    return json.dumps(
        [
            {
                "release": r.release,
                "status": r.status,
                "last_made_live": None if r.last_made_live in ("-", "?") else r.last_made_live,
                "by": None if r.by in ("-", "?") else r.by,
                "pinned": list(r.pinned),
            }
            for r in rows
        ],
        indent=2,
    )


def render_releases(rows: list[ReleaseRow]) -> str:
    return report.table(
        ("RELEASE", "STATUS", "LAST MADE LIVE", "BY", "PINNED"),
        [(r.release, r.status, r.last_made_live, r.by, ", ".join(r.pinned)) for r in rows],
    )


def pin(state: State | Lab, service: str, release: str, remove: bool = False) -> str:
    """Pin ``release`` of ``service`` (kept in the registry whatever ``retain`` says), or lift
    the user's pin; one line says what was done. A release not in the registry cannot be
    pinned (it is gone already); a pin lands only while the release is still there (a prune
    that ran meanwhile is seen, and said)."""
    lab = Lab.of(state)
    key = pins.key(service, release, pins.USER)  # a bad name or release is refused here
    if remove:
        others = [o for o in pins.owners(lab.etcd, service, release) if o != pins.USER]
        still = (
            f"; still pinned by {', '.join(others)} (a test run's pin ends with the run)"
            if others
            else " (retention may prune it)"
        )
        if pins.USER not in pins.owners(lab.etcd, service, release):
            return f"{service}: {release} had no pin of yours{still}"
        lab.etcd.delete(key)
        return f"{service}: {release} is no longer pinned by you{still}"
    repo = f"{REPOSITORY}/{service}"
    gone = (
        f"release '{release}' of '{service}' is not in the registry, so there is nothing to "
        f"keep (a pruned release comes back only by deploying its commit again); `invoke "
        f"releases --service {service}` lists the retained ones"
    )
    if lab.registry.digest(repo, release) is None:
        raise LabError(gone)
    lab.etcd.put(key, pins.USER.encode())
    if lab.registry.digest(repo, release) is None:  # pruned between the check and the pin
        lab.etcd.delete(key)
        raise LabError(gone)
    return f"{service}: {release} is pinned (kept in the registry whatever retain says)"
