"""The supervisor's settings, and the static HAProxy configuration of one service (pure).

Each service's HAProxy is written once from its frontend document and never reloaded: routes
reach it through its Runtime API. A changed document starts a new process beside the old one
(see ``supervisor``), which is why a process's files carry a generation number.

``Settings.mode`` says how releases run: ``single`` (the default), plain containers on prod;
``swarm``, Swarm services whose replicas may be on a node that is gone. The swarm config sends a
connection that fails elsewhere after 500 ms, and asks another replica again what one did not
answer in time when that is safe (``render_config``); the single one is what it always was, but
for which requests may be sent twice (the same rule in both modes).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from . import edge
from .document import Frontend
from .slots import MATCH_SLOTS, MATCH_SUFFIX, PLACEHOLDER, SLOTS

Mode = Literal["single", "swarm"]
MODES: tuple[Mode, ...] = ("single", "swarm")


@dataclass(frozen=True)
class Settings:
    """Where things are; the defaults are the proxy's container on prod. Tests move every port
    (``port_shift``, the ``*_port`` fields) and the DNS server."""

    run_dir: str = "/tmp/cdlab-proxy"  # configs, admin sockets, maps, state files
    bind: str = ""  # the address frontends bind ("": every address)
    port_shift: int = 0  # added to each public port
    nameserver: str = "127.0.0.11:53"  # Docker's DNS on the stack network
    runtime_port: int = 9999  # the Runtime API router
    web_port: int = 8404  # /healthz and /stats
    listen: str = "0.0.0.0"  # the address of the web port (and of the router unless below)
    # the router's address: on prod a name only the stack's control network gives the proxy, so
    # releases (on the apps network) cannot reach the Runtime API at all ("": ``listen``)
    runtime_listen: str = ""
    tls_dir: str = ""  # the control plane's certificates (``tls``); "": plain (tests)
    etcd_host: str = "etcd"
    etcd_port: int = 2379
    haproxy: str = "haproxy"
    slots: int = SLOTS
    # where the supervisor takes each HAProxy's request lines (TCP, from HAProxy's ring)
    edge_listen: str = "127.0.0.1:5140"
    carbon: str = "carbon:2003"  # edge figures go here ("": nowhere)
    log_store: str = "logs:5514"  # request lines go here, in batches ("": nowhere)
    edge: bool = True  # log every request for the edge figures (off: only to measure their cost)
    mode: Mode = "single"  # how releases run: plain containers, or Swarm services (MODES)


def mode(text: str) -> Mode:
    """``CDLAB_PROXY_MODE``'s value; ``ValueError`` naming the expected ones."""
    for m in MODES:
        if text == m:
            return m
    raise ValueError(f"CDLAB_PROXY_MODE={text!r}: expected one of {', '.join(MODES)}")


def from_env(env: Mapping[str, str]) -> Settings:
    """``Settings`` from ``CDLAB_PROXY_*`` variables (and ``ETCD_HOST``/``ETCD_PORT``);
    ``ValueError`` for a mode it does not know."""
    d = Settings()
    return Settings(
        run_dir=env.get("CDLAB_PROXY_RUN_DIR", d.run_dir),
        bind=env.get("CDLAB_PROXY_BIND", d.bind),
        port_shift=int(env.get("CDLAB_PROXY_PORT_SHIFT", d.port_shift)),
        nameserver=env.get("CDLAB_PROXY_NAMESERVER", d.nameserver),
        runtime_port=int(env.get("CDLAB_PROXY_RUNTIME_PORT", d.runtime_port)),
        web_port=int(env.get("CDLAB_PROXY_WEB_PORT", d.web_port)),
        listen=env.get("CDLAB_PROXY_LISTEN", d.listen),
        runtime_listen=env.get("CDLAB_PROXY_RUNTIME_LISTEN", d.runtime_listen),
        tls_dir=env.get("CDLAB_PROXY_TLS_DIR", d.tls_dir),
        etcd_host=env.get("ETCD_HOST", d.etcd_host),
        etcd_port=int(env.get("ETCD_PORT", d.etcd_port)),
        haproxy=env.get("CDLAB_PROXY_HAPROXY", d.haproxy),
        edge_listen=env.get("CDLAB_PROXY_EDGE_LISTEN", d.edge_listen),
        carbon=env.get("CDLAB_PROXY_CARBON", d.carbon),
        log_store=env.get("CDLAB_PROXY_LOG_STORE", d.log_store),
        edge=env.get("CDLAB_PROXY_EDGE", "on") != "off",
        mode=mode(env.get("CDLAB_PROXY_MODE", d.mode)),
    )


