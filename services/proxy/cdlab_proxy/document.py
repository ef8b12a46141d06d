"""The two documents the lab writes to etcd and the proxy reads, defined once for both sides.

A service's ROUTES, at ``/cdlab/routes/<service>``: the releases in its pool, with their weights
and drain state, and optionally a candidate serving matched requests only (A/B)::

    {"service": "app",
     "servers": [{"release": "3f9c2e1a0b1c", "host": "app-3f9c2e1a0b1c",
                  "weight": 100, "drain": false},
                 {"release": "5d1e0c9b8a7f", "host": "app-5d1e0c9b8a7f",
                  "weight": 0, "drain": false, "replicas": 3}],
     "match": {"kind": "header", "name": "X-Canary", "value": "1",
               "release": "5d1e0c9b8a7f", "host": "app-5d1e0c9b8a7f"}}

A server's ``replicas`` says how the release runs: absent or 0, one plain container whose DNS
name is ``host`` (one slot in the proxy); K from 1 to ``MAX_REPLICAS``, a Swarm service of K
replicas: K slots, all named ``tasks.<host>``, the name Docker's DNS answers with the address of
every healthy task (``fqdn``). ``host`` stays the release's identity either way. A document
without the key is read as it always was, and one whose servers all have 0 is written without
it, byte for byte as before. The candidate on matched requests runs as its server in the pool
(the one with its host) does.

A service's FRONTEND, at ``/cdlab/frontends/<service>``: the proxy runs one HAProxy for it while
the document exists::

    {"name": "quotes", "public_port": 8001, "port": 9000, "health": "/ready", "maxconn": 0,
     "try_timeout": 3}

``try_timeout``: on a swarm, the seconds the proxy waits for a replica's answer before it asks
another replica (a request safe to ask again: see ``config.render_config``); a document without
it (written by an older cdlab) reads as ``TRY_TIMEOUT``.

DRAINED addresses, at ``/cdlab/drained/<key>`` (a node's name, say): while the document exists,
every slot at one of its addresses drains, whatever its release (the replicas of a node about to
restart); once it is deleted they serve again, unless their release drains::

    {"addrs": ["10.100.201.7", "10.100.201.9"], "why": "restart of prod-2"}

``parse_*`` validate a decoded document (``DocumentError`` names the field, the value and the
expected form); ``*_doc`` give the JSON-ready form. Keys a reader does not know are ignored, so
a newer writer does not stop an older reader. Standard library only.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

ROUTES_PREFIX = "/cdlab/routes/"
FRONTENDS_PREFIX = "/cdlab/frontends/"
DRAINED_PREFIX = "/cdlab/drained/"
PUBLIC_PORTS = range(8000, 8009)  # published by the proxy's container (compose/stack.yml)
MAX_WEIGHT = 256
MAX_CONNECTIONS = 10000
TRY_TIMEOUT = 3  # seconds; what a frontend document without ``try_timeout`` means
TRY_TIMEOUTS = range(1, 301)
TRY_TIMEOUT_FORM = (
    f"seconds a replica has to answer, {TRY_TIMEOUTS.start} to {TRY_TIMEOUTS.stop - 1}"
)
MAX_REPLICAS = 8  # a release's replicas: the proxy's slot counts are sized for it (slots.py)
TASKS = "tasks."  # Docker's DNS name of every healthy task of a service: tasks.<service>
REPLICAS_FORM = (
    f"an integer 0-{MAX_REPLICAS}: 0 for a plain container, else the replicas of the release's "
    "Swarm service"
)

# a service's name (its folder under services/): 1 to 31 characters
NAME = re.compile(r"\A[a-z](?:[a-z0-9-]{0,29}[a-z0-9])?\Z")
NAME_FORM = (
    "a lowercase name like 'app': 1 to 31 letters, digits and '-', starting with a letter, "
    "not ending with '-'"
)
RELEASE = re.compile(r"\A[A-Za-z0-9_.-]{1,64}\Z")
MATCH_RELEASE = re.compile(r"\A[0-9a-f]{12}\Z")  # a release id: a commit's short sha
HOST = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,252}\Z")  # a DNS name on the stack network
TOKEN = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")  # a header or cookie name
VALUE = re.compile(r"\A[A-Za-z0-9_.-]{1,128}\Z")  # a header or cookie value
# A URL path (the source of HEALTH; the lab's load paths add a query string to it): '/', then
# RFC 3986 path characters less those that a reader of the path treats specially. It becomes a
# word of HAProxy's configuration (``option httpchk GET <path>``: space and tab end a word, '#'
# starts a comment, '$' a variable, quotes and '\' quote), a string inside the shell and Python
# quotes of the container's probe, and a column of the proxy's status table. Kept: unreserved
# characters, '%' with two hex digits, '/' and ``! & ( ) * + ; = @``. Refused also: ',', ':',
# '?' and every control character (a line break ends any of those).
PATH = r"/(?:[A-Za-z0-9._~!&()*+;=@/-]|%[0-9A-Fa-f]{2})*"
HEALTH = re.compile(rf"\A(?=.{{1,200}}\Z){PATH}\Z")  # a readiness path, at most 200 characters
PATH_FORM = (
    "a URL path like '/health' of at most 200 characters: '/', then letters, digits, "
    "\"-._~/!&()*+;=@\" and '%' with two hex digits (no space, tab, line break, ',', ':', '?', "
    "'#', '$', quote or backslash)"
)


class DocumentError(ValueError):
    """A document that is not in the agreed form: ``field`` (a path such as
    ``routes[app].servers[0].weight``), the ``value`` found and the ``expected`` form."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"bad value for '{field}': {value!r}; expected {expected}")


