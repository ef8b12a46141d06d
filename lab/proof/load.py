"""Load through the proxy, as a tool: locust runs headless in its own process (never imported
here: gevent patches whatever imports it), at a fixed rate, bounded in time and count, against
127.0.0.1 only, and every request lands in a JSON-lines file this module reads back.

    with load.running(rate=300, name="zero-downtime") as traffic:
        with traffic.operation("deploy B", target="B"):
            deploy(...)
    assert traffic.problems() == [] and traffic.rate_problem() is None
    assert traffic.failed == [] and traffic.release_problems(first="A") == []

The oracle cannot miss a failure: a request is ok only when its line's verdict says the answer
was exactly what the script expected (``loadgen/verdicts.py``); every line is read or counted
as broken; locust's own count of requests (written at its end beside the lines) must equal the
lines; a registration answered 201 must carry an id to read back. ``Traffic.problems()`` lists
what breaks those promises, and tests assert it empty.

The analysis functions are pure (they take the requests) and unit-tested on fixed series.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lab.errors import LoadError as LoadError  # its home before lab.errors held every error

LOCUSTFILE = Path(__file__).with_name("loadgen") / "locustfile.py"
ROOT = Path(__file__).resolve().parents[2]  # this checkout: the locustfile imports its lab
REPORTS = ROOT / "reports" / "load"
PER_USER_RATE = 2.0  # requests per second per simulated user (latency must not throttle the rate)
_NO_PROXY = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


@dataclass(frozen=True)
class Request:
    t: float  # start (unix time)
    ms: float  # latency
    kind: str  # read, list, write
    user: str  # keepalive or close (connection per request)
    status: int  # 0 when no response came
    error: str
    release: str  # X-Release of the answer, "" without one
    email: str = ""
    id: int | None = None
    path: str = ""  # the GET path, when the load reads given paths (``running(paths=...)``)
    verdict: str = ""  # "ok", or why the answer is not what the script expected
    replayed: int = 0  # 1: a registration answered from an earlier copy (Idempotent-Replayed)

    @property
    def ok(self) -> bool:
        """The answer was exactly what the script expected (its verdict is "ok"). A line
        written before verdicts existed (none): a 2xx without an error."""
        if self.verdict:
            return self.verdict == "ok"
        return 200 <= self.status < 300 and not self.error

    @property
    def end(self) -> float:
        return self.t + self.ms / 1000


@dataclass(frozen=True)
class Lines:
    """A file of request lines, read: every line is a request or counted as broken."""

    requests: list[Request]  # sorted by start
    count: int  # lines in all, broken ones included
    broken: int  # lines that are not a request (a cut last line included)
    cut_tail: bool  # the last line has no newline and is not a request (ended mid-write)


_TYPES: dict[str, type | tuple[type, ...]] = {
    "t": (int, float),
    "ms": (int, float),
    "kind": str,
    "user": str,
    "status": int,
    "error": str,
    "release": str,
    "email": str,
    "id": (int, type(None)),
    "path": str,
    "verdict": str,
    "replayed": int,
}


def parse(text: str) -> Lines:
    """The requests of a file's ``text``, sorted by start, and the count of lines that are not
    one (not JSON, a missing or unknown field, a field of the wrong type)."""
    raw = text.split("\n")
    cut_tail = raw[-1] != ""  # no newline at the end: the last write did not finish
    if not cut_tail:
        raw.pop()
    out, broken = [], 0
    for line in raw:
        found = _request(line)
        if found is None:
            broken += 1
        else:
            out.append(found)
    cut_tail = cut_tail and bool(raw) and _request(raw[-1]) is None
    return Lines(sorted(out, key=lambda r: r.t), len(raw), broken, cut_tail)


def _request(line: str) -> Request | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if not isinstance(doc, dict) or set(doc) - set(_TYPES):
        return None
    for key, value in doc.items():
        if not isinstance(value, _TYPES[key]) or isinstance(value, bool):
            return None
    try:
        return Request(**doc)
    except TypeError:  # a required field missing
        return None


@dataclass(frozen=True)
class Totals:
    """locust's own counts at its end (the locustfile writes them beside the lines)."""

    requests: int  # every request locust reported
    failures: int  # those it reported failed
    written: int  # lines the listener wrote
    listener_errors: int  # lines made by the listener's fallback (it failed on the request)
    lost_writes: int  # lines the listener could not write
    stalls: tuple[tuple[float, float], ...] = ()  # (unix time, seconds) its event loop stalled