@dataclass(frozen=True)
class Files:
    """One process's files: generation ``gen`` of service ``name``'s HAProxy."""

    config: str
    socket: str  # its admin socket (Runtime API, level admin)
    state: str  # the server-state file it starts from (empty: nothing to carry over)

    @staticmethod
    def of(settings: Settings, name: str, gen: int) -> Files:
        base = os.path.join(settings.run_dir, f"{name}.{gen}")
        return Files(base + ".cfg", base + ".sock", base + ".state")


def map_file(settings: Settings, service: str) -> str:
    """The match rule's map of ``service`` (one path for every generation: commands name it)."""
    return os.path.join(settings.run_dir, f"{service}.map")


def release_map(settings: Settings, service: str) -> str:
    """The slot map of ``service``: ``<backend>/<server>`` -> the release that slot serves; the
    proxy names the release that answered from it (X-Release, and the edge figures)."""
    return os.path.join(settings.run_dir, f"{service}.releases")


def slot_keys(service: str, settings: Settings) -> list[str]:
    """Every slot's key in the slot map (``<backend>/<server>``)."""
    return [f"{service}/r{i}" for i in range(1, settings.slots + 1)] + [
        f"{service}{MATCH_SUFFIX}/r{i}" for i in range(1, MATCH_SLOTS + 1)
    ]


