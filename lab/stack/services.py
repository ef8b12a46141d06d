"""Deployable services: a folder under ``services/`` with a Dockerfile and a ``service.toml``.

The manifest (every field but ``name`` and ``port`` optional; ``services/service.schema.json``
describes each field for an editor, and ``tests/unit/test_service_schema.py`` keeps it and
``parse`` in agreement)::

    #:schema ../service.schema.json   # the schema, for an editor (Taplo, Even Better TOML)
    name = "quotes"               # lowercase, 1-31 letters, digits and '-'; unique
    port = 9000                   # the TCP port its containers listen on, 1-65535
    public_port = 8001            # the proxy's frontend for it (8000-8008; published on 127.0.0.1)
    health = "/ready"             # readiness path: 200 means route me (a URL path, see below)
    healthcheck = "wget -q -O- http://127.0.0.1:9000/ready"  # default: a python3 probe of health
    test_dockerfile = "Dockerfile.test"   # integration-test image (default when the file exists)
    test_command = "python3 -m quotes.selftest"  # or: run in the release's own image
    database = false              # true: DATABASE_URL points at the stack's Postgres
    retain = 5                    # releases kept in the registry for a rollback by digest, 2-50
    health_timeout = 60           # seconds a starting release has to pass its health probe, 1-600
    bake = 10                     # seconds the new release is watched after the switch (0: no
                                  # bake, at most 600); if it fails, every request goes back
    max_connections = 0           # requests the proxy sends one release at a time (0: no limit)
    try_timeout = 3               # on a swarm prod, seconds a replica has to answer before the
                                  # proxy asks another (1-300); a single host waits 30, once
    replicas = 3                  # replicas per release on a swarm prod, 1 to 8 (absent: one per
                                  # ready node; a single-host prod runs one container)
    [env]                         # extra environment of every container
    GREETING = "hello"
    [hooks]                       # run in a container of the candidate image, on the apps network
    pre_deploy = "python3 -m quotes.migrate"   # before the candidate starts; failure stops the run
    post_deploy = "python3 -m quotes.warm"     # after the switch
    [migrate]                     # schema migrations (needs database = true), each a shell
                                  # command run in a one-off container of a release's image
                                  # with its DATABASE_URL; a version is the first word of the
                                  # last line a command prints ("": none yet)
    command = "alembic upgrade head"         # migrate to what the image's code needs
    current = "alembic current"              # print the database's version
    head = "alembic heads"                   # print the version the image's code needs
    downgrade = "alembic downgrade {version}"  # optional: back to {version} (--migrate-down)
    files = ["migrations", "alembic.ini"]    # optional: what decides the version the code
                                  # needs; a commit that changes none of them (nor the manifest)
                                  # needs what the live release needs: no container asks
    [canary]                      # the judge's thresholds (see lab.release.judge.Thresholds)
    max_error_rate = 0.01
    [load]                        # GET paths for the lab's load generator (absent: its mix)
    paths = ["/", "/simple/?page=2"]
    [limits]                      # each of its containers' bounds (lab.stack.limits); absent:
    memory = "256m"               # 256m of memory and no swap, 256 pids, no CPU cap
    pids = 256
    cpus = 1.5

A URL path (``health``, each of ``[load] paths``) is ``cdlab_proxy.document.PATH``: '/', then
letters, digits, ``-._~/!&()*+;=@`` and '%' with two hex digits; no space, tab, line break,
',', ':', '#', '$', quote or backslash; at most 200 characters. A load path may end in a query
string: '?', then letters, digits, ``-._~=&`` and '%' with two hex digits; ``health`` may not.
Commands (``healthcheck``, ``test_command``, hooks) and ``[env]`` values are strings without
a line break or NUL. A key the manifest does not define is refused, with the nearest known key.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from math import inf
from pathlib import Path
from typing import Any

from lab.config import public_host, public_port
from lab.errors import ConfigError, UnknownKey
from lab.ports import proxy
from lab.release.judge import Thresholds
from lab.stack import limits as _limits
from lab.stack.limits import Limits

_ENV = re.compile(r"\A[A-Z_][A-Z0-9_]*\Z")
_FILE = re.compile(r"\A[A-Za-z0-9_.-][A-Za-z0-9_./-]{0,199}\Z")  # a relative path
_BREAK = re.compile(r"[\n\r\x00]")  # what no string of a manifest may hold
_QUERY = r"(?:\?(?:[A-Za-z0-9._~=&-]|%[0-9A-Fa-f]{2})*)?"  # a load path's query string
CONTROL_PORT = 8009  # published by prod too: the naive negative control's container (lab.controls)
RESERVED_ENV = {"SERVICE_NAME", "RELEASE", "IMAGE", "PORT", "DATABASE_URL", "CARBON_HOST"}
MAX_LOAD_PATHS = 20
MAX_REPLICAS = 8  # replicas per release: the proxy's slot count depends on it
_KNOWN = frozenset(
    {
        "max_connections",
        "try_timeout",
        "replicas",
        "name",
        "port",
        "public_port",
        "health",
        "healthcheck",
        "test_dockerfile",
        "test_command",
        "database",
        "retain",
        "health_timeout",
        "bake",
        "env",
        "hooks",
        "canary",
        "load",
        "migrate",
        "limits",
    }
)
# the keys of each table but [env] (whose keys are environment variables)
_TABLES = {
    "hooks": frozenset({"pre_deploy", "post_deploy"}),
    "canary": frozenset(f.name for f in dataclasses.fields(Thresholds)),
    "load": frozenset({"paths"}),
    "migrate": frozenset({"command", "current", "head", "downgrade", "files"}),
    "limits": _limits.KEYS,
}
VERSION = "{version}"  # where [migrate] downgrade takes the version to go back to
_COMMAND = "a shell command on one line (no line break or NUL)"
_LOAD_FORM = (
    "a GET path: a URL path as for 'health', then optionally '?' and a query string of "
    "letters, digits, '-._~=&' and '%' with two hex digits; at most 200 characters, e.g. "
    "'/simple/?page=2'"
)


@dataclass(frozen=True)
class Migration:
    """How a service's schema moves (``[migrate]``): shell commands run in a one-off container
    of a release's image on the apps network, with the database's address."""

    command: str  # migrate to what the image's code needs; its failure changes nothing
    current: str  # prints the database's version
    head: str  # prints the version the image's code needs
    downgrade: str = ""  # back to VERSION; "": none
    files: tuple[str, ...] = ()  # paths in the service folder that decide ``head``'s answer


@dataclass(frozen=True)
class Service:
    name: str
    folder: str  # relative to the repository root
    port: int
    health: str = "/health"  # path of the readiness endpoint
    test_dockerfile: str | None = None  # the integration-test image's Dockerfile, if any
    public_port: int = 8000
    healthcheck: str = ""  # shell command run in the container; "" = python3 probe of health
    test_command: str = ""  # integration tests run in the release's own image
    database: bool = False
    retain: int = 5
    env: tuple[tuple[str, str], ...] = ()
    pre_deploy: str = ""
    post_deploy: str = ""
    thresholds: Thresholds = field(default_factory=Thresholds)
    health_timeout: int = 60  # seconds a starting release has to pass its probe
    max_connections: int = 0  # requests the proxy sends one release at a time; 0: no limit
    bake: float = 10.0  # seconds the new release is watched after the switch; 0: no bake
    load_paths: tuple[str, ...] = ()  # for the load generator; (): its default mix
    migration: Migration | None = None  # [migrate]; None: the schema is not cdlab's business
    limits: Limits = field(default_factory=Limits)  # [limits]: each of its containers' bounds
    replicas: int | None = None  # per release on a swarm prod; None: one per ready node
    try_timeout: int = 3  # seconds a replica has to answer before the proxy asks another (swarm)

    @property
    def probe(self) -> str:
        """The container healthcheck command (CMD-SHELL)."""
        return self.healthcheck or http_probe(self.port, self.health)


def http_probe(port: int, path: str) -> str:
    """A shell command that passes only when ``path`` on ``port`` answers exactly 200, without
    following a redirect (the check HAProxy makes: ``http-check expect status 200``), and
    prints the status. A raw request from an isolated python3 without ``site`` (``-I -S``):
    Docker runs it every few seconds in every release's container, and one that imports
    urllib took about twice the CPU (0.26 s against 0.14 s a probe on a loaded 2-core
    machine, where a 3-node lab runs 18 replicas)."""
    code = (
        "import socket,sys;"
        f"s=socket.create_connection(('127.0.0.1',{port}),2);s.settimeout(2);"
        f"s.sendall(b'GET {path} HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n');"
        "w=s.makefile('rb').readline().split();print(b' '.join(w[:2]).decode());"
        "sys.exit(0 if w[1:2]==[b'200'] else 1)"
    )
    return f'python3 -I -S -c "{code}"'


def _int(
    doc: dict[str, Any], key: str, default: int | None, allowed: range, expected: str, source: str
) -> int:
    value = doc.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value not in allowed:
        raise ConfigError(key, value, expected, source)
    return value


def _text(doc: dict[str, Any], key: str, expected: str, source: str) -> str:
    value = doc.get(key, "")
    if not isinstance(value, str) or _BREAK.search(value):
        raise ConfigError(key, value, expected, source)
    return value.strip()


def _only(doc: dict[str, Any], known: frozenset[str], source: str) -> None:
    """Refuse the first key of ``doc`` that is not ``known``, naming the nearest known one."""
    unknown = sorted(set(doc) - known)
    if unknown:
        key = unknown[0]
        nearest = difflib.get_close_matches(key, sorted(known), n=1)
        raise UnknownKey(key, doc[key], sorted(known), source, nearest[0] if nearest else "")


def _table(doc: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    """``doc[key]`` ({} when absent): a table of none but its known keys."""
    table = doc.get(key, {})
    known = _TABLES[key]
    if not isinstance(table, dict):
        raise ConfigError(key, table, f"a table with some of: {', '.join(sorted(known))}", source)
    _only(table, known, f"{source} [{key}]")
    return table


@cache
def _load_path() -> re.Pattern[str]:
    """A load path: the proxy's URL path, then optionally a query string."""
    return re.compile(rf"\A(?=.{{1,200}}\Z){proxy.module('document').PATH}{_QUERY}\Z")