def totals_file(out: Path) -> Path:
    return out.with_name(out.stem + ".totals.json")


def read_totals(path: Path) -> Totals | None:
    """The totals in ``path``; None when locust wrote none (it did not end by itself or by
    SIGTERM) or they cannot be read."""
    try:
        doc = json.loads(path.read_text())
        counts = {k: int(doc[k]) for k in Totals.__dataclass_fields__ if k != "stalls"}
        stalls = tuple((float(t), float(s)) for t, s in doc.get("stalls", []))
        return Totals(**counts, stalls=stalls)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def count_problems(lines: Lines, totals: Totals | None, file: Path) -> list[str]:
    """What makes the lines of ``file`` short of locust's own account of the run: lines that
    are not requests (one cut last line tolerated), no totals, counts that differ, lines made
    by the listener's fallback, failures locust saw that the lines call ok."""
    found = []
    broken = lines.broken - (1 if lines.cut_tail else 0)
    if broken:
        found.append(
            f"{broken} of the {lines.count} lines of {file} are not requests: the oracle cannot "
            "judge them (see the file)"
        )
    if totals is None:
        found.append(
            f"locust wrote no totals ({totals_file(file)}): it did not end by itself or by "
            "SIGTERM, so its count of requests cannot be checked against the lines"
        )
        return found
    if totals.requests != lines.count:
        found.append(
            f"locust counted {totals.requests} requests, {file} holds {lines.count} lines "
            f"(the listener wrote {totals.written}, could not write {totals.lost_writes})"
        )
    if totals.listener_errors:
        found.append(
            f"{totals.listener_errors} lines were made by the listener's fallback "
            "(verdict 'listener error: ...'): fix the locustfile"
        )
    failed = sum(1 for r in lines.requests if not r.ok)
    if totals.failures > failed:
        found.append(
            f"locust counted {totals.failures} failed requests, the lines only {failed}: "
            "the oracle passed answers locust saw fail"
        )
    return found


def registration_problems(requests: list[Request]) -> list[str]:
    """Registrations the oracle would not read back: counted ok after a 201 without an id
    (a failed one, a body cut short for one, is in ``Traffic.failed`` instead), or none
    answered 201 with an id while registrations were sent (``readback`` would check nothing)."""
    writes = [r for r in requests if r.kind == "write"]
    no_id = [r for r in writes if r.status == 201 and r.id is None and r.ok]
    found = []
    if no_id:
        found.append(f"{len(no_id)} registrations counted ok without an id to read back")
    if writes and not any(r.status == 201 and r.id for r in writes):
        found.append(_nothing_registered(len(writes)))
    return found


def _nothing_registered(writes: int) -> str:
    return f"{writes} registrations sent and none answered 201 with an id: nothing to read back"


def rate_problem(asked: float, sent: int, seconds: float, min_share: float = 0.8) -> str | None:
    """A message when ``sent`` requests in ``seconds`` fall short of ``min_share`` of the
    ``asked`` rate (the load was not what the test claims); None when they reach it."""
    if seconds <= 0 or asked <= 0:
        return None
    achieved = sent / seconds
    if achieved >= min_share * asked:
        return None
    return (
        f"the load reached {achieved:.1f} req/s, {achieved / asked:.1%} of the {asked:g} "
        f"asked (at least {min_share:.0%} needed): slow answers hold the users back, or the "
        "generator could not keep up (see its .locust.log)"
    )


def stall_note(
    generator: Sequence[tuple[float, float]],
    own: Sequence[tuple[float, float]],
    start: float,
    end: float,
) -> str:
    """Why a load fell short, when a process stalled between ``start`` and ``end``: the load
    generator's event loop (``generator``: (unix time, seconds) it did not run) and the test's
    own process (``own``). "" when neither did."""

    def within(stalls: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(t, s) for t, s in stalls if t + s >= start and t <= end]

    mine, theirs = within(own), within(generator)
    if not theirs:
        return ""
    t, s = max(theirs, key=lambda x: x[1])
    note = (
        f"the load generator itself stalled {sum(x[1] for x in theirs):.1f} s in all, "
        f"{s:.1f} s from {t - start:.1f} s into the run (its event loop got no CPU)"
    )
    both = any(a < t + s and t < a + b for a, b in mine)
    if both:
        note += "; the test's own process stalled at the same time: the whole machine stalled"
    return note


