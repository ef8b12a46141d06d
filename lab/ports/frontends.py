"""Services' frontend documents in the route store: what the proxy runs one HAProxy for.

``/cdlab/frontends/<service>`` holds a service's public port, its own port, its health path,
``max_connections`` and ``try_timeout`` (format: ``cdlab_proxy.document``). The proxy's
supervisor starts a service's process when its document appears, replaces only that process when
it changes, and stops it when it goes; no other service's process is touched. A deploy publishes
the document of the manifest it deploys (``publish``), and undoes it if the deploy fails
(``undo``); the proxy reports the process through its Runtime API (``Runtime.wait_frontend``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lab.errors import ConfigError
from lab.ports.etcd import Etcd, Fence
from lab.ports.proxy import module

if TYPE_CHECKING:
    from lab.stack.services import Service

# the document's fields under their manifest names (service.toml)
_MANIFEST = {"maxconn": "max_connections"}


def prefix() -> str:
    return str(module("document").FRONTENDS_PREFIX)


def frontend_doc(service: Service) -> dict[str, Any]:
    """The frontend document of ``service`` (its manifest), validated as the proxy will."""
    doc = module("document")
    body: dict[str, Any] = doc.frontend_doc(
        doc.Frontend(
            service.name,
            service.public_port,
            service.port,
            service.health,
            service.max_connections,
            service.try_timeout,
        )
    )
    try:
        doc.parse_frontend(body, service.name)
    except doc.DocumentError as exc:
        key = str(exc.field).rpartition(".")[2]
        raise ConfigError(
            _MANIFEST.get(key, key), exc.value, exc.expected, f"{service.folder}/service.toml"
        ) from exc
    return body


@dataclass(frozen=True)
class Published:
    """What ``publish`` did: ``previous`` is the document it replaced (None: the service had
    none, i.e. it is new to the proxy); ``written`` is False when the store already held it."""

    service: str
    previous: dict[str, Any] | None
    written: bool


def conflict(docs: dict[str, Any], name: str, public_port: int) -> str | None:
    """The other service whose frontend document holds ``public_port``, if any (pure)."""
    for key, other in sorted(docs.items()):
        owner = key.rpartition("/")[2]
        if owner != name and isinstance(other, dict) and other.get("public_port") == public_port:
            return owner
    return None


def publish(etcd: Etcd, service: Service, fence: Fence | None = None) -> Published:
    """Write ``service``'s frontend document unless the store holds it already (with ``fence``:
    a run's write, ``FencedOut`` once its lock is lost). Refused (``ConfigError``) when another
    service's document claims the same public port: the proxy would refuse it too."""
    body = frontend_doc(service)
    found = {k: _json(v) for k, v in etcd.get_prefix(prefix()).items()}
    key = prefix() + service.name
    previous = found.get(key)
    if previous == body:
        return Published(service.name, previous, written=False)
    owner = conflict(found, service.name, service.public_port)
    if owner is not None:
        raise ConfigError(
            "public_port",
            service.public_port,
            f"a port no other service's frontend holds ({owner} has it: {prefix()}{owner} = "
            f"{json.dumps(found[prefix() + owner], sort_keys=True)}); choose a free one in "
            "8000-8008, or remove that service's frontend if it is gone",
            f"{service.folder}/service.toml",
        )
    etcd.put_json(key, body, fence)
    return Published(service.name, previous if isinstance(previous, dict) else None, True)


def undo(etcd: Etcd, published: Published, fence: Fence | None = None) -> None:
    """Put back what ``publish`` replaced: the previous document, or none (the proxy then
    stops the process it started for a new service); ``fence`` as for ``publish``."""
    if not published.written:
        return
    key = prefix() + published.service
    if published.previous is None:
        etcd.delete(key, fence)
    else:
        etcd.put_json(key, published.previous, fence)


def publish_all(etcd: Etcd, services: Iterable[Service]) -> list[Published]:
    """Every service's document (``lab.up``); those written are the ones with ``written``."""
    return [publish(etcd, s) for s in services]


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None