def render_config(front: Frontend, settings: Settings, files: Files) -> str:
    """A service's haproxy.cfg: its frontend on its public port, its pool and its A/B backend.

    In ``swarm`` mode a replica on a node that died (its packets dropped: no refusal, no reset)
    costs no request. Every request opens its own connection (``http-reuse never``: one reused
    toward a dead node waits for an answer that never comes); a connect fails after 500 ms
    (``timeout connect``) and is sent again to another server (``option redispatch 1``); the
    checks alone take the dead replica out (2-3 s: a check's connect waits the smaller of
    ``timeout connect`` and ``inter``). No passive check (``observe layer4``): with the first
    failed connection taking a server out and 200 ms to connect, a loaded 2-core machine at
    300 req/s saw its healthy replicas marked DOWN at every deploy (a slot just resolved is
    one failure from DOWN), the pool empty, 9,390 requests failed in 10 deploys.

    A request already sent to a dead replica that is safe to send twice (``retry_safe``,
    below) waits ``front.try_timeout`` seconds for its answer (``set-timeout server``), then is
    asked again of another replica (``retry-on ... response-timeout``); any other request
    waits ``timeout server`` (30 s) as in ``single`` mode: cutting it short would only turn a
    slow answer into an error.

    In both modes a request is sent again after a connection failure whatever it is, but after
    a failure that may come once it arrived (an empty response, a timeout) only if it is safe
    to repeat (``retry_safe``): of an idempotent method (GET, HEAD, OPTIONS, PUT, DELETE) or
    carrying an ``Idempotency-Key`` header (the client's promise that its server takes it
    once); any other request (a POST, a PATCH) gets the proxy's error (``disable-l7-retry``)."""
    swarm = settings.mode == "swarm"
    match = front.name + MATCH_SUFFIX
    mapping = map_file(settings, front.name)
    releases = release_map(settings, front.name)
    lines = [
        "global",
        "    log stdout format raw local0 notice",
        # expose-fd listeners: the service's next process takes the listening socket over
        # (haproxy -x), so no connection waiting to be accepted is lost when it replaces this one
        f"    stats socket {files.socket} mode 600 level admin expose-fd listeners",
        "    maxconn 8192",
        "    hard-stop-after 30s",
        f"    server-state-file {files.state}",
        "",
        # the request lines (edge.py) wait in this buffer and go to the supervisor over TCP: a
        # supervisor busy for a moment loses none (a datagram socket dropped 12 % at 300 req/s)
        "ring edge",
        "    format raw",
        "    maxlen 1024",
        "    size 4194304",
        "    timeout connect 2s",
        "    timeout server 10s",
        f"    server supervisor {settings.edge_listen}",
        "",
        "resolvers docker",
        f"    nameserver dns {settings.nameserver}",
        # a release started again is a new container at a new address: HAProxy takes it at
        # the next lookup (every second), not after keeping the old one for a while
        "    hold valid 1s",
        "    hold obsolete 0s",
        "    timeout resolve 200ms",
        "    timeout retry 200ms",
        "    accepted_payload_size 8192",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option dontlognull",
        "    timeout connect 500ms" if swarm else "    timeout connect 2s",
        "    timeout client 60s",
        "    timeout server 30s",
        "    timeout http-keep-alive 60s",
        "    timeout queue 5s",
        # a health check's answer may take this long (connecting: at most ``inter``): an
        # overloaded release answers late, and the only live one taken out of the pool turns
        # slow answers into 503s (373 in 0.9 s at 1000 req/s on 2 cores, 1 s and fall 2)
        "    timeout check 2s",
        *(
            ("    option redispatch 1", "    http-reuse never")
            if swarm
            else ("    option redispatch",)
        ),
        "    retries 3",
        "    retry-on conn-failure empty-response" + (" response-timeout" if swarm else ""),
        # the slots as the process this one replaces left them (an empty file: none)
        "    load-server-state-from-file global",
        "",
        f"frontend {front.name}",
        f"    bind {settings.bind}:{front.public_port + settings.port_shift}",
        # matched requests (a header or cookie in the map) go to the A/B candidate while it
        # is up; the map is empty, and the rule costs nothing, until a deploy --match
        f"    use_backend {match} if {{ nbsrv({match}) gt 0 }} "
        f"{{ req.hdrs,map_reg({mapping}) -m found }}",
        f"    default_backend {front.name}",
        # identity at the edge: the release whose slot answered, from the slot map (kept by
        # the supervisor as it assigns slots), on every response, the proxy's own errors
        # included, whatever the release said; the same name goes into the request's log line
        "    http-after-response set-var(txn.srv) srv_name",
        "    http-after-response set-var(txn.slot) be_name,concat(/,txn.srv)",
        f"    http-after-response set-var(txn.release) var(txn.slot),map({releases})",
        "    http-after-response set-header X-Release %[var(txn.release)] "
        "if { var(txn.release) -m found } !{ var(txn.release) -m str -- - }",
        f"    http-after-response set-header X-Service {front.name}",
    ]
    if settings.edge:  # one line per request to the supervisor, which counts it (edge.py)
        lines += [
            "    log ring@edge local0 info",
            f'    log-format "{edge.LOG_FORMAT}"',
        ]
    for backend, count in ((front.name, settings.slots), (match, MATCH_SLOTS)):
        lines += [
            "",
            f"backend {backend}",
            "    balance roundrobin",
            f"    option httpchk GET {front.health}",
            "    http-check expect status 200",
            # sent twice only if that is safe (the docstring): a connection failure is retried
            # whatever the request, this rule is not asked then
            "    acl retry_safe method GET HEAD OPTIONS PUT DELETE",
            "    acl retry_safe req.hdr(idempotency-key) -m found",
            "    http-request disable-l7-retry unless retry_safe",
            *(
                (
                    f"    http-request set-timeout server {front.try_timeout}s if retry_safe",
                    # a request is sent again only if HAProxy holds all of it: a POST whose
                    # body came after its headers was answered 504, not retried, without this
                    "    option http-buffer-request",
                )
                if swarm
                else ()
            ),
            # a DOWN release is checked every 250 ms too: one started again (a new address)
            # is UP half a second after HAProxy learns the address; 3 failed checks in a row
            # (about 1.5 s) take one out. init-addr last: the address in the state file
            "    default-server check inter 1s fastinter 250ms downinter 250ms rise 2 fall 3 "
            "resolvers docker init-addr last,none resolve-prefer ipv4"
            + (f" maxconn {front.maxconn}" if front.maxconn else ""),
            f"    server-template r 1-{count} {PLACEHOLDER}:{front.port} disabled",
        ]
    return "\n".join(lines) + "\n"