def longest_gap(requests: list[Request], start: float, end: float) -> float:
    """The longest time without a successful response, from ``start`` to ``end``."""
    ends = sorted(r.end for r in requests if r.ok)
    points = [start, *[e for e in ends if start <= e <= end], end]
    return max((b - a for a, b in itertools.pairwise(points)), default=end - start)


def steady_since(requests: Sequence[Request], since: float) -> float:
    """When the stretch of successes that lasts began: the send time of the first success
    after the last failure, among requests sent after ``since`` (infinity: none yet)."""
    mine = sorted((r for r in requests if r.t > since), key=lambda r: r.t)
    last_failed = max((r.t for r in mine if not r.ok), default=since)
    return min((r.t for r in mine if r.ok and r.t > last_failed), default=float("inf"))


@dataclass(frozen=True)
class Operation:
    """One operation made under load (deploy, rollback) that makes ``target`` the live release."""

    label: str
    target: str
    started: float  # unix time, just before it began (its mark)
    returned: float  # unix time, once it returned


def release_problems(requests: list[Request], first: str, operations: list[Operation]) -> list[str]:
    """What, in the releases that answered, contradicts the plan: ``first`` live, then each
    operation in turn making its target live. Judged from every request's own answer (no
    sampling: a release live for an instant counts as much as one live for a minute):

    - before the first operation, only ``first`` answers;
    - while an operation runs, only the release live before it or its target (a request in
      flight on the old release may end after the first answer of the new one);
    - once it returned, until the next operation starts, only its target;
    - its target answers at least one request started from the operation's start until the next
      operation returned (the last: until the end), or it was never seen live.

    A request belongs to the moment it started; failed requests and answers without a release
    are not judged here (``Traffic.failed`` counts them). Returns one line per problem, earliest
    first; empty when the answers follow the plan. ``operations`` must not overlap."""
    ops = sorted(operations, key=lambda o: o.started)
    for op in ops:
        if op.returned < op.started:
            raise ValueError(f"{op.label!r} returned before it started")
    for prev, op in itertools.pairwise(ops):
        if op.started < prev.returned:
            raise ValueError(f"{op.label!r} started before {prev.label!r} returned")
    found: list[tuple[float, str]] = []
    for r in requests:
        if r.ok and r.release:
            allowed, when = _allowed_at(r.t, first, ops)
            if r.release not in allowed:
                expected = " or ".join(dict.fromkeys(allowed))
                found.append(
                    (r.t, f"a {r.kind} started {when} answered by {r.release}, not {expected}")
                )
    for i, op in enumerate(ops):
        nxt = ops[i + 1] if i + 1 < len(ops) else None
        until = nxt.returned if nxt else math.inf
        if not any(r.ok and r.release == op.target and op.started <= r.t < until for r in requests):
            end = f"{nxt.label!r} returned" if nxt else "the end"
            found.append(
                (
                    op.started,
                    f"{op.label!r}: {op.target} answered no request started from then until {end}",
                )
            )
    return [line for _, line in sorted(found, key=lambda f: f[0])]


def _allowed_at(t: float, first: str, ops: list[Operation]) -> tuple[list[str], str]:
    """The releases allowed to answer a request started at ``t`` (``ops`` sorted, apart), and
    where ``t`` falls, in words."""
    i = bisect.bisect_right([o.started for o in ops], t) - 1  # the last one started by then
    if i < 0:
        when = f"{ops[0].started - t:.3f} s before {ops[0].label!r}" if ops else "with no operation"
        return [first], when
    op, before = ops[i], ops[i - 1].target if i else first
    if t < op.returned:
        return [before, op.target], f"{t - op.started:.3f} s into {op.label!r}"
    return [op.target], f"{t - op.returned:.3f} s after {op.label!r} returned"


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def p99_after(requests: list[Request], moments: list[float], seconds: float = 5.0) -> float:
    """The worst p99 latency (ms) of the ``seconds`` after each moment."""
    worst = 0.0
    for m in moments:
        window = [r.ms for r in requests if r.ok and m <= r.t < m + seconds]
        worst = max(worst, percentile(window, 99))
    return worst


