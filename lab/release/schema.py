"""A service's database schema (``[migrate]`` in its manifest), judged from facts (pure).

A version is what a manifest's ``current`` or ``head`` command prints: the first word of its last
line ("" when there is none: an empty database). Each run's record keeps, under ``schema``:

    needs       the version the release's code needs (its ``head``)
    before      the database's version when the run began
    left        the database's version when the run ended
    checked     the release a scratch copy of the database was checked with (its integration
    checked_at  tests passed against its own container on the copy, migrated to this version)

From them, which release is known to work with which version: the version it needs, a version
it was live at (a run left it so with that release live), and a version a scratch check passed
it at. A rollback to a release not known to work with the database's version is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from lab.release.model import Candidate
from lab.release.records import Record
from lab.stack.services import VERSION

NONE = "none"  # how a record writes "no version yet"


def version(output: str) -> str:
    """The first word of the last non-empty line of ``output``; "" when there is none."""
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1].split()[0] if lines else ""


def cause(output: str) -> str:
    """The line of a failed command's output that says why (a Python exception's last line, a
    tool's FAILED or error line; else its last line), for a message's first line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    said = [line for line in lines if _CAUSE.search(line)]
    return (said or lines or ["no output"])[-1][:300]


_CAUSE = re.compile(r"^(FAILED\b|ERROR\b|[\w.]*(Error|Exception)\b)|\berror:")


def downgrade_command(c: Candidate, to: str) -> str:
    """``c``'s ``[migrate] downgrade`` back to ``to``."""
    assert c.service.migration is not None and c.service.migration.downgrade
    return c.service.migration.downgrade.replace(VERSION, to)


def shown(v: str | None) -> str:
    return v if v else NONE


@dataclass(frozen=True)
class Known:
    """What the records of a service say about its schema."""

    now: str | None  # the version the last run that knew it left; None: no run knew one
    needs: dict[str, str]  # release -> the version its code needs
    works: frozenset[tuple[str, str]]  # (release, version) seen working

    def works_with(self, release: str, at: str) -> bool:
        return self.needs.get(release) == at or (release, at) in self.works


def known(records: Iterable[Record]) -> Known:
    """``Known`` from a service's records, oldest first."""
    now: str | None = None
    needs: dict[str, str] = {}
    works: set[tuple[str, str]] = set()
    for rec in records:
        s = rec.schema
        if "needs" in s and rec.kind in ("deploy", "reset"):
            needs[rec.release] = _stored(s["needs"])
        if "left" in s:
            now = _stored(s["left"])
            if rec.result == "succeeded" and rec.kind in ("deploy", "rollback", "reset"):
                works.add((rec.release, now))
            # the release that stayed live through a failed run kept working at what it left
            elif rec.previous:
                works.add((rec.previous, now))
        if s.get("checked") and "checked_at" in s:
            works.add((s["checked"], _stored(s["checked_at"])))
    return Known(now, needs, frozenset(works))


def _stored(v: str) -> str:
    return "" if v == NONE else v


def rollback_refusal(k: Known, service: str, target: str, live: str | None) -> str:
    """Why a rollback of ``service`` to ``target`` must not run at the database's version, or
    "" when it may (the version unknown to the records: nothing to judge)."""
    if k.now is None or k.works_with(target, k.now):
        return ""
    needs = k.needs.get(target)
    why = (
        f"its code needs schema {shown(needs)}"
        if needs is not None
        else "the records do not say which schema its code needs"
    )
    return (
        f"rollback of {service} to {target} refused: {why}, the database is at "
        f"{shown(k.now)}, and no run showed {target} working at {shown(k.now)} (never live "
        "there, and no scratch copy at that version passed its integration tests). Ways out: "
        f"deploy a release that works with {shown(k.now)}"
        + (f" (the live {live} does)" if live else "")
        + f", or 'invoke rollback --service {service} --to {target} --migrate-down', which "
        "runs the manifest's [migrate] downgrade once a scratch copy shows it safe"
    )
