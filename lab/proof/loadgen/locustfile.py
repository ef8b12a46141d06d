"""The load cdlab's proving tests put through the proxy: run by ``lab/proof/load.py`` as its own
``locust --headless`` process (gevent patches whatever imports locust: never import this file).

Two user classes at a fixed total rate: one keeps its connection alive, one opens a connection
per request. The demo app's mix of reads and registrations or, when CDLAB_LOAD_PATHS names GET
paths (comma-separated), those paths in turn and nothing else (any service, no writes). Every
request is written as one JSON line (start, latency, status or error, the X-Release that answered,
the registered user, the path in paths mode).
Configured by environment: CDLAB_LOAD_OUT, CDLAB_LOAD_RATE, CDLAB_LOAD_USERS, CDLAB_LOAD_MAX,
CDLAB_LOAD_PATHS.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable
from typing import Any, ClassVar

from locust import FastHttpUser, TaskSet, constant_throughput, events

OUT = os.environ["CDLAB_LOAD_OUT"]
RATE = float(os.environ.get("CDLAB_LOAD_RATE", "100"))
USERS = int(os.environ.get("CDLAB_LOAD_USERS", "20"))
MAX = int(os.environ.get("CDLAB_LOAD_MAX", "1000000"))
PATHS = [p.strip() for p in os.environ.get("CDLAB_LOAD_PATHS", "").split(",") if p.strip()]
PER_USER = RATE / USERS
_out = open(OUT, "a", buffering=1)  # noqa: SIM115 (open for the process's life, line-buffered)
_count = itertools.count(1)
_emails = itertools.count(1)
_paths = itertools.cycle(PATHS)  # shared by every user: the paths in turn across the whole run
RUN = f"{os.getpid()}-{int(time.time())}"


@events.request.add_listener  # type: ignore[untyped-decorator]
def record(
    request_type: str,
    name: str,
    response_time: float,
    response: Any,
    context: dict[str, Any],
    exception: BaseException | None,
    start_time: float,
    **_: Any,
) -> None:
    status = int(getattr(response, "status_code", 0) or 0)
    headers = getattr(response, "headers", None) or {}
    line = {
        "t": round(start_time, 4),
        "ms": round(response_time, 2),
        "kind": context.get("kind", name),
        "user": context.get("user", ""),
        "status": status,
        "error": type(exception).__name__ + f": {exception}"[:160] if exception else "",
        "release": headers.get("X-Release", "") if headers else "",
    }
    if "path" in context:
        line["path"] = context["path"]
    if context.get("kind") == "write":
        line["email"] = context.get("email", "")
        if status == 201:
            try:
                line["id"] = int(json.loads(response.text)["id"])
            except (ValueError, KeyError, TypeError):
                line["id"] = None
    _out.write(json.dumps(line) + "\n")
    if next(_count) >= MAX:  # bounded in count as well as in time
        runner = getattr(events, "_cdlab_runner", None)
        if runner is not None:
            runner.quit()


@events.init.add_listener  # type: ignore[untyped-decorator]
def keep_runner(environment: Any, **_: Any) -> None:
    events._cdlab_runner = environment.runner  # type: ignore[attr-defined]


class Base(FastHttpUser):
    abstract = True
    wait_time = constant_throughput(PER_USER)
    network_timeout = 5.0
    connection_timeout = 2.0
    headers: ClassVar[dict[str, str]] = {}
    label = ""

    def _get(self, path: str, kind: str, note_path: bool = False) -> None:
        ctx = {"kind": kind, "user": self.label, **({"path": path} if note_path else {})}
        with self.client.get(
            path, headers=self.headers, context=ctx, catch_response=True, name=kind
        ) as resp:
            resp.success() if resp.status_code < 500 and resp.status_code else resp.failure(
                f"HTTP {resp.status_code}"
            )

    def path(self) -> None:
        self._get(next(_paths), "read", note_path=True)

    def version(self) -> None:
        self._get("/version", "read")

    def users(self) -> None:
        self._get("/api/users?limit=5", "list")

    def register(self) -> None:
        email = f"load-{RUN}-{next(_emails)}@cdlab.invalid"
        ctx = {"kind": "write", "user": self.label, "email": email}
        with self.client.post(
            "/api/users",
            json={"name": "load", "email": email},
            headers=self.headers,
            context=ctx,
            catch_response=True,
            name="write",
        ) as resp:
            resp.success() if resp.status_code == 201 else resp.failure(f"HTTP {resp.status_code}")

    # chosen once, when the class is made: the paths in turn, or the demo app's weighted mix
    tasks: list[TaskSet | Callable[..., Any]] = (
        [path] if PATHS else [*[version] * 6, *[users] * 2, *[register] * 2]
    )


class KeepAlive(Base):
    label = "keepalive"


class ConnectionPerRequest(Base):
    label = "close"
    headers: ClassVar[dict[str, str]] = {"Connection": "close"}