@dataclass
class Traffic:
    """What one load run saw. ``requests`` is filled when the ``running`` block ends."""

    name: str
    rate: float
    file: Path
    started: float = field(default_factory=time.time)
    ended: float = 0.0
    marks: list[tuple[float, str]] = field(default_factory=list)
    operations: list[Operation] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    lines: Lines | None = None  # the whole file, read when the run ended
    totals: Totals | None = None  # locust's own counts at its end
    own_stalls: list[tuple[float, float]] = field(default_factory=list)  # the test process's

    def mark(self, label: str) -> None:
        """Note a moment (deploy, switch, rollback) for the analysis and the report."""
        self.marks.append((time.time(), label))

    @contextmanager
    def operation(self, label: str, target: str) -> Iterator[None]:
        """An operation that makes ``target`` the live release: marked (``label``) before the
        block runs, noted with its return time once the block returns (not when it raises),
        for ``release_problems``."""
        self.mark(label)
        started = self.marks[-1][0]
        yield
        self.operations.append(Operation(label, target, started, time.time()))

    def seen_so_far(self) -> list[Request]:
        """The requests written until now (the run goes on)."""
        return parse(_text(self.file)).requests

    @property
    def seconds(self) -> float:
        return (self.ended or time.time()) - self.started

    @property
    def failed(self) -> list[Request]:
        return [r for r in self.requests if not r.ok]

    @property
    def expected(self) -> float:
        return self.rate * self.seconds

    @property
    def broken(self) -> int:
        """Lines of the run's file that are not requests (a cut last line included)."""
        return self.lines.broken if self.lines else 0

    def problems(self) -> list[str]:
        """What keeps the oracle from vouching for this run (``count_problems``,
        ``registration_problems``); tests assert it empty."""
        if self.lines is None:
            return [f"the lines of {self.file} were never read (the run has not ended)"]
        return [
            *count_problems(self.lines, self.totals, self.file),
            *registration_problems(self.requests),
        ]

    def rate_problem(self, min_share: float = 0.8) -> str | None:
        """``rate_problem`` of this run: None when it sent at least ``min_share`` of its rate;
        otherwise it says whether a process stalled meanwhile (``stall_note``)."""
        found = rate_problem(self.rate, len(self.requests), self.seconds, min_share)
        generator = self.totals.stalls if self.totals else ()
        note = stall_note(generator, self.own_stalls, self.started, self.ended or time.time())
        return f"{found}; {note}" if found and note else found

    def gap(self) -> float:
        return longest_gap(self.requests, self.started + 2.0, self.ended)

    def release_problems(self, first: str) -> list[str]:
        """``release_problems`` of this run's operations, ``first`` live before them."""
        return release_problems(self.requests, first, self.operations)

    def steady_p99(self) -> float:
        first = min((t for t, _ in self.marks), default=self.ended)
        return percentile([r.ms for r in self.requests if r.ok and r.t < first], 99)

    def registered(self) -> dict[str, int]:
        """email -> id of every registration answered 201 with an id."""
        return {
            r.email: r.id for r in self.requests if r.kind == "write" and r.status == 201 and r.id
        }

    def writes(self) -> int:
        return sum(1 for r in self.requests if r.kind == "write")

    def summary(self) -> dict[str, Any]:
        ok = [r for r in self.requests if r.ok]
        by_kind = Counter(r.kind for r in self.requests)
        by_user = Counter(r.user for r in self.requests)
        return {
            "name": self.name,
            "rate": self.rate,
            "seconds": round(self.seconds, 1),
            "total": len(self.requests),
            "failed": len(self.failed),
            "broken": self.broken,
            "problems": self.problems(),
            "rate_problem": self.rate_problem(),
            "expected": round(self.expected),
            "achieved_rate": round(len(self.requests) / self.seconds, 1) if self.seconds else 0,
            "longest_gap_ms": round(self.gap() * 1000, 1),
            "p50_ms": percentile([r.ms for r in ok], 50),
            "p99_ms": percentile([r.ms for r in ok], 99),
            "steady_p99_ms": self.steady_p99(),
            "p99_after_marks_ms": p99_after(self.requests, [t for t, _ in self.marks]),
            "answers_by_release": dict(Counter(r.release for r in ok if r.release)),
            "operations": [
                [round(o.started - self.started, 3), round(o.returned - o.started, 3), o.label]
                for o in self.operations
            ],
            "by_kind": dict(by_kind),
            "by_user": dict(by_user),
            "marks": [[round(t - self.started, 3), label] for t, label in self.marks],
            "errors": dict(Counter(reason(r) for r in self.failed)),
            # registrations the proxy sent twice, answered from the first (Idempotency-Key)
            "replayed": sum(r.replayed for r in self.requests),
        }


