"""Which HAProxy processes to start, replace and stop, from the frontend documents (pure).

One process per service. A new document starts one; a changed one replaces that service's
process only (a new one beside it, then the old one finishes its requests); a deleted one stops
it. No other service's process is touched, so adding a service drops no request elsewhere.

Two services cannot share a public port: a process that runs keeps its port, and a document
claiming a port held by another service is refused (the one that runs, if any, keeps running).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from .document import Frontend, changes


@dataclass(frozen=True)
class Running:
    """A fact: the process the supervisor has for a service."""

    frontend: Frontend
    alive: bool
    exit: str = ""  # why it is not alive, e.g. "exit code 1"


@dataclass(frozen=True)
class Step:
    action: str  # "start", "replace", "stop" or "refuse"
    service: str
    frontend: Frontend | None  # what to run (start, replace), or what was refused
    reason: str

    def __str__(self) -> str:
        return f"{self.action} {self.service}: {self.reason}"


def plan(
    wanted: Mapping[str, Frontend],
    running: Mapping[str, Running],
    invalid: Collection[str] = (),
) -> tuple[Step, ...]:
    """Steps in the order to apply them: stops, replacements, then starts (each by name).

    ``invalid``: services whose document could not be read; their process stays as it is.
    """
    stops = tuple(
        Step("stop", name, None, "its frontend document was deleted")
        for name in sorted(running)
        if name not in wanted and name not in invalid
    )
    stopped = {s.service for s in stops}
    held = {
        r.frontend.public_port: name
        for name, r in running.items()
        if r.alive and name not in stopped
    }
    replaces: list[Step] = []
    refused: list[Step] = []
    for name in sorted(wanted):
        front, now = wanted[name], running.get(name)
        if now is None or not now.alive or now.frontend == front:
            continue
        if (refusal := _refusal(held, name, front)) is not None:
            refused.append(refusal)
            continue
        if held.get(now.frontend.public_port) == name:
            del held[now.frontend.public_port]
        held[front.public_port] = name
        replaces.append(Step("replace", name, front, changes(now.frontend, front)))
    starts: list[Step] = []
    for name in sorted(wanted):
        front, now = wanted[name], running.get(name)
        if now is not None and now.alive:
            continue
        if (refusal := _refusal(held, name, front)) is not None:
            refused.append(refusal)
            continue
        held[front.public_port] = name
        why = f"its HAProxy had stopped ({now.exit})" if now else "a new frontend document"
        starts.append(Step("start", name, front, why))
    return (*stops, *replaces, *starts, *sorted(refused, key=lambda s: s.service))


def _refusal(held: Mapping[int, str], name: str, front: Frontend) -> Step | None:
    """A ``refuse`` step when another service's process holds ``front``'s public port."""
    owner = held.get(front.public_port, name)
    if owner == name:
        return None
    return Step("refuse", name, front, f"public port {front.public_port} is {owner}'s")