def parse(doc: dict[str, Any], folder: str, has: set[str], source: str) -> Service:
    """Validate a parsed manifest, every field; ``has`` is the set of file names in the folder.
    A bad value raises ``ConfigError`` naming the field, the value, the expected form and
    ``source``; a key the manifest does not define raises ``UnknownKey``."""
    shared = proxy.module("document")  # the rules the proxy reads its frontend document with
    _only(doc, _KNOWN, source)
    name = doc.get("name")
    if not isinstance(name, str) or not shared.NAME.match(name):
        raise ConfigError("name", name, shared.NAME_FORM, source)
    port = _int(doc, "port", None, range(1, 65536), "the service's TCP port, 1-65535", source)
    ports = shared.PUBLIC_PORTS
    public = _int(
        doc, "public_port", 8000, ports, f"a port in {ports.start}-{ports.stop - 1}", source
    )
    health = doc.get("health", "/health")
    if not isinstance(health, str) or not shared.HEALTH.match(health):
        raise ConfigError("health", health, shared.PATH_FORM, source)
    if "Dockerfile" not in has:
        raise ConfigError(
            "Dockerfile", f"{folder}/Dockerfile", "a Dockerfile in the service folder", source
        )
    test = doc.get("test_dockerfile", "Dockerfile.test" if "Dockerfile.test" in has else None)
    if test is not None and (not isinstance(test, str) or test not in has):
        raise ConfigError("test_dockerfile", test, f"a file in {folder}", source)
    database = doc.get("database", False)
    if not isinstance(database, bool):
        raise ConfigError("database", database, "true or false", source)
    retain = _int(doc, "retain", 5, range(2, 51), "how many releases to keep, 2 to 50", source)
    health_timeout = _int(doc, "health_timeout", 60, range(1, 601), "seconds, 1 to 600", source)
    most = shared.MAX_CONNECTIONS
    max_connections = _int(
        doc,
        "max_connections",
        0,
        range(most + 1),
        f"requests at a time per release, 1 to {most}, or 0 for no limit",
        source,
    )
    tries = shared.TRY_TIMEOUTS
    try_timeout = _int(
        doc,
        "try_timeout",
        shared.TRY_TIMEOUT,
        tries,
        f"seconds a replica has to answer before the proxy asks another, {tries.start} to "
        f"{tries.stop - 1}",
        source,
    )
    bake = doc.get("bake", 10)
    if isinstance(bake, bool) or not isinstance(bake, int | float) or not 0 <= bake <= 600:
        raise ConfigError("bake", bake, "seconds from 0 (no bake window) to 600", source)
    replicas: int | None = None  # absent: one per ready node of a swarm
    if "replicas" in doc:
        form = f"replicas per release, 1 to {MAX_REPLICAS}"
        replicas = _int(doc, "replicas", None, range(1, MAX_REPLICAS + 1), form, source)
    hooks = _table(doc, "hooks", source)
    return Service(
        name,
        folder,
        port,
        health,
        test,
        public,
        _text(doc, "healthcheck", f"{_COMMAND}, e.g. 'curl -fsS http://127.0.0.1:80/'", source),
        _text(doc, "test_command", f"{_COMMAND}, run in the release image", source),
        database,
        retain,
        _env(doc, source),
        _text(hooks, "pre_deploy", _COMMAND, f"{source} [hooks]"),
        _text(hooks, "post_deploy", _COMMAND, f"{source} [hooks]"),
        _thresholds(_table(doc, "canary", source), f"{source} [canary]"),
        health_timeout,
        max_connections,
        float(bake),
        _load_paths(doc, source),
        _migration(doc, database, source),
        _limits.parse(doc.get("limits", {}), source),
        replicas,
        try_timeout,
    )


