"""Deployable services: a folder under ``services/`` with a Dockerfile and a ``service.toml``.

The manifest (every field but ``name`` and ``port`` optional)::

    name = "quotes"               # lowercase, unique
    port = 9000                   # the TCP port its containers listen on
    public_port = 8001            # the proxy's frontend for it (8000-8008; published on 127.0.0.1)
    health = "/ready"             # readiness path: 200 means route me
    healthcheck = "wget -q -O- http://127.0.0.1:9000/ready"  # default: a python3 probe of health
    test_dockerfile = "Dockerfile.test"   # integration-test image (default when the file exists)
    test_command = "python3 -m quotes.selftest"  # or: run in the release's own image
    database = false              # true: DATABASE_URL points at the stack's Postgres
    retain = 5                    # releases kept in the registry for a rollback by digest
    health_timeout = 60           # seconds a starting release has to pass its health probe
    bake = 10                     # seconds the new release is watched after the switch (0: no
                                  # bake); if it fails, every request goes back to the previous
    [env]                         # extra environment of every container
    GREETING = "hello"
    [hooks]                       # run in a container of the candidate image, on the stack network
    pre_deploy = "python3 -m quotes.migrate"   # before the candidate starts; failure stops the run
    post_deploy = "python3 -m quotes.warm"     # after the switch
    [canary]                      # the judge's thresholds (see lab.release.judge.Thresholds)
    max_error_rate = 0.01
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.config import public_host
from lab.errors import ConfigError
from lab.ports import proxy
from lab.release.judge import Thresholds

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]*$")
PUBLIC_PORTS = range(8000, 8009)  # the proxy's service frontends (compose/stack.yml, topology)
CONTROL_PORT = 8009  # published by prod too: the naive negative control's container (lab.controls)
RESERVED_ENV = {"SERVICE_NAME", "RELEASE", "IMAGE", "PORT", "DATABASE_URL", "CARBON_HOST"}
_KNOWN = {
    "max_connections",
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
}


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

    @property
    def probe(self) -> str:
        """The container healthcheck command (CMD-SHELL)."""
        if self.healthcheck:
            return self.healthcheck
        url = f"http://127.0.0.1:{self.port}{self.health}"
        return f"python3 -c \"import urllib.request; urllib.request.urlopen('{url}', timeout=2)\""


def _int(doc: dict[str, Any], key: str, default: int | None, expected: str, source: str) -> int:
    value = doc.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(key, value, expected, source)
    return value


def _text(doc: dict[str, Any], key: str, expected: str, source: str) -> str:
    value = doc.get(key, "")
    if not isinstance(value, str):
        raise ConfigError(key, value, expected, source)
    return value.strip()


def parse(doc: dict[str, Any], folder: str, has: set[str], source: str) -> Service:
    """Validate a parsed manifest; ``has`` is the set of file names in the folder."""
    unknown = sorted(set(doc) - _KNOWN)
    if unknown:
        raise ConfigError(
            unknown[0], doc[unknown[0]], f"one of: {', '.join(sorted(_KNOWN))}", source
        )
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError("name", name, "a lowercase name like 'app'", source)
    port = _int(doc, "port", None, "the service's TCP port, e.g. 8000", source)
    if not 0 < port < 65536:
        raise ConfigError("port", port, "the service's TCP port, e.g. 8000", source)
    public = _int(
        doc, "public_port", 8000, f"a port in {PUBLIC_PORTS.start}-{PUBLIC_PORTS.stop - 1}", source
    )
    if public not in PUBLIC_PORTS:
        raise ConfigError(
            "public_port", public, f"a port in {PUBLIC_PORTS.start}-{PUBLIC_PORTS.stop - 1}", source
        )
    health = doc.get("health", "/health")
    if not isinstance(health, str) or not proxy.module("document").HEALTH.match(health):
        raise ConfigError(
            "health", health, "a path like '/health' (no space, quote, '#', '$' or '\\')", source
        )
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
    retain = _int(doc, "retain", 5, "how many releases to keep, 2 to 50", source)
    if not 2 <= retain <= 50:
        raise ConfigError("retain", retain, "how many releases to keep, 2 to 50", source)
    health_timeout = _int(doc, "health_timeout", 60, "seconds, 1 to 600", source)
    if not 1 <= health_timeout <= 600:
        raise ConfigError("health_timeout", health_timeout, "seconds, 1 to 600", source)
    expected = "requests at a time per release, 1 to 10000, or 0 for no limit"
    max_connections = _int(doc, "max_connections", 0, expected, source)
    if not 0 <= max_connections <= 10000:
        raise ConfigError("max_connections", max_connections, expected, source)
    bake = doc.get("bake", 10)
    if isinstance(bake, bool) or not isinstance(bake, int | float) or not 0 <= bake <= 600:
        raise ConfigError("bake", bake, "seconds from 0 (no bake window) to 600", source)
    env = doc.get("env", {})
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and _ENV.match(k) and k not in RESERVED_ENV and isinstance(v, str)
        for k, v in env.items()
    ):
        raise ConfigError(
            "env",
            env,
            f'a table of NAME = "value" strings (names not in {", ".join(sorted(RESERVED_ENV))})',
            source,
        )
    hooks = doc.get("hooks", {})
    if not isinstance(hooks, dict) or set(hooks) - {"pre_deploy", "post_deploy"}:
        raise ConfigError("hooks", hooks, "a table with pre_deploy and/or post_deploy", source)
    return Service(
        name,
        folder,
        port,
        health,
        test,
        public,
        _text(doc, "healthcheck", "a shell command, e.g. 'curl -fsS http://127.0.0.1:80/'", source),
        _text(doc, "test_command", "a shell command run in the release image", source),
        database,
        retain,
        tuple(sorted(env.items())),
        _text(hooks, "pre_deploy", "a shell command", f"{source} [hooks]"),
        _text(hooks, "post_deploy", "a shell command", f"{source} [hooks]"),
        _thresholds(doc.get("canary", {}), f"{source} [canary]"),
        health_timeout,
        max_connections,
        float(bake),
    )


def _thresholds(doc: Any, source: str) -> Thresholds:
    fields = {f.name: f.type for f in dataclasses.fields(Thresholds)}
    if not isinstance(doc, dict) or set(doc) - set(fields):
        raise ConfigError("canary", doc, f"a table with some of: {', '.join(fields)}", source)
    for key, value in doc.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(key, value, "a number >= 0", source)
        if fields[key] == "int" and not isinstance(value, int):
            raise ConfigError(key, value, "a whole number", source)
    return Thresholds(**doc)


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
    return f"http://{public_host()}:{service.public_port}"
