"""Docker Compose (v1, Debian's) run from the workstation against a lab host's engine."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from lab.config import Host
from lab.estate.state import State
from lab.ports import shell

COMPOSE_DIR = Path(__file__).resolve().parents[2] / "compose"
# Variables that would send compose's engine traffic through the workstation's proxy or replace
# the lab CA (docker-py honours REQUESTS_CA_BUNDLE over DOCKER_CERT_PATH).
_DROP = (
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "DOCKER_CONTEXT",
)


def engine_env(
    base: Mapping[str, str], address: str, port: int, cert_dir: Path, extra: Mapping[str, str]
) -> dict[str, str]:
    """The environment for compose talking to ``address`` over mutual TLS (pure)."""
    env = {k: v for k, v in base.items() if k not in _DROP}
    env.update(
        DOCKER_HOST=f"tcp://{address}:{port}",
        DOCKER_TLS_VERIFY="1",
        DOCKER_CERT_PATH=str(cert_dir),
        COMPOSE_INTERACTIVE_NO_CLI="1",
        COMPOSE_HTTP_TIMEOUT="120",
    )
    env.update(extra)
    return env


def argv(file: str, project: str, *args: str) -> list[str]:
    return ["docker-compose", "--no-ansi", "-p", project, "-f", str(COMPOSE_DIR / file), *args]


def run(
    state: State,
    host: Host,
    file: str,
    project: str,
    variables: Mapping[str, str],
    args: Sequence[str],
    hint: str = "",
) -> str:
    """Run one compose command for ``project`` on ``host``; ``CommandError`` with its output."""
    env = engine_env(
        os.environ, host.address, state.config.engine_port, state.client_tls_dir, variables
    )
    return shell.run(argv(file, project, *args), env=env, cwd=COMPOSE_DIR, hint=hint).output