def reason(r: Request) -> str:
    """Why a failed request failed, in a few words (its verdict, or for a line without one
    its error's class or its status)."""
    return r.verdict or r.error.split(":")[0] or f"HTTP {r.status}"


def _text(file: Path) -> str:
    return file.read_text(errors="replace") if file.exists() else ""


def users_for(rate: float) -> int:
    return max(2, math.ceil(rate / PER_USER_RATE))


def argv(url: str, rate: float, max_seconds: float, ui_port: int | None = None) -> list[str]:
    """locust's command line: headless, or with ``ui_port`` its web page on 127.0.0.1 (the
    run starts at once all the same, and ends as bounded)."""
    _ours(url, f"send load to {url}", "load goes")
    users = users_for(rate)
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        *(
            ["--autostart", "--web-host", "127.0.0.1", "--web-port", str(ui_port)]
            if ui_port
            else ["--headless"]
        ),
        "--host",
        url,
        "-u",
        str(users),
        "-r",
        str(users),
        "--run-time",
        f"{int(max_seconds)}s",
        "--stop-timeout",
        "5",
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--exit-code-on-error",
        "0",
    ]


def environment(
    base: Mapping[str, str], out: Path, rate: float, max_requests: int, paths: Sequence[str] = ()
) -> dict[str, str]:
    """locust's environment: ``base`` without proxy settings, and the run's settings for the
    locustfile (``out``: its lines; their totals beside them; this checkout first on its
    PYTHONPATH); ``paths`` (GET paths read in turn instead of the demo app's mix) as
    ``CDLAB_LOAD_PATHS``, comma-separated."""
    bad = [p for p in paths if not p.startswith("/") or "," in p or p != p.strip()]
    if bad:
        raise LoadError(
            "send load to the given paths",
            f"{bad[0]!r} is not a GET path the load can read",
            hint="give paths like '/simple/' or '/api/users?limit=5': a leading '/', no comma "
            "and no surrounding space.",
        )
    env = {k: v for k, v in base.items() if k not in _NO_PROXY and k != "CDLAB_LOAD_PATHS"}
    path = [str(ROOT), *([base["PYTHONPATH"]] if base.get("PYTHONPATH") else [])]
    env.update(
        PYTHONPATH=os.pathsep.join(path),  # this checkout's lab (the verdicts)
        CDLAB_LOAD_OUT=str(out),
        CDLAB_LOAD_TOTALS=str(totals_file(out)),
        CDLAB_LOAD_RATE=str(rate),
        CDLAB_LOAD_USERS=str(users_for(rate)),
        CDLAB_LOAD_MAX=str(max_requests),
        NO_PROXY=",".join(sorted({"127.0.0.1", urlsplit(app_url()).hostname or ""})),
    )
    if paths:
        env["CDLAB_LOAD_PATHS"] = ",".join(paths)
    return env


def app_url() -> str:
    """The demo app through this lab's proxy, from the workstation (http://127.0.0.1:8000 for
    the default lab; prod's own address when prod is an existing machine): where load goes
    unless told otherwise."""
    from lab.config import public_host, public_port

    return f"http://{public_host()}:{public_port(8000)}"


def _ours(url: str, action: str, what: str) -> None:
    """Load and reads go to the lab's published ports only: 127.0.0.1, or prod's own address
    when cdlab did not create prod (``public_host``)."""
    from lab.config import public_host

    host = urlsplit(url).hostname
    allowed = ["127.0.0.1", *([public_host()] if public_host() != "127.0.0.1" else [])]
    if host not in allowed:
        raise LoadError(
            action,
            f"{what} to {' or '.join(allowed)} only, not to {host!r}",
            hint=f"give a URL like {app_url()} (a port the proxy publishes).",
        )


