"""Load on demand, ``invoke load``: the proving suite's load generator as a task, so that a
canary has traffic to judge and a class has something to watch. The same locust process and
the same oracle as the suite's (``lab.proof.load``), bounded in rate, time and count, against
the lab's published ports on 127.0.0.1 only.

    demand = plan(root, "app", rate="50", duration="5m")   # bad input: a ConfigError
    summary = run(lab, demand, say=print)                  # progress every few seconds
    print(render(summary))

A run stopped early (Ctrl-C) still ends with the summary of what was sent.
"""

from __future__ import annotations

import errno
import socket
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from lab import report
from lab.config import parse_duration
from lab.errors import ConfigError, LabError, LoadError
from lab.ports.lab import Lab
from lab.proof import load
from lab.stack import services

MAX_RATE = 500  # requests/s: above it the generator, on the same machine, starves the lab
MAX_REQUESTS = 600_000  # a run's lines are read back whole at its end
MIN_SECONDS, MAX_SECONDS = 5, 3600
FOLDER = load.REPORTS.parent / "demand"  # reports/demand/load-<service>.jsonl and its totals
EVERY = 5.0  # seconds between two progress lines
UI_PORT = 8089  # locust's page with --ui (its own default)


@dataclass(frozen=True)
class Demand:
    """One load run to make: ``rate`` requests/s on ``service`` for ``seconds``."""

    service: str
    url: str
    rate: float
    seconds: float
    paths: tuple[str, ...]  # GET paths in turn (the manifest's [load] paths); (): the app's mix
    ui_port: int | None = None  # locust's web page on 127.0.0.1 at this port


@dataclass(frozen=True)
class Summary:
    demand: Demand
    seconds: float  # how long it ran
    stopped_early: bool  # Ctrl-C
    requests: int
    failed: int
    p50_ms: float
    p99_ms: float
    shares: tuple[tuple[str, int], ...]  # (release, answers) of the good answers, most first
    errors: tuple[tuple[str, int], ...]  # (why, count) of the failed ones, most first
    problems: tuple[str, ...]  # what keeps the oracle from vouching for the run
    file: Path

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def plan(
    root: Path,
    service: str,
    rate: str | float = 50,
    duration: str = "5m",
    ui_port: int | None = None,
) -> Demand:
    """The run to make (pure but for reading the service's manifest at HEAD); bad input is a
    ``ConfigError`` saying what is expected."""
    try:
        value = float(rate)
    except ValueError as exc:
        raise ConfigError("--rate", rate, f"requests per second, 1 to {MAX_RATE}") from exc
    if not 1 <= value <= MAX_RATE:  # NaN fails too
        raise ConfigError(
            "--rate", rate, f"requests per second, 1 to {MAX_RATE} (the lab shares this machine)"
        )
    seconds = parse_duration(duration, "--for", MIN_SECONDS, MAX_SECONDS)
    if value * seconds > MAX_REQUESTS:
        raise ConfigError(
            "--rate x --for",
            f"{value:g}/s x {seconds:g} s",
            f"at most {MAX_REQUESTS:,} requests in one run: a lower rate or a shorter time",
        )
    if ui_port is not None and not 1024 <= ui_port <= 65535:
        raise ConfigError("--ui-port", ui_port, "a port from 1024 to 65535")
    svc = services.load(root, service)
    return Demand(svc.name, services.public_url(svc), value, seconds, svc.load_paths, ui_port)


def summarize(demand: Demand, traffic: load.Traffic, stopped_early: bool) -> Summary:
    """What the run saw (pure, from the traffic's requests)."""
    ok = [r.ms for r in traffic.requests if r.ok]
    shares = Counter(r.release for r in traffic.requests if r.ok and r.release)
    errors = Counter(load.reason(r) for r in traffic.failed)
    return Summary(
        demand,
        traffic.seconds,
        stopped_early,
        len(traffic.requests),
        len(traffic.failed),
        load.percentile(ok, 50),
        load.percentile(ok, 99),
        tuple(shares.most_common()),
        tuple(errors.most_common()),
        tuple(traffic.problems()),
        traffic.file,
    )


class Tail:
    """The requests a growing lines file gained since the last ``read`` (a line still being
    written waits for the next one): progress without parsing the whole file each time."""

    def __init__(self, file: Path) -> None:
        self.file, self.offset, self.rest = file, 0, ""

    def read(self) -> list[load.Request]:
        try:
            with self.file.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        complete, _, self.rest = (self.rest + data.decode(errors="replace")).rpartition("\n")
        return load.parse(complete).requests


