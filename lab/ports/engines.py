"""The one factory for Docker SDK clients: the workstation's engine and each lab host's engine.

Lab hosts are reached over mutual TLS on their ``engine_port`` with the lab's client certificate.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lab.config import Host, LabConfig
from lab.errors import EngineError, PreflightError
from lab.estate.state import State

# The hosts run the engine of the lab's own host image (Debian's docker.io 20.10: API 1.41).
# Naming it avoids a version probe at construction, which would ignore ``trust_env`` below.
API_VERSION = "1.41"


def local() -> Any:
    """The workstation's engine (``DOCKER_HOST`` or the default socket), checked to answer."""
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        raise PreflightError(
            "the workstation's Docker engine does not answer",
            "run './cdlab up' (it installs "
            "and starts one), or start yours ('systemctl start docker' or 'dockerd &')",
            str(exc),
        ) from exc
    return client


def url(config: LabConfig, host: Host) -> str:
    return f"tcp://{host.address}:{config.engine_port}"


def client(state: State, host: Host, timeout: int = 120) -> Any:
    """A docker SDK client for ``host``'s engine over mutual TLS (does not connect yet)."""
    import docker
    from docker.tls import TLSConfig

    if not host.has_engine:
        raise EngineError(
            host.name,
            "-",
            f"'{host.name}' runs no Docker engine (role '{host.role}')",
            "pick one of: " + ", ".join(h.name for h in state.config.engine_hosts),
        )
    ca, cert, key = state.client_tls()
    tls = TLSConfig(client_cert=(str(cert), str(key)), ca_cert=str(ca), verify=True)
    c = docker.DockerClient(
        base_url=url(state.config, host).replace("tcp://", "https://"),
        tls=tls,
        timeout=timeout,
        version=API_VERSION,
    )
    # Lab traffic never goes through the workstation's proxy, and REQUESTS_CA_BUNDLE (common
    # behind TLS-inspecting proxies) must not replace the lab CA: ignore the environment.
    c.api.trust_env = False
    return c


@contextmanager
def connect(state: State, host: Host, timeout: int = 120) -> Iterator[Any]:
    """``client`` as a context manager that closes its connections."""
    import requests
    import urllib3.exceptions

    lost = (
        requests.ConnectionError,
        requests.exceptions.ChunkedEncodingError,
        urllib3.exceptions.ProtocolError,
    )
    c = client(state, host, timeout)
    try:
        yield c
    except lost as exc:
        # the host went away mid-work (stopped, restarted): a lab error, not a traceback
        raise EngineError(
            host.name,
            url(state.config, host),
            f"the connection to {host.name}'s engine was lost: {type(exc).__name__}",
            "check the host with 'invoke lab.status'; "
            + (
                f"on {host.name}, 'systemctl status cdlab-host' (an existing machine)"
                if host.existing
                else "'invoke lab.up' brings it back"
            ),
        ) from exc
    finally:
        c.close()


def wait_ready(state: State, host: Host, timeout: float = 60.0) -> str:
    """Poll ``host``'s engine until it answers; return its version, or raise with the last error."""
    deadline = time.monotonic() + timeout
    import docker.errors
    import requests

    last = "no attempt made"
    while True:
        try:
            with connect(state, host, timeout=5) as c:
                return str(c.version()["Version"])
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        except EngineError as exc:  # connect()'s own word for a refused or lost connection
            last = f"{type(exc.__cause__).__name__}: {exc.__cause__}"
        if time.monotonic() >= deadline:
            raise EngineError(
                host.name,
                url(state.config, host),
                last,
                _look(state, host),
            )
        time.sleep(0.5)


def _look(state: State, host: Host) -> str:
    """Where a host's engine says why it does not answer."""
    if host.existing:
        return (
            f"on {host.name} (an existing machine), 'journalctl -u cdlab-host' or "
            "/var/log/cdlab-host.log; or run 'invoke lab.status'"
        )
    return f"look at 'docker logs {state.config.container_name(host)}' or run 'invoke lab.status'"