@contextmanager
def running(
    rate: float = 300,
    name: str = "load",
    url: str = "",
    max_seconds: float = 900,
    max_requests: int | None = None,
    paths: Sequence[str] = (),
    folder: Path | None = None,
    ui_port: int | None = None,
) -> Iterator[Traffic]:
    """Run load for the duration of the block (at most ``max_seconds`` and ``max_requests``,
    default rate x seconds x 1.2); the ``Traffic`` holds every request afterwards, the file's
    count of lines and locust's totals (``Traffic.problems``). The load is the demo app's mix
    of reads and registrations or, given ``paths``, GETs of those paths in turn (any service:
    a manifest's ``[load] paths``). Its files (``name``.jsonl, .totals.json, .locust.log) go
    to ``folder``, by default ``REPORTS``; ``ui_port``: locust's web page on 127.0.0.1 there."""
    folder = folder or REPORTS
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{name}.jsonl"
    env = environment(os.environ, out, rate, max_requests or int(rate * max_seconds * 1.2), paths)
    out.unlink(missing_ok=True)
    totals_file(out).unlink(missing_ok=True)
    log = (folder / f"{name}.locust.log").open("w")
    proc = subprocess.Popen(
        argv(url or app_url(), rate, max_seconds, ui_port),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group: _stop ends locust's workers with it
        preexec_fn=_die_with_parent,
    )
    traffic = Traffic(name, rate, out)
    watch = _Heartbeat(traffic.own_stalls)
    watch.start()
    try:
        _wait_first(out, proc, folder / f"{name}.locust.log")
        traffic.started = time.time()
        yield traffic
    finally:
        traffic.ended = time.time()
        watch.stop()
        _stop(proc)
        log.close()
        traffic.lines = parse(_text(out))
        traffic.totals = read_totals(totals_file(out))
        seen = traffic.lines.requests
        traffic.requests = [r for r in seen if traffic.started <= r.t <= traffic.ended]


class _Heartbeat(threading.Thread):
    """Every stall of this process of a second or more (it got no CPU), into ``stalls``
    as (unix time it began, seconds): the test's side of ``stall_note``."""

    def __init__(self, stalls: list[tuple[float, float]], beat: float = 0.1) -> None:
        super().__init__(daemon=True, name="load-heartbeat")
        self.stalls, self.beat, self.done = stalls, beat, threading.Event()

    def run(self) -> None:
        last = time.monotonic()
        while not self.done.wait(self.beat):
            now = time.monotonic()
            lag = now - last - self.beat
            if lag >= 1.0 and len(self.stalls) < 100:
                self.stalls.append((time.time() - lag, lag))
            last = now

    def stop(self) -> None:
        self.done.set()
        self.join(2)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started it ends, even by a
    signal (no ``finally`` runs then). A bench stopped with Ctrl-C or kill left its locust
    loading the lab for the rest of its 900 s, which skewed every figure measured meanwhile."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _wait_first(out: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out.exists() and out.stat().st_size > 0:
            time.sleep(1.0)  # every user spawned and at its rate
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    code = proc.poll()
    _stop(proc)
    why = f"exited (code {code})" if code is not None else f"ran {timeout:.0f} s"
    raise LoadError(
        "start the load",
        f"locust {why} without sending a request; the end of its log {log}:",
        log=log.read_text()[-2000:],
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def readback(traffic: Traffic, url: str = "", workers: int = 8) -> list[str]:
    """The registrations answered 201 during ``traffic`` that ``url`` cannot return now (each
    by its id, with the same email): what was lost. When registrations were sent and none was
    answered 201 with an id, there is nothing to read back: that is said as one more line,
    so that ``readback(...) == []`` cannot pass on no evidence."""
    from concurrent.futures import ThreadPoolExecutor

    import requests

    url = url or app_url()
    _ours(url, f"read back the registrations from {url}", "reads go")
    session = requests.Session()
    session.trust_env = False

    def missing(item: tuple[str, int]) -> str | None:
        email, uid = item
        try:
            resp = session.get(f"{url}/api/users/{uid}", timeout=10)
            doc = resp.json()
        except (requests.RequestException, ValueError):
            return email
        found = isinstance(doc, dict) and doc.get("email") == email
        return None if resp.status_code == 200 and found else email

    registered = traffic.registered()
    if traffic.writes() and not registered:
        return [_nothing_registered(traffic.writes())]
    with ThreadPoolExecutor(workers) as pool:
        return [m for m in pool.map(missing, registered.items()) if m]
