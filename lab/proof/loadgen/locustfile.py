"""The load cdlab's proving tests put through the proxy: run by ``lab/proof/load.py`` as its own
``locust --headless`` process (gevent patches whatever imports locust: never import this file).

Two user classes at a fixed total rate: one keeps its connection alive, one opens a connection
per request. The demo app's mix of reads and registrations or, when CDLAB_LOAD_PATHS names GET
paths (comma-separated), those paths in turn and nothing else (any service, no writes). Every
registration carries an Idempotency-Key of its own: the proxy may resend it to another replica
when no answer came, and the app then answers 201 with the user the first one registered.

Every request locust reports is written as one JSON line (start, latency, status or error, the
X-Release that answered, the registered user and id, the path in paths mode) with its
``verdict``: "ok" only when the answer is exactly what the script expects (``verdicts.py``),
otherwise the reason. Nothing marks a request successful over an error locust recorded (a body
cut short after a good status line). A line is written even when making it fails (verdict
"listener error: ..."). At its end, locust's own counts go to CDLAB_LOAD_TOTALS, which the
oracle compares with the lines.

The lines reach the file from a native thread, in batches: a disk slow to take a write stalls
that thread, never the event loop that sends the requests. A heartbeat measures the event
loop itself; every stall of a second or more (the process got no CPU) goes to the totals, so
that a load short of its rate says whether the generator or the lab held it back.
Configured by environment: CDLAB_LOAD_OUT, CDLAB_LOAD_TOTALS, CDLAB_LOAD_RATE, CDLAB_LOAD_USERS,
CDLAB_LOAD_MAX, CDLAB_LOAD_PATHS.
"""

from __future__ import annotations

import itertools
import json
import os
import time
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

import gevent  # type: ignore[import-untyped]
from gevent.lock import Semaphore  # type: ignore[import-untyped]
from gevent.threadpool import ThreadPool  # type: ignore[import-untyped]
from locust import FastHttpUser, TaskSet, constant_throughput, events

from lab.proof.loadgen import verdicts  # this checkout's: load.py puts it on PYTHONPATH

OUT = os.environ["CDLAB_LOAD_OUT"]
TOTALS = os.environ.get("CDLAB_LOAD_TOTALS", OUT + ".totals.json")
RATE = float(os.environ.get("CDLAB_LOAD_RATE", "100"))
USERS = int(os.environ.get("CDLAB_LOAD_USERS", "20"))
MAX = int(os.environ.get("CDLAB_LOAD_MAX", "1000000"))
PATHS = [p.strip() for p in os.environ.get("CDLAB_LOAD_PATHS", "").split(",") if p.strip()]
PER_USER = RATE / USERS
_out = open(OUT, "a")  # noqa: SIM115 (open for the process's life; written by _writer only)
_pending: list[str] = []  # lines made, not yet handed to the writer
_writer = ThreadPool(1)  # one native thread: the lines in order, off the event loop
_flushing = Semaphore()  # one batch at a time (the flusher's or the last one's)
FLUSH_EVERY = 0.2  # seconds between batches
BEAT = 0.1  # the heartbeat's period
STALL = 1.0  # seconds of event loop lag counted as a stall
_stalls: list[list[float]] = []  # [unix time it began, seconds], at most 100
_emails = itertools.count(1)
_paths = itertools.cycle(PATHS)  # shared by every user: the paths in turn across the whole run
_seen = {"written": 0, "listener_errors": 0, "lost_writes": 0}
_made = [0]  # lines made (written or pending): the count bound
_run: dict[str, Any] = {}  # locust's environment, kept at init for the quit and the count bound
RUN = f"{os.getpid()}-{int(time.time())}"


def _headers(response: Any) -> dict[str, str]:
    """The headers the verdict reads, lower-case names ("" when absent)."""
    found = getattr(response, "headers", None)
    if not found:
        return {}
    names = ("content-length", "content-encoding", "x-release", "idempotent-replayed")
    return {n: str(found.get(n) or "") for n in names}


def _verdict(response: Any, context: dict[str, Any], exception: BaseException | None) -> str:
    status = int(getattr(response, "status_code", 0) or 0)
    if exception is not None:  # locust's own error stands, whatever the body holds
        return verdicts.from_error(type(exception).__name__, str(exception), status)
    if "verdict" in context:  # judged in the task, which gave locust the same verdict
        return str(context["verdict"])
    body = getattr(response, "content", None) or b""
    expect, email = context.get("expect", "complete"), context.get("email", "")
    return verdicts.judge(expect, status, _headers(response), body, email)


