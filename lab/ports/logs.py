"""The log store on prod, read from the workstation (``services/logs/cdlab_logs``).

Every release's output and the proxy's request lines reach the store (Compose service
``logs``, UDP 5514) through Docker's ``syslog`` logging driver, tagged
``<service>/<release>/<container>``. The store's own reader runs in its container:
``query_argv`` builds that command (pure) and ``read`` runs it through the engine's exec API,
copying what it prints as it prints it.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Sequence
from typing import Any, TextIO

from lab.config import parse_duration
from lab.errors import StackError

SERVICE = "logs"  # the store's Compose service (compose/stack.yml)
PORT = 5514  # UDP, where releases' engines and the proxy send their lines
NO_LOGS = 3  # the reader's exit code when the store has nothing for that service (or release)
SINCE_MAX = 30 * 24 * 3600
STOPS_WITH_READER = "--while-stdin-open"  # a follow ends when this side's connection does
HINT = "run 'invoke lab.status'; 'invoke stack.apply' starts a missing log store"


def parse_since(text: str) -> float:
    """``"5m"``, ``"90s"``, ``"2h"`` or ``"30"`` (seconds) into seconds."""
    return parse_duration(text, "--since", 1, SINCE_MAX)


def query_argv(
    service: str,
    release: str | None,
    since_seconds: float | None,
    follow: bool,
    lines: int | None,
    as_json: bool,
) -> list[str]:
    """The reader's command in the store's container (pure). Values are joined to their
    options (``--service=x``): none can be taken for an option."""
    argv = ["python3", "-m", "cdlab_logs", "query", f"--service={service}"]
    if release:
        argv.append(f"--release={release}")
    if since_seconds is not None:
        argv.append(f"--since={float(since_seconds)!r}")
    if lines is not None:
        argv.append(f"--lines={lines}")
    if follow:
        argv += ["--follow", STOPS_WITH_READER]
    if as_json:
        argv.append("--json")
    return argv


def read(container: Any, argv: Sequence[str], out: TextIO, timeout: float = 10.0) -> int:
    """Run ``argv`` in ``container`` (a Docker SDK container), copy its output (stdout and
    stderr) to ``out`` as it comes, and return its exit code. An interrupt (Ctrl-C) closes
    the connection, which ends a follow in the store (``STOPS_WITH_READER``), and propagates."""
    import docker.errors

    api = container.client.api
    what = f"read the logs in the log store's container '{container.name}'"
    try:
        exec_id = api.exec_create(container.id, list(argv), stdin=STOPS_WITH_READER in argv)
        stream = api.exec_start(exec_id["Id"], stream=True, demux=False)
    except docker.errors.DockerException as exc:
        raise StackError(what, str(exc), services=[SERVICE], hint=HINT) from exc
    text = codecs.getincrementaldecoder("utf-8")(errors="replace")
    try:
        for chunk in stream:
            out.write(text.decode(chunk))
            out.flush()
        out.write(text.decode(b"", final=True))
    finally:
        stream.close()
    try:
        return _exit_code(api, exec_id["Id"], what, timeout)
    except docker.errors.DockerException as exc:
        raise StackError(what, str(exc), services=[SERVICE], hint=HINT) from exc


def _exit_code(api: Any, exec_id: str, what: str, timeout: float) -> int:
    """The ended command's exit code (the engine may report it a moment after the output
    ends): a bounded poll."""
    deadline = time.monotonic() + timeout
    while True:
        state = api.exec_inspect(exec_id)
        if not state.get("Running") and state.get("ExitCode") is not None:
            return int(state["ExitCode"])
        last = f"running {state.get('Running')}, exit code {state.get('ExitCode')}"
        if time.monotonic() > deadline:
            detail = f"its output ended but it had not within {timeout:.0f} s ({last})"
            raise StackError(what, detail, services=[SERVICE], hint=HINT)
        time.sleep(0.05)


def store_container(client: Any) -> Any:
    """The log store's container on prod (by its Compose labels), or ``StackError``."""
    found = client.containers.list(
        filters={
            "label": [
                "com.docker.compose.project=cdlab-stack",
                f"com.docker.compose.service={SERVICE}",
            ],
            "status": "running",
        }
    )
    if not found:
        raise StackError(
            "read the logs", "the log store is not running on prod", services=[SERVICE], hint=HINT
        )
    return found[0]
