"""What a run of the stack's Compose project would do to prod's containers (pure).

Compose recreates a container when the configuration hash it labels the container with
(``com.docker.compose.config-hash``: the service's options, variables included, and its image's
id) differs from the one it computes now (``docker-compose config --hash='*'``). ``plan`` says
so beforehand, per service and with the reason, so an explicit command can show it first;
``missing`` is what a deploy may do: create a container that is not there and start one that is
stopped, never recreate one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_HASH_LINE = re.compile(r"^([A-Za-z0-9_.-]+) ([0-9a-f]{64})$")


@dataclass(frozen=True)
class Found:
    """A container of the project on prod."""

    service: str  # its Compose service
    container: str
    image: str  # the reference it was created from (pinned by digest)
    config_hash: str  # com.docker.compose.config-hash
    running: bool


@dataclass(frozen=True)
class Change:
    service: str
    action: str  # "create", "recreate", "start" or "remove"
    reason: str

    def __str__(self) -> str:
        return f"{self.action} {self.service} ({self.reason})"


def parse_hashes(output: str) -> dict[str, str]:
    """``docker-compose config --hash='*'``'s ``<service> <sha256>`` lines (warnings skipped)."""
    return {m[1]: m[2] for m in map(_HASH_LINE.match, output.splitlines()) if m}


def short(image: str) -> str:
    """``10.100.200.200:5000/cdlab/proxy@sha256:3f9c...`` -> ``proxy@sha256:3f9c2e1a0b1c``."""
    name, at, digest = image.rpartition("/")[2].partition("@")
    return f"{name}@{digest[:19]}" if at else name


def plan(
    services: Sequence[str],
    images: Mapping[str, str],
    hashes: Mapping[str, str],
    found: Sequence[Found],
) -> tuple[Change, ...]:
    """Every change ``docker-compose up -d --remove-orphans`` would make, in the file's order.

    ``services``: the file's services; ``images``: each one's pinned image; ``hashes``: each
    one's configuration hash as Compose computes it now; ``found``: the project's containers.
    """
    out: list[Change] = []
    for service in services:
        mine = [f for f in found if f.service == service]
        if not mine:
            out.append(Change(service, "create", "no container"))
            continue
        stale = [f for f in mine if f.config_hash != hashes.get(service)]
        if stale:
            old = stale[0]
            why = (
                f"image {short(old.image)} -> {short(images[service])}"
                if service in images and old.image != images[service]
                else "its configuration changed (compose/stack.yml or its variables)"
            )
            out.append(Change(service, "recreate", why))
        elif not all(f.running for f in mine):
            out.append(Change(service, "start", "stopped"))
    for f in found:
        if f.service not in services:
            out.append(Change(f.service, "remove", f"{f.container} is not in compose/stack.yml"))
    return tuple(out)


def missing(services: Sequence[str], found: Sequence[Found]) -> tuple[Change, ...]:
    """What a deploy may change (pure): create a service's container if there is none, start
    it if it is stopped; an existing container is never recreated, whatever changed."""
    out: list[Change] = []
    for service in services:
        mine = [f for f in found if f.service == service]
        if not mine:
            out.append(Change(service, "create", "no container"))
        elif not all(f.running for f in mine):
            out.append(Change(service, "start", "stopped"))
    return tuple(out)


def up_args(todo: Sequence[Change], order: Sequence[str]) -> list[str]:
    """``docker-compose`` arguments that make exactly ``todo`` and nothing else (pure; ``[]``
    when there is nothing to do): ``up`` of the services named, none of their dependencies,
    never a recreate unless one is asked for, orphans removed only when asked for."""
    named = [s for s in order if any(c.service == s and c.action != "remove" for c in todo)]
    orphans = any(c.action == "remove" for c in todo)
    if not named and not orphans:
        return []
    recreate = any(c.action == "recreate" for c in todo)
    return [
        "up",
        "-d",
        "--no-build",
        "--no-deps",
        *([] if recreate else ["--no-recreate"]),
        *(["--remove-orphans"] if orphans else []),
        *named,
    ]


def describe(changes: Sequence[Change], found: int) -> str:
    """One line for people: what a run will do, or that it has nothing to do."""
    if not changes:
        return f"nothing to change: {found} container(s) as compose/stack.yml and the images say"
    return "; ".join(str(c) for c in changes)