def _env(doc: dict[str, Any], source: str) -> tuple[tuple[str, str], ...]:
    env = doc.get("env", {})
    names = (
        "a table of NAME = \"value\": names of A-Z, 0-9 and '_', not starting with a digit, "
        f"none of {', '.join(sorted(RESERVED_ENV))}"
    )
    if not isinstance(env, dict):
        raise ConfigError("env", env, names, source)
    for key in env:
        if not _ENV.match(key) or key in RESERVED_ENV:
            raise ConfigError("env", key, names, source)
        _text(env, key, "a string on one line (no line break or NUL)", f"{source} [env]")
    return tuple(sorted(env.items()))


def _thresholds(doc: dict[str, Any], source: str) -> Thresholds:
    kinds = {f.name: f.type for f in dataclasses.fields(Thresholds)}
    for key, value in doc.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < inf:
            raise ConfigError(key, value, "a number >= 0", source)
        if kinds[key] == "int" and not isinstance(value, int):
            raise ConfigError(key, value, "a whole number >= 0", source)
    return Thresholds(**doc)


def _migration(doc: dict[str, Any], database: bool, source: str) -> Migration | None:
    if "migrate" not in doc:
        return None
    where = f"{source} [migrate]"
    table = _table(doc, "migrate", source)
    if not database:
        raise ConfigError(
            "migrate", table, "no [migrate] table, or database = true (it migrates that)", source
        )
    needed = {
        "command": "the shell command that migrates, e.g. 'alembic upgrade head'",
        "current": "a shell command printing the database's version, e.g. 'alembic current'",
        "head": "a shell command printing the version the code needs, e.g. 'alembic heads'",
    }
    found = {}
    for key, expected in needed.items():
        found[key] = _text(table, key, f"{expected}; one line", where)
        if not found[key]:
            raise ConfigError(key, table.get(key), expected, where)
    down = _text(table, "downgrade", _COMMAND, where)
    if down and VERSION not in down:
        raise ConfigError(
            "downgrade",
            down,
            f"a shell command with {VERSION} where the version to go back to goes, e.g. "
            f"'alembic downgrade {VERSION}'",
            where,
        )
    files = table.get("files", [])
    form = (
        'a list of up to 20 paths in the service folder, e.g. ["migrations", "alembic.ini"]: '
        "relative, no '..'"
    )
    if not isinstance(files, list) or len(files) > 20:
        raise ConfigError("files", files, form, where)
    for i, path in enumerate(files):
        if not isinstance(path, str) or not _FILE.match(path) or ".." in path.split("/"):
            raise ConfigError(f"files[{i}]", path, form, where)
    return Migration(found["command"], found["current"], found["head"], down, tuple(files))