@dataclass(frozen=True)
class Server:
    """A release in a service's pool."""

    release: str
    host: str  # the release's DNS name on the stack network (its service's, on a swarm)
    weight: int  # 0..MAX_WEIGHT
    drain: bool = False
    replicas: int = 0  # 0: a plain container; K: a Swarm service of K replicas (K slots)


def fqdn(server: Server) -> str:
    """The name the proxy's slots of ``server`` resolve: ``host`` for a plain container,
    ``tasks.<host>`` (every healthy replica's address) for a Swarm service."""
    return TASKS + server.host if server.replicas else server.host


def names(host: str) -> tuple[str, str]:
    """Every name a slot of the release named ``host`` may carry (the lab's client looks its
    slots up by host, whatever the release runs as)."""
    return host, TASKS + host


@dataclass(frozen=True)
class Match:
    """Requests carrying header (or cookie) ``name`` with exactly ``value`` go to ``release``."""

    kind: str  # "header" or "cookie"
    name: str
    value: str
    release: str
    host: str


@dataclass(frozen=True)
class Routes:
    service: str
    servers: tuple[Server, ...] = ()
    match: Match | None = None


@dataclass(frozen=True)
class Frontend:
    """What one service's HAProxy is made from."""

    name: str
    public_port: int  # the frontend's port in the proxy's container (PUBLIC_PORTS)
    port: int  # the service's own port in its containers
    health: str = "/health"  # the readiness path the proxy checks
    maxconn: int = 0  # requests sent to one release at a time (0: no limit)
    try_timeout: int = TRY_TIMEOUT  # seconds per try for an answer, on a swarm (TRY_TIMEOUTS)


def decode(raw: bytes | None, field: str) -> object:
    """A stored value as JSON (None when there is none)."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DocumentError(field, raw[:80], f"a JSON object ({exc})") from exc


def _text(doc: dict[str, Any], key: str, pattern: re.Pattern[str], field: str, form: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not pattern.match(value):
        raise DocumentError(f"{field}.{key}", value, form)
    return value


def _int(doc: dict[str, Any], key: str, allowed: range, field: str, form: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value not in allowed:
        raise DocumentError(f"{field}.{key}", value, form)
    return value


def parse_routes(doc: object, service: str) -> Routes:
    """A service's route document (None: no routes yet)."""
    field = f"routes[{service}]"
    if doc is None:
        return Routes(service)
    if not isinstance(doc, dict) or doc.get("service") != service:
        raise DocumentError(field, doc, f"an object with service={service!r}")
    raw = doc.get("servers")
    raw = [] if raw is None else raw
    if not isinstance(raw, list):
        raise DocumentError(f"{field}.servers", raw, "a list of servers")
    servers: list[Server] = []
    for i, s in enumerate(raw):
        at = f"{field}.servers[{i}]"
        if not isinstance(s, dict):
            raise DocumentError(at, s, "an object with release, host, weight and drain")
        server = Server(
            _text(s, "release", RELEASE, at, "a release id (letters, digits, '.', '-', '_')"),
            _text(s, "host", HOST, at, "a DNS name such as 'app-3f9c2e1a0b1c'"),
            _int(s, "weight", range(MAX_WEIGHT + 1), at, f"an integer 0-{MAX_WEIGHT}"),
            s.get("drain", False),
            _int(s, "replicas", range(MAX_REPLICAS + 1), at, REPLICAS_FORM)
            if "replicas" in s
            else 0,
        )
        if not isinstance(server.drain, bool):
            raise DocumentError(f"{at}.drain", server.drain, "true or false")
        if server.host in {p.host for p in servers}:
            raise DocumentError(f"{at}.host", server.host, "a host not already in the pool")
        servers.append(server)
    m = doc.get("match")
    if not m:
        return Routes(service, tuple(servers))
    at = f"{field}.match"
    if not isinstance(m, dict):
        raise DocumentError(at, m, "an object with kind, name, value, release and host")
    if m.get("kind") not in ("header", "cookie"):
        raise DocumentError(f"{at}.kind", m.get("kind"), "'header' or 'cookie'")
    match = Match(
        m["kind"],
        _text(m, "name", TOKEN, at, "a name of letters, digits, '-' and '_'"),
        _text(m, "value", VALUE, at, "a value of letters, digits, '.', '-' and '_'"),
        _text(m, "release", MATCH_RELEASE, at, "a release id (12 hex digits)"),
        _text(m, "host", HOST, at, "a DNS name such as 'app-3f9c2e1a0b1c'"),
    )
    return Routes(service, tuple(servers), match)