@dataclass
class Progress:
    """Counts so far and the last interval's answers, for one line every ``EVERY`` seconds."""

    requests: int = 0
    failed: int = 0
    recent: Counter[str] = field(default_factory=Counter)

    def add(self, new: list[load.Request]) -> None:
        self.requests += len(new)
        self.failed += sum(1 for r in new if not r.ok)
        self.recent = Counter(r.release for r in new if r.ok and r.release)

    def line(self, demand: Demand, elapsed: float) -> str:
        """Time, requests, failed, and the share of each release among the last answers."""
        total = sum(self.recent.values())
        split = ", ".join(f"{rel} {n * 100 / total:.0f} %" for rel, n in self.recent.most_common())
        return (
            f"load {demand.service}: {elapsed:.0f} s of {demand.seconds:.0f} s, "
            f"{self.requests:,} requests, {self.failed:,} failed"
            + (f"; now {split}" if split else "")
        )


def render(s: Summary) -> str:
    """The summary a person reads at the end."""
    d = s.demand
    how = "stopped early (Ctrl-C)" if s.stopped_early else "ran its time"
    lines = [
        f"load on {d.service} ({d.url}) at {d.rate:g} req/s {how}: {s.requests:,} requests in "
        f"{s.seconds:.1f} s ({s.rate:.1f}/s), {s.failed:,} failed",
        f"latency of the good answers: p50 {s.p50_ms:.1f} ms, p99 {s.p99_ms:.1f} ms",
    ]
    total = sum(n for _, n in s.shares)
    if total:
        lines.append(
            report.table(
                ("RELEASE", "ANSWERS", "SHARE"),
                [(rel, f"{n:,}", f"{n * 100 / total:.1f} %") for rel, n in s.shares],
            )
        )
    else:
        lines.append("no good answer came: is the service deployed? (`invoke releases`)")
    lines += [f"failed: {n:,} x {why}" for why, n in s.errors]
    lines += [f"the oracle cannot vouch for this run: {p}" for p in s.problems]
    lines.append(f"every request: {s.file}")
    return "\n".join(lines)


def run(lab: Lab, demand: Demand, say: Callable[[str], None]) -> Summary:
    """Send the load, saying where it stands every ``EVERY`` seconds; a Ctrl-C ends it early
    and the summary covers what was sent. Refused before anything starts when the service has
    no live release or the web page's port is taken."""
    from lab.release import api

    if api.current_routes(lab, demand.service).live is None:
        raise LabError(
            f"cannot put load on {demand.service}: no release of it is live; deploy one first "
            f"(`invoke deploy --service {demand.service}`)"
        )
    if demand.ui_port:
        _port_free(demand.ui_port)
    stopped = False
    try:
        with running(demand) as traffic:
            if demand.ui_port:
                say(f"locust's page: http://127.0.0.1:{demand.ui_port}/ (until the run ends)")
            end = time.monotonic() + demand.seconds
            tail, counts = Tail(traffic.file), Progress()
            try:
                while (left := end - time.monotonic()) > 0:
                    time.sleep(min(EVERY, left))
                    new = [r for r in tail.read() if r.t >= traffic.started]  # as the summary
                    counts.add(new)
                    say(counts.line(demand, traffic.seconds))
            except KeyboardInterrupt:
                stopped = True
    except KeyboardInterrupt:  # while locust was starting or stopping: nothing to sum up
        raise LoadError(
            f"put load on {demand.service}",
            "stopped (Ctrl-C) before the load ran or while it ended",
            hint="nothing is left running; run it again.",
        ) from None
    return summarize(demand, traffic, stopped)


def running(demand: Demand) -> AbstractContextManager[load.Traffic]:
    """``load.running`` for ``demand`` (its files in ``FOLDER``)."""
    return load.running(
        rate=demand.rate,
        name=f"load-{demand.service}",
        url=demand.url,
        max_seconds=demand.seconds + 10,  # the block ends it at ``seconds``; this bounds locust
        paths=demand.paths,
        folder=FOLDER,
        ui_port=demand.ui_port,
    )


def _port_free(port: int) -> None:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise LoadError(
                "open locust's page",
                f"127.0.0.1:{port} is in use",
                hint="give another port with --ui-port (e.g. --ui-port 8090).",
            ) from None
