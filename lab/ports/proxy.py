"""The proxy's Runtime API, read from the workstation over the lab network (prod:9999).

Deploys never talk to HAProxy to *change* anything: they write documents to etcd (a service's
frontend and its routes) and the proxy's supervisor applies them. This client only reads (server
states, active connections, which services' processes run), using the supervisor's own parsers
so both sides agree on the format. Port 9999 is the supervisor's router in front of one HAProxy
per service (``services/proxy/cdlab_proxy``), over mutual TLS: it answers only a client with a
certificate of the control plane's CA (the operator's; releases have none and cannot even reach
the port: it listens on the stack's control network only).
"""

from __future__ import annotations

import importlib
import importlib.util
import socket
import ssl
import sys
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from lab.errors import ProxyError as ProxyError  # its home before lab.errors held every error

PACKAGE = Path(__file__).resolve().parents[2] / "services" / "proxy" / "cdlab_proxy"
RUNTIME_PORT = 9999
CHECK_TIMEOUT = 1.1  # a health check ends within its interval (inter 1s): the longest in flight


@cache
def supervisor() -> ModuleType:
    """The proxy's package ``cdlab_proxy`` (``services/proxy/cdlab_proxy``), imported from its
    folder whatever the current directory; once it is, ``import cdlab_proxy.<module>`` works."""
    if "cdlab_proxy" in sys.modules:  # e.g. pytest's pythonpath found it first
        return sys.modules["cdlab_proxy"]
    spec = importlib.util.spec_from_file_location(
        "cdlab_proxy", PACKAGE / "__init__.py", submodule_search_locations=[str(PACKAGE)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cdlab_proxy"] = module
    spec.loader.exec_module(module)
    return module


def module(name: str) -> ModuleType:
    """One module of the proxy's package, e.g. ``module("document")``."""
    supervisor()
    return importlib.import_module(f"cdlab_proxy.{name}")


@dataclass(frozen=True)
class Drained:
    """How a release's connections drained after it left the routes (``Runtime.wait_drained``)."""

    seconds: float  # waited, from the first look until none was left or the wait's bound
    left: int  # active connections still open when the wait ended (0: drained)


class Runtime:
    def __init__(
        self,
        address: str,
        port: int = RUNTIME_PORT,
        timeout: float = 3.0,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        """``tls``: (CA, certificate, key) for mutual TLS; None speaks plain TCP (only a test's
        own proxy)."""
        self.address, self.port, self.timeout = address, port, timeout
        self.context: ssl.SSLContext | None = None
        if tls:
            ca, cert, key = tls
            self.context = ssl.create_default_context(cafile=str(ca))
            self.context.load_cert_chain(str(cert), str(key))

    def send(self, command: str) -> str:
        try:
            with socket.create_connection((self.address, self.port), self.timeout) as raw:
                sock = (
                    self.context.wrap_socket(raw, server_hostname=self.address)
                    if self.context
                    else raw
                )
                sock.sendall(command.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            at = f"{self.address}:{self.port}"
            raise ProxyError(f"answer '{command}' on its Runtime API", str(exc), url=at) from exc
        return b"".join(chunks).decode()

    def slots(self, backend: str) -> list[Any]:
        return list(module("slots").parse_servers_state(self.send("show servers state"), backend))

    def release_slots(self, backend: str, host: str) -> list[Any]:
        """The slots of ``backend`` that serve the release named ``host``: one named ``host``
        (a plain container), or one per replica named ``tasks.<host>`` (a Swarm service)."""
        names = module("document").names(host)
        return [s for s in self.slots(backend) if s.fqdn in names]

    def wait_up(
        self,
        backend: str,
        host: str,
        timeout: float = 30.0,
        addr: str | None = None,
        addrs: tuple[str, ...] = (),
    ) -> None:
        """Wait until the proxy has ``host`` in ``backend`` and its health check passes; with
        ``addr``, at that address (a release started again is a new container at a new
        address, while its slot may still be UP at the old one until DNS answers again); with
        ``addrs`` (a release's replicas), at each of those addresses, every one in a slot of
        its own."""
        deadline, last = time.monotonic() + timeout, "not in the backend yet"
        wanted = set(addrs) or ({addr} if addr else set())
        while time.monotonic() < deadline:
            try:
                mine = self.release_slots(backend, host)
                # UP without an address: a never-used slot awaiting DNS
                up = {s.addr for s in mine if serving(s) and s.addr}
                if up and wanted <= up:
                    return
                if mine:
                    last = "; ".join(
                        f"slot {s.name}: op_state={s.operational} admin={s.admin} "
                        f"address={s.addr or 'none yet'}"
                        for s in mine
                    ) + (f"; not UP yet: {', '.join(sorted(wanted - up))}" if addrs else "")
            except ProxyError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise ProxyError(
            f"see '{host}' healthy in backend '{backend}'",
            last,
            backend=backend,
            host=host,
            timeout=timeout,
            hint="The proxy never routes to an unhealthy release; check the release's /health.",
        )

    def frontends(self) -> list[Any] | None:
        """The services' processes as the supervisor reports them (``show cdlab``: service,
        frontend, state, pid, detail); None when the proxy does not know that command."""
        rows: list[Any] | None = module("router").parse_status(self.send("show cdlab"))
        return rows

    def wait_frontend(self, frontend: dict[str, Any], timeout: float = 30.0) -> None:
        """Wait until the proxy runs a process for ``frontend`` (a frontend document, see
        ``lab.ports.frontends.frontend_doc``) and it answers: its port listens, its backends
        take routes. Raises with the supervisor's last word on it (refused, failed...)."""
        doc = module("document")
        wanted = doc.parse_frontend(frontend, frontend.get("name"))
        name, last = wanted.name, "no process for it yet"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                rows = self.frontends()
                if rows is None:
                    last = (
                        "the proxy does not answer 'show cdlab': its image predates "
                        "per-service frontends; 'invoke stack.apply' replaces it"
                    )
                else:
                    row = next((r for r in rows if r.service == name), None)
                    if row is not None and row.state == "up" and row.frontend == wanted:
                        return
                    last = describe(row, wanted)
            except ProxyError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise ProxyError(
            f"serve the frontend of '{name}' (public port {wanted.public_port}, port "
            f"{wanted.port}, health {wanted.health})",
            last,
            timeout=timeout,
            hint=f"Its document is {doc.FRONTENDS_PREFIX}{name}; the proxy's log on prod says "
            "why ('docker logs cdlab-stack_proxy_1' there).",
        )

    def wait_released(self, backend: str, host: str, timeout: float = 10.0) -> None:
        """Wait until no slot of ``backend`` serves ``host`` (any that has it, each of its
        replicas' included, is in maintenance)."""
        deadline, last = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            serving = [s for s in self.release_slots(backend, host) if not s.in_maintenance]
            if not serving:
                return
            last = "; ".join(
                f"slot {s.name} serves it: op_state={s.operational} admin={s.admin}"
                for s in serving
            )
            time.sleep(0.05)
        raise ProxyError(
            f"take '{host}' out of backend '{backend}' (it left the routes)",
            last or "not checked",
            backend=backend,
            host=host,
            timeout=timeout,
            hint="Look at the proxy's log on prod ('docker logs cdlab-stack_proxy_1' there).",
        )

    def sessions(self, backend: str, host: str) -> int | None:
        """Active connections of the slots serving ``host``, all its replicas' summed (None
        when no slot serves it)."""
        mine = self.release_slots(backend, host)
        if not mine:
            return None
        return sum_sessions(self.send("show stat"), backend, [s.name for s in mine])

    def wait_addrs_drained(self, addrs: tuple[str, ...], timeout: float = 15.0) -> Drained:
        """Wait until every slot at one of ``addrs``, in every service's backends, drains (the
        proxy applied a drained-addresses document: ``document.Drained``) and none of them has
        an active connection left (bounded by ``timeout``). A slot still taking new requests
        at the bound raises; connections still open there are the answer's ``left``."""
        started, wanted = time.monotonic(), set(addrs)
        while True:
            found = {
                b: [s for s in ss if s.addr in wanted]
                for b, ss in module("slots")
                .parse_all_servers_state(self.send("show servers state"))
                .items()
            }
            ready = [
                f"{b}/{s.name} at {s.addr}"
                for b, ss in found.items()
                for s in ss
                if serving(s) and not s.draining
            ]
            stat = self.send("show stat") if any(found.values()) else ""
            left = sum(sum_sessions(stat, b, [s.name for s in ss]) or 0 for b, ss in found.items())
            waited = time.monotonic() - started
            if not ready and not left:
                return Drained(waited, 0)
            if waited >= timeout and ready:
                raise ProxyError(
                    f"drain the slots at {', '.join(sorted(wanted))}",
                    f"{', '.join(ready)} still take new requests",
                    timeout=timeout,
                    hint="Is the drained-addresses document in etcd? The proxy's log on prod "
                    "says why ('docker logs cdlab-stack_proxy_1' there).",
                )
            if waited >= timeout:
                return Drained(waited, left)
            time.sleep(0.05)

    def wait_drained(self, backend: str, host: str, timeout: float = 15.0) -> Drained:
        """Wait until ``host`` has no active connection, on any of its slots (bounded by
        ``timeout``)."""
        started = time.monotonic()
        left = self.sessions(backend, host) or 0
        while left and time.monotonic() - started < timeout:
            time.sleep(0.05)
            left = self.sessions(backend, host) or 0
        return Drained(time.monotonic() - started, left)


def describe(row: Any, wanted: Any) -> str:
    """The supervisor's word on a service's process (a ``show cdlab`` row), for an error."""
    if row is None:
        return "no process for it yet"
    parts = [row.state] + ([f"pid {row.pid}"] if row.pid else [])
    if row.frontend is not None and row.frontend != wanted:
        changes = module("document").changes(row.frontend, wanted)
        parts.append(f"it runs the previous document ({changes} not applied)")
    return ", ".join(parts + ([row.detail] if row.detail else []))


def serving(slot: Any) -> bool:
    """A slot (``cdlab_proxy.slots.Slot``) that is UP and not in maintenance."""
    return bool(slot.operational == 2 and not slot.in_maintenance)


def parse_sessions(csv_text: str, backend: str, server: str) -> int | None:
    """``scur`` (current sessions) of ``backend/server`` from ``show stat`` CSV (pure)."""
    return sum_sessions(csv_text, backend, [server])


def sum_sessions(csv_text: str, backend: str, servers: list[str]) -> int | None:
    """``scur`` (current sessions) of ``servers`` of ``backend`` summed, from ``show stat``
    CSV (pure); None when none of them is in it."""
    lines = csv_text.splitlines()
    if not lines or not lines[0].startswith("# "):
        return None
    header = lines[0][2:].split(",")
    found = None
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == backend and row.get("svname") in servers:
            found = (found or 0) + int(row.get("scur") or 0)
    return found
