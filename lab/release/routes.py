"""Route records: which releases of a service the proxy sends traffic to, and with what weight.

Stored in etcd at ``/cdlab/routes/<service>``; the proxy applies them through HAProxy's Runtime
API. The format is defined once, in ``services/proxy/cdlab_proxy/document.py``.

A server's ``replicas`` is how its release runs (0: a plain container; K: a Swarm service of K
replicas, K slots in the proxy). It is set when the release is staged, and every transition
below carries each server it keeps with its own value.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from lab.errors import ConfigError
from lab.ports import proxy

PREFIX = "/cdlab/routes/"
MAX_WEIGHT = 256
_RELEASE = re.compile(r"^[0-9a-f]{12}$")  # a release id: a commit's short sha (lab.git)


@dataclass(frozen=True)
class Server:
    release: str
    host: str  # the release's DNS name on the stack network
    weight: int
    drain: bool = False
    replicas: int = 0  # 0: a plain container; K: a Swarm service of K replicas


_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_VALUE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
MATCH_FORM = (
    "header:NAME=VALUE or cookie:NAME=VALUE (NAME: letters, digits, - and _; VALUE: also .)"
)


@dataclass(frozen=True)
class Match:
    """Requests that carry a header or cookie with an exact value go to ``release`` only."""

    kind: str  # "header" or "cookie"
    name: str
    value: str
    release: str

    @property
    def rule(self) -> str:
        return f"{self.kind}:{self.name}={self.value}"

    @property
    def headers(self) -> dict[str, str]:
        """What a client sends to be matched."""
        if self.kind == "cookie":
            return {"Cookie": f"{self.name}={self.value}"}
        return {self.name: self.value}


def parse_match(text: str, release: str = "") -> Match:
    """``header:X-Canary=1`` or ``cookie:canary=yes``; ``ConfigError`` otherwise."""
    kind, _, rest = text.partition(":")
    name, eq, value = rest.partition("=")
    if (
        kind not in ("header", "cookie")
        or not eq
        or not _TOKEN.match(name)
        or not _VALUE.match(value)
    ):
        raise ConfigError("--match", text, MATCH_FORM)
    return Match(kind, name, value, release)


@dataclass(frozen=True)
class Routes:
    service: str
    servers: tuple[Server, ...]
    match: Match | None = None  # a candidate on matched traffic only (A/B), until promote/abort

    @property
    def key(self) -> str:
        return PREFIX + self.service

    @property
    def live(self) -> str | None:
        """The release with the highest weight (the one users see), if any has weight."""
        weighted = [s for s in self.servers if s.weight > 0 and not s.drain]
        return max(weighted, key=lambda s: s.weight).release if weighted else None

    def to_doc(self) -> dict[str, Any]:
        """The route document (``cdlab_proxy.document``, the one definition of the format)."""
        doc = proxy.module("document")
        m = self.match
        wire = doc.Routes(
            self.service,
            tuple(
                doc.Server(s.release, s.host, s.weight, s.drain, s.replicas) for s in self.servers
            ),
            None
            if m is None
            else doc.Match(m.kind, m.name, m.value, m.release, host_name(self.service, m.release)),
        )
        out: dict[str, Any] = doc.routes_doc(wire)
        return out


def from_doc(doc: Any, service: str) -> Routes:
    """Validate a stored record; ``ConfigError`` names what is wrong."""
    wire = proxy.module("document")
    try:
        parsed = wire.parse_routes(doc, service)
    except wire.DocumentError as exc:
        raise ConfigError(exc.field, exc.value, exc.expected) from exc
    servers = tuple(
        Server(s.release, s.host, s.weight, s.drain, s.replicas) for s in parsed.servers
    )
    m = parsed.match
    match = None if m is None else Match(m.kind, m.name, m.value, m.release)
    return Routes(service, servers, match)


def host_name(service: str, release: str) -> str:
    return f"{service}-{release}"


def replicas_of(current: Routes, release: str) -> int:
    """``release``'s replicas in ``current`` (0 when it is not in the pool)."""
    return next((s.replicas for s in current.servers if s.release == release), 0)