def routes_doc(routes: Routes) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "service": routes.service,
        "servers": [_server_doc(s) for s in routes.servers],
    }
    if routes.match is not None:
        m = routes.match
        doc["match"] = {
            "kind": m.kind,
            "name": m.name,
            "value": m.value,
            "release": m.release,
            "host": m.host,
        }
    return doc


def _server_doc(s: Server) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "release": s.release,
        "host": s.host,
        "weight": s.weight,
        "drain": s.drain,
    }
    if s.replicas:  # only then: an older reader ignores it, a one-node document is unchanged
        doc["replicas"] = s.replicas
    return doc


def parse_frontend(doc: object, service: str) -> Frontend:
    """A service's frontend document; its ``name`` must be ``service`` (the key's last part)."""
    field = f"frontends[{service}]"
    if not isinstance(doc, dict) or doc.get("name") != service:
        raise DocumentError(field, doc, f"an object with name={service!r}")
    if not NAME.match(service):
        raise DocumentError(f"{field}.name", service, NAME_FORM)
    ports = f"a port in {PUBLIC_PORTS.start}-{PUBLIC_PORTS.stop - 1}"
    return Frontend(
        service,
        _int(doc, "public_port", PUBLIC_PORTS, field, ports),
        _int(doc, "port", range(1, 65536), field, "the service's TCP port, 1-65535"),
        _text(doc, "health", HEALTH, field, PATH_FORM),
        _int(
            doc,
            "maxconn",
            range(MAX_CONNECTIONS + 1),
            field,
            f"requests at a time per release, 0 (no limit) to {MAX_CONNECTIONS}",
        ),
        _int(doc, "try_timeout", TRY_TIMEOUTS, field, TRY_TIMEOUT_FORM)
        if "try_timeout" in doc
        else TRY_TIMEOUT,
    )


def frontend_doc(frontend: Frontend) -> dict[str, Any]:
    return {
        "name": frontend.name,
        "public_port": frontend.public_port,
        "port": frontend.port,
        "health": frontend.health,
        "maxconn": frontend.maxconn,
        "try_timeout": frontend.try_timeout,
    }


def changes(old: Frontend, new: Frontend) -> str:
    """What differs between two frontends, for people: ``public port 8001 -> 8002, ...``."""
    fields = (
        ("public port", old.public_port, new.public_port),
        ("port", old.port, new.port),
        ("health path", old.health, new.health),
        ("maxconn", old.maxconn, new.maxconn),
        ("try timeout", old.try_timeout, new.try_timeout),
    )
    return ", ".join(f"{name} {a} -> {b}" for name, a, b in fields if a != b) or "nothing"


@dataclass(frozen=True)
class Drained:
    """Addresses whose slots drain in every pool while the document ``key`` exists."""

    key: str  # the part of the document's key after DRAINED_PREFIX
    addrs: tuple[str, ...]
    why: str = ""  # for people: what the addresses are taken out for


def _ipv4(text: object) -> bool:
    try:
        return isinstance(text, str) and str(ipaddress.IPv4Address(text)) == text
    except ValueError:
        return False


def parse_drained(doc: object, key: str) -> Drained:
    """A drained-addresses document (``key``: the part of its key after ``DRAINED_PREFIX``)."""
    field = f"drained[{key}]"
    if not isinstance(doc, dict):
        raise DocumentError(field, doc, 'an object like {"addrs": ["10.0.9.3"], "why": "..."}')
    addrs = doc.get("addrs")
    if not isinstance(addrs, list) or not all(_ipv4(a) for a in addrs):
        raise DocumentError(f"{field}.addrs", addrs, "a list of IPv4 addresses like '10.0.9.3'")
    why = doc.get("why", "")
    if not isinstance(why, str) or len(why) > 200 or not why.isprintable():
        raise DocumentError(f"{field}.why", why, "one line of text, at most 200 characters")
    return Drained(key, tuple(addrs), why)


def drained_doc(drained: Drained) -> dict[str, Any]:
    return {"addrs": list(drained.addrs), "why": drained.why}
