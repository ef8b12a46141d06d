"""Pinned releases: kept in the registry whatever the manifest's ``retain`` says, so they can
always be started again (a known-good release a team keeps, the release the test suite puts
back at its end).

A pin is a key of the route store, ``/cdlab/pins/<service>/<release>/<owner>``: one release may
be pinned by several owners (``user``, ``suite``), and each owner lifts only its own pin.

    pins.pin(lab.etcd, "app", "1f201c070fb8", "suite")     # retention keeps it
    pins.pinned(lab.etcd, "app")                           # {"1f201c070fb8"}
    pins.unpin(lab.etcd, "app", "1f201c070fb8", "suite")
"""

from __future__ import annotations

import re
from typing import Protocol

from lab.errors import LabError

PREFIX = "/cdlab/pins/"
OWNERS = ("user", "suite")
_RELEASE = re.compile(r"^[0-9a-f]{12}$")
_SERVICE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


class Store(Protocol):
    """What pins need of the route store (``lab.ports.etcd.Etcd``)."""

    def get_prefix(self, prefix: str) -> dict[str, bytes]: ...

    def put(self, key: str, value: bytes) -> None: ...

    def delete(self, key: str) -> None: ...


def key(service: str, release: str, owner: str) -> str:
    """The pin's key; a bad service, release or owner is refused with what is expected."""
    if not _SERVICE.match(service):
        raise LabError(f"'{service}' is not a service name (lower-case letters, digits, '-')")
    if not _RELEASE.match(release):
        raise LabError(
            f"'{release}' is not a release (12 hex digits, the commit's short id as "
            "`invoke releases` shows it)"
        )
    if owner not in OWNERS:
        raise LabError(f"'{owner}' cannot pin a release (owners: {', '.join(OWNERS)})")
    return f"{PREFIX}{service}/{release}/{owner}"


def pin(store: Store, service: str, release: str, owner: str = "user") -> None:
    store.put(key(service, release, owner), owner.encode())


def unpin(store: Store, service: str, release: str, owner: str = "user") -> None:
    store.delete(key(service, release, owner))


def pinned(store: Store, service: str) -> set[str]:
    """The releases of ``service`` that some owner pinned."""
    return parse(store.get_prefix(f"{PREFIX}{service}/"), service)


def parse(keys: dict[str, bytes] | list[str], service: str) -> set[str]:
    """The pinned releases named by the keys under ``PREFIX<service>/`` (pure); a key of
    another shape is ignored."""
    out = set()
    for k in keys:
        parts = k[len(f"{PREFIX}{service}/") :].split("/")
        if k.startswith(f"{PREFIX}{service}/") and len(parts) == 2 and _RELEASE.match(parts[0]):
            out.add(parts[0])
    return out
