"""The load cdlab's proving tests put through the proxy: run by ``lab/proof/load.py`` as its own
``locust --headless`` process (gevent patches whatever imports locust: never import this file).

Two user classes at a fixed total rate: one keeps its connection alive, one opens a connection
per request. A mix of reads and registrations; every request is written as one JSON line
(start, latency, status or error, the X-Release that answered, the registered user).
Configured by environment: CDLAB_LOAD_OUT, CDLAB_LOAD_RATE, CDLAB_LOAD_USERS, CDLAB_LOAD_MAX.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any, ClassVar

from locust import FastHttpUser, constant_throughput, events, task

OUT = os.environ["CDLAB_LOAD_OUT"]
RATE = float(os.environ.get("CDLAB_LOAD_RATE", "100"))
USERS = int(os.environ.get("CDLAB_LOAD_USERS", "20"))
MAX = int(os.environ.get("CDLAB_LOAD_MAX", "1000000"))
PER_USER = RATE / USERS
_out = open(OUT, "a", buffering=1)  # noqa: SIM115 (open for the process's life, line-buffered)
_count = itertools.count(1)
_emails = itertools.count(1)
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

    def _get(self, path: str, kind: str) -> None:
        ctx = {"kind": kind, "user": self.label}
        with self.client.get(
            path, headers=self.headers, context=ctx, catch_response=True, name=kind
        ) as resp:
            resp.success() if resp.status_code < 500 and resp.status_code else resp.failure(
                f"HTTP {resp.status_code}"
            )

    @task(6)
    def version(self) -> None:
        self._get("/version", "read")

    @task(2)
    def users(self) -> None:
        self._get("/api/users?limit=5", "list")

    @task(2)
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


class KeepAlive(Base):
    label = "keepalive"


class ConnectionPerRequest(Base):
    label = "close"
    headers: ClassVar[dict[str, str]] = {"Connection": "close"}
