"""Deployable services: a folder under ``services/`` with a Dockerfile and a ``service.toml``."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.errors import ConfigError

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


@dataclass(frozen=True)
class Service:
    name: str
    folder: str  # relative to the repository root
    port: int
    health: str  # path of the readiness endpoint
    test_dockerfile: str | None  # the integration-test image's Dockerfile, if any


def parse(doc: dict[str, Any], folder: str, has: set[str], source: str) -> Service:
    """Validate a parsed manifest; ``has`` is the set of file names in the folder."""
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError("name", name, "a lowercase name like 'app'", source)
    port = doc.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ConfigError("port", port, "the service's TCP port, e.g. 8000", source)
    health = doc.get("health", "/health")
    if not isinstance(health, str) or not health.startswith("/"):
        raise ConfigError("health", health, "a path like '/health'", source)
    if "Dockerfile" not in has:
        raise ConfigError(
            "Dockerfile", f"{folder}/Dockerfile", "a Dockerfile in the service folder", source
        )
    test = doc.get("test_dockerfile", "Dockerfile.test" if "Dockerfile.test" in has else None)
    if test is not None and test not in has:
        raise ConfigError("test_dockerfile", test, f"a file in {folder}", source)
    return Service(name, folder, port, health, test)


def load(root: Path, name: str) -> Service:
    folder = root / "services" / name
    manifest = folder / "service.toml"
    if not manifest.exists():
        known = sorted(p.parent.name for p in (root / "services").glob("*/service.toml"))
        raise ConfigError(
            "service",
            name,
            f"one of: {', '.join(known)} (a folder under services/ with a service.toml)",
        )
    try:
        doc = tomllib.loads(manifest.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("service.toml", str(manifest), f"valid TOML ({exc})") from exc
    has = {p.name for p in folder.iterdir()}
    return parse(doc, f"services/{name}", has, str(manifest.relative_to(root)))