def _server(current: Routes, release: str, weight: int, drain: bool = False) -> Server:
    """``release`` at ``weight``, with the replicas it has in ``current``."""
    host = host_name(current.service, release)
    return Server(release, host, weight, drain, replicas_of(current, release))


def switch_to(current: Routes, release: str, keep_previous: bool = True) -> Routes:
    """All traffic to ``release``; the previously live release stays routed but drained (warm,
    for an instant rollback); any other release leaves the pool (pure)."""
    previous = current.live
    servers = [_server(current, release, 100)]
    if keep_previous and previous and previous != release:
        servers.append(_server(current, previous, 0, drain=True))
    return Routes(current.service, tuple(servers))


def stage(current: Routes, release: str, replicas: int = 0) -> Routes:
    """``current`` plus ``release`` (``replicas``: how it runs, see ``Server``) in the pool at
    weight 0: health-checked, receiving nothing."""
    others = tuple(s for s in current.servers if s.release != release)
    return Routes(
        current.service,
        (*others, Server(release, host_name(current.service, release), 0, replicas=replicas)),
        current.match,
    )


def matched(current: Routes, match: Match, replicas: int = 0) -> Routes:
    """``current`` with ``match.release`` (staged at weight 0 with ``replicas``) serving matched
    requests (pure)."""
    return dataclasses.replace(stage(current, match.release, replicas), match=match)


def without(current: Routes, release: str) -> Routes:
    """``current`` with ``release`` out of the pool and no match rule (an abort; pure)."""
    servers = tuple(s for s in current.servers if s.release != release)
    return Routes(current.service, servers)


def previous(current: Routes) -> str | None:
    """The drained release kept warm for a rollback, if any."""
    return next((s.release for s in current.servers if s.drain), None)


def rollback_target(current: Routes, deployed: list[str], to: str | None) -> str:
    """Which release a rollback makes live (pure).

    ``deployed``: releases that were made live, oldest first. Without ``to``: the warm previous
    release, else the newest deployed release that is not live.
    """
    live = current.live
    if to is not None:
        if to == live:
            raise ConfigError("--to", to, f"a release other than the live one ({live})")
        if to not in deployed and to not in {s.release for s in current.servers}:
            known = ", ".join(reversed(deployed[-10:])) or "none yet"
            raise ConfigError("--to", to, f"a release deployed before (latest first: {known})")
        return to
    warm = previous(current)
    if warm:
        return warm
    for release in reversed(deployed):
        if release != live:
            return release
    raise ConfigError(
        "--to", None, f"a previous release, but none was deployed before {live or 'anything'}"
    )


def canary(current: Routes, release: str, weight: int) -> Routes:
    """``weight`` % of requests to ``release``, the rest to the live release; any drained
    release stays as it is (pure)."""
    live = current.live
    servers = []
    for s in current.servers:
        if s.release == release:
            continue
        servers.append(dataclasses.replace(s, weight=100 - weight) if s.release == live else s)
    servers.append(_server(current, release, weight))
    return Routes(current.service, tuple(servers))


def is_release(text: str) -> bool:
    """``text`` names a release: a commit's short sha (12 lower-case hex digits)."""
    return bool(_RELEASE.match(text))


def retention(
    deployed: list[str],
    in_registry: list[str],
    current: Routes,
    retain: int,
    pinned: Collection[str] = (),
) -> tuple[list[str], list[str]]:
    """(kept, pruned) releases (pure). Kept: the releases in the pool (live, warm), then the
    most recently deployed ones, up to ``retain`` in all, and every pinned release in the
    registry besides (``lab.release.pins``); pruned: every other release tag in the registry
    (older deploys, and builds that never went live). ``deployed`` is oldest first and may
    repeat."""
    kept: list[str] = []
    pool = [s.release for s in sorted(current.servers, key=lambda s: -s.weight)]
    present = set(in_registry)
    for rel in pool + [r for r in reversed(deployed) if r in present]:  # gone ones don't count
        if rel not in kept and (len(kept) < retain or rel in pool):
            kept.append(rel)
    kept += sorted(r for r in set(pinned) & present if r not in kept)
    pruned = sorted(t for t in set(in_registry) - set(kept) if _RELEASE.match(t))
    return kept, pruned
