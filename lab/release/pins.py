"""Pinned releases: kept in the registry whatever the manifest's ``retain`` says, so they can
always be started again (a known-good release a team keeps, the release the test suite puts
back at its end).

A pin is a key of the route store, ``/cdlab/pins/<service>/<release>/<owner>``: one release may
be pinned by several owners (``user``: ``invoke pin``; ``suite-<run>``: a test run, its pin bound
to a lease that ends it on its own should the run never reach its end), and each owner lifts
only its own pin.

    pins.pin(lab.etcd, "app", "1f201c070fb8")              # the user's: retention keeps it
    pins.pinned(lab.etcd, "app")                           # {"1f201c070fb8"}
    pins.owners(lab.etcd, "app", "1f201c070fb8")           # ["user"]
    pins.unpin(lab.etcd, "app", "1f201c070fb8")
"""

from __future__ import annotations

import re
from typing import Protocol

from lab.errors import LabError
from lab.ports import proxy
from lab.release.routes import is_release

PREFIX = "/cdlab/pins/"
USER = "user"
_OWNER = re.compile(r"\A(user|suite-[0-9a-f]{8,32})\Z")


class Store(Protocol):
    """What pins need of the route store (``lab.ports.etcd.Etcd``)."""

    def get_prefix(self, prefix: str) -> dict[str, bytes]: ...

    def put(self, key: str, value: bytes) -> None: ...

    def delete(self, key: str) -> None: ...


def key(service: str, release: str, owner: str) -> str:
    """The pin's key; a bad service, release or owner is refused with what is expected."""
    if not proxy.module("document").NAME.match(service):
        raise LabError(f"'{service}' is not a service name (lower-case letters, digits, '-')")
    if not is_release(release):
        raise LabError(
            f"'{release}' is not a release (12 hex digits, the commit's short id as "
            "`invoke releases` shows it)"
        )
    if not _OWNER.match(owner):
        raise LabError(f"'{owner}' cannot pin a release (owners: user, suite-<run id>)")
    return f"{PREFIX}{service}/{release}/{owner}"


def pin(store: Store, service: str, release: str, owner: str = USER) -> None:
    store.put(key(service, release, owner), owner.encode())


def unpin(store: Store, service: str, release: str, owner: str = USER) -> None:
    store.delete(key(service, release, owner))


def pinned(store: Store, service: str) -> set[str]:
    """The releases of ``service`` that some owner pinned."""
    return set(parse(store.get_prefix(f"{PREFIX}{service}/"), service))


def owners(store: Store, service: str, release: str) -> list[str]:
    """Who pins ``release`` of ``service`` (sorted; empty: nobody)."""
    return parse(store.get_prefix(f"{PREFIX}{service}/"), service).get(release, [])


def parse(keys: dict[str, bytes] | list[str], service: str) -> dict[str, list[str]]:
    """release -> its owners (sorted), from the keys under ``PREFIX<service>/`` (pure); a key of
    another shape is ignored."""
    out: dict[str, list[str]] = {}
    head = f"{PREFIX}{service}/"
    for k in keys:
        parts = k[len(head) :].split("/")
        if (
            k.startswith(head)
            and len(parts) == 2
            and is_release(parts[0])
            and _OWNER.match(parts[1])
        ):
            out.setdefault(parts[0], []).append(parts[1])
    return {r: sorted(o) for r, o in out.items()}