def _load_paths(doc: dict[str, Any], source: str) -> tuple[str, ...]:
    if "load" not in doc:
        return ()
    where = f"{source} [load]"
    paths = _table(doc, "load", source).get("paths")
    if not isinstance(paths, list) or not 1 <= len(paths) <= MAX_LOAD_PATHS:
        expected = f'a list of 1 to {MAX_LOAD_PATHS} GET paths, e.g. ["/", "/simple/"]'
        raise ConfigError("paths", paths, expected, where)
    for i, path in enumerate(paths):
        if not isinstance(path, str) or not _load_path().match(path):
            raise ConfigError(f"paths[{i}]", path, _LOAD_FORM, where)
        if path in paths[:i]:
            raise ConfigError(f"paths[{i}]", path, "a path not listed before it", where)
    return tuple(paths)


def load(root: Path, name: str) -> Service:
    folder = root / "services" / name
    manifest = folder / "service.toml"
    if not manifest.exists():
        raise ConfigError(
            "service",
            name,
            f"one of: {', '.join(names(root))} (a folder under services/ with a service.toml)",
        )
    try:
        doc = tomllib.loads(manifest.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("service.toml", str(manifest), f"valid TOML ({exc})") from exc
    has = {p.name for p in folder.iterdir()}
    return parse(doc, f"services/{name}", has, str(manifest.relative_to(root)))


def names(root: Path) -> list[str]:
    return sorted(p.parent.name for p in (root / "services").glob("*/service.toml"))


def load_all(root: Path) -> list[Service]:
    """Every deployable service; two claiming one public port is an error."""
    out = [load(root, n) for n in names(root)]
    seen: dict[int, str] = {}
    for svc in out:
        if svc.public_port in seen:
            raise ConfigError(
                "public_port",
                svc.public_port,
                f"a port no other service uses ({seen[svc.public_port]} has it)",
                f"services/{svc.name}/service.toml",
            )
        seen[svc.public_port] = svc.name
    return out


def at_commit(root: Path, sha: str, name: str, files: dict[str, bytes]) -> Service:
    """The manifest of ``name`` as committed at ``sha`` (``files``: ``lab.git.files`` of its
    folder), not as it is in the working tree."""
    folder = f"services/{name}"
    source = f"{folder}/service.toml at {sha[:12]}"
    raw = files.get(f"{folder}/service.toml")
    if raw is None:
        raise ConfigError(
            "service", name, f"one of: {', '.join(names(root))} (committed with a service.toml)"
        )
    try:
        doc = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("service.toml", source, f"valid TOML ({exc})") from exc
    top = {p[len(folder) + 1 :] for p in files if "/" not in p[len(folder) + 1 :]}
    return parse(doc, folder, top, source)


def public_url(service: Service) -> str:
    """The service through the proxy (its frontend port on prod, published on 127.0.0.1)."""
    return f"http://{public_host()}:{public_port(service.public_port)}"


def control_url() -> str:
    """The negative controls' container (``CONTROL_PORT``, no proxy in front) from here."""
    return f"http://{public_host()}:{public_port(CONTROL_PORT)}"