def _line(
    response: Any,
    context: dict[str, Any],
    exception: BaseException | None,
    name: str,
    response_time: float,
    start_time: float,
) -> dict[str, Any]:
    status = int(getattr(response, "status_code", 0) or 0)
    line: dict[str, Any] = {
        "t": round(start_time, 4),
        "ms": round(response_time, 2),
        "kind": context.get("kind", name),
        "user": context.get("user", ""),
        "status": status,
        "error": (type(exception).__name__ + f": {exception}")[:160] if exception else "",
        "release": _headers(response).get("x-release", ""),
        "verdict": _verdict(response, context, exception),
    }
    if "path" in context:
        line["path"] = context["path"]
    if context.get("kind") == "write":
        line["email"] = context.get("email", "")
        line["id"] = context.get("id")
        # the proxy sent it twice and the app answered the second from the first: no failure,
        # but a retry the summary counts (a switch that made the proxy retry shows here)
        replayed = _headers(response).get("idempotent-replayed", "") == "true"
        line["replayed"] = int(replayed)
    return line


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
    try:
        text = json.dumps(_line(response, context, exception, name, response_time, start_time))
    except Exception as exc:  # never drop a request: its line says what went wrong
        _seen["listener_errors"] += 1
        text = json.dumps(verdicts.fallback_line(exc, context, name, response_time, start_time))
    _pending.append(text + "\n")
    _made[0] += 1
    if _made[0] == MAX and "env" in _run:  # bounded in count as well as in time
        # in its own greenlet: quitting kills the users, and this one must finish its request
        gevent.spawn(_run["env"].runner.quit)


def _write(text: str) -> bool:
    """In the writer's thread: ``text`` appended to the file; False when it could not be."""
    try:
        _out.write(text)
        _out.flush()
    except Exception:
        return False
    return True


def _flush() -> None:
    """The pending lines to the file, through the writer's thread (this greenlet waits, the
    users go on); counted written, or lost when the write failed."""
    with _flushing:
        batch = _pending[:]
        del _pending[:]
        if batch:
            done = _writer.apply(_write, (("".join(batch)),))
            _seen["written" if done else "lost_writes"] += len(batch)


def _flusher() -> None:
    while True:
        gevent.sleep(FLUSH_EVERY)
        _flush()


def _heartbeat() -> None:
    """Every stall of the event loop of ``STALL`` seconds or more, into ``_stalls``."""
    last = time.monotonic()
    while True:
        gevent.sleep(BEAT)
        now = time.monotonic()
        lag = now - last - BEAT
        if lag >= STALL and len(_stalls) < 100:
            _stalls.append([round(time.time() - lag, 2), round(lag, 2)])
        last = now


@events.init.add_listener  # type: ignore[untyped-decorator]
def keep_environment(environment: Any, **_: Any) -> None:
    _run["env"] = environment
    gevent.spawn(_flusher)
    gevent.spawn(_heartbeat)


@events.quit.add_listener  # type: ignore[untyped-decorator]
def write_totals(**_: Any) -> None:
    """locust's own counts, once every user has stopped (``quit`` fires after the runner quit):
    what the oracle's lines must add up to."""
    _flush()  # the last lines, before their count
    stats = _run["env"].stats.total if "env" in _run else None
    totals = {
        "requests": stats.num_requests if stats else -1,
        "failures": stats.num_failures if stats else -1,
        **_seen,
        "stalls": _stalls,
    }
    with open(TOTALS, "w") as f:
        f.write(json.dumps(totals) + "\n")


class Base(FastHttpUser):
    abstract = True
    wait_time = constant_throughput(PER_USER)
    network_timeout = 5.0
    connection_timeout = 2.0
    headers: ClassVar[dict[str, str]] = {}
    label = ""

    def _judged(self, resp: Any, expect: str, email: str = "") -> None:
        """Judge the answer in the task, where its body is at hand: the verdict goes to the
        line (through the request's context) and, when it is not ok, to locust as a failure.
        Never ``success()``: that would erase an error locust already recorded."""
        context = resp.request_meta["context"]
        if resp.request_meta["exception"] is not None:
            return  # locust's error stands; the line takes its reason from it
        verdict = verdicts.judge(expect, resp.status_code, _headers(resp), resp.content, email)
        context["verdict"] = verdict
        if expect == "register":
            context["id"] = verdicts.user_id(resp.content)
        if verdict != verdicts.OK:
            resp.failure(verdict)

    def _get(self, path: str, kind: str, expect: str, note_path: bool = False) -> None:
        ctx = {"kind": kind, "user": self.label, "expect": expect}
        if note_path:
            ctx["path"] = path
        with self.client.get(
            path, headers=self.headers, context=ctx, catch_response=True, name=kind
        ) as resp:
            self._judged(resp, expect)

    def path(self) -> None:
        self._get(next(_paths), "read", "complete", note_path=True)

    def version(self) -> None:
        self._get("/version", "read", "version")

    def users(self) -> None:
        self._get("/api/users?limit=5", "list", "users")

    def register(self) -> None:
        email = f"load-{RUN}-{next(_emails)}@cdlab.invalid"
        ctx = {"kind": "write", "user": self.label, "email": email, "expect": "register"}
        with self.client.post(
            "/api/users",
            json={"name": "load", "email": email},
            headers={**self.headers, "Idempotency-Key": uuid.uuid4().hex},
            context=ctx,
            catch_response=True,
            name="write",
        ) as resp:
            self._judged(resp, "register", email)

    # chosen once, when the class is made: the paths in turn, or the demo app's weighted mix
    tasks: list[TaskSet | Callable[..., Any]] = (
        [path] if PATHS else [*[version] * 6, *[users] * 2, *[register] * 2]
    )


class KeepAlive(Base):
    label = "keepalive"


class ConnectionPerRequest(Base):
    label = "close"
    headers: ClassVar[dict[str, str]] = {"Connection": "close"}
