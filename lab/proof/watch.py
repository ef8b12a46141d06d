"""A live view of the lab, ``invoke watch``: per service, the traffic of each release at the edge
(requests/s, failures/s, p50/p99, its share of the answers), the proxy's pool (weights; UP,
DOWN, draining), the matched-traffic rule; above them the deploy lock's holder and the stage
each release run is at. It reads what the tests read: the proxy's figures in Graphite
(``edge.<service>.<release>.*``), the Runtime API's slots, the route store.

    frame = read_frame(lab, ["app", "quotes"])   # facts; a source that fails is a problem line
    Console().print(render(frame))               # pure

A frame shows the last ``WINDOW`` complete seconds: the newest ``LAG`` seconds may still be
arriving (the edge sends a second once its grace is over; carbon's cache).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import requests
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from lab.errors import LabError
from lab.ports.lab import Lab
from lab.release import activity, lock
from lab.release import api as release
from lab.stack import services

WINDOW = 5
LAG = 2
FAILED = ("5xx", "proxy")  # the classes counted as failures at the edge
NO_RELEASE = "-"  # the edge's name for requests the proxy had no release to send to
T = TypeVar("T")


@dataclass(frozen=True)
class Figures:
    release: str
    rps: float  # requests per second at the edge
    failed_rps: float  # of them, failed (5xx or the proxy's own error)
    p50_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class Slot:
    release: str
    weight: int
    state: str  # UP, DOWN, DRAIN (no new requests), MAINT; a release's replicas: UP while one is
    up: int = 1  # its slots UP (a Swarm service's replicas: one slot each)
    slots: int = 1


@dataclass(frozen=True)
class ServiceView:
    name: str
    url: str
    live: str | None
    match: str  # "header:X-Beta=1 -> 3f9c2e1a0b1c", "" without one
    figures: tuple[Figures, ...]
    pool: tuple[Slot, ...]
    problems: tuple[str, ...]  # what could not be read for it


@dataclass(frozen=True)
class Frame:
    at: float
    services: tuple[ServiceView, ...]
    lock: str  # who holds the deploy lock, or that it is free
    runs: tuple[activity.Activity, ...]
    problems: tuple[str, ...]


def figures(
    series: Iterable[tuple[str, list[tuple[float | None, int]]]], service: str, now: float
) -> tuple[Figures, ...]:
    """``service``'s figures per release over the window (pure): from the edge's series
    ``edge.<service>.<release>.requests.<class>``, ``.redispatched`` (failed there and served
    by another, as the judge counts it) and ``.latency.{p50,p99}``; a second a release had no
    traffic has no point. p50: the mean of the seconds' p50 weighted by their requests;
    p99: the worst second's. Releases by requests, most first."""
    start, end = now - LAG - WINDOW, now - LAG
    count: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    failed: dict[str, float] = defaultdict(float)
    latency: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for name, points in series:
        parts = name.split(".")
        if len(parts) == 4 and parts[1] == service and parts[3] == "redispatched":
            parts.append("")  # failed there, served by another: the judge counts it failed
        if len(parts) != 5 or parts[1] != service:
            continue
        _, _, rel, kind, leaf = parts
        for value, t in points:
            if value is None or not start <= t < end:
                continue
            if kind == "requests":
                count[rel][t] += value
                failed[rel] += value if leaf in FAILED else 0.0
            elif kind == "redispatched":
                count[rel][t] += value
                failed[rel] += value
            elif kind == "latency" and leaf in ("p50", "p99"):
                latency[(rel, leaf)][t] = value
    out = []
    for rel, per_second in count.items():
        total = sum(per_second.values())
        p50 = latency[(rel, "p50")]
        weighted = [(p50[t], n) for t, n in per_second.items() if t in p50 and n]
        mean = sum(v * n for v, n in weighted) / sum(n for _, n in weighted) if weighted else None
        worst = max(latency[(rel, "p99")].values(), default=None)
        out.append(Figures(rel, total / WINDOW, failed[rel] / WINDOW, mean, worst))
    return tuple(sorted(out, key=lambda f: (-f.rps, f.release)))


def pool(slots: Iterable[object], service: str) -> tuple[Slot, ...]:
    """The proxy's slots of ``service`` that hold a release, one ``Slot`` per release (pure;
    ``cdlab_proxy.slots.Slot``). A Swarm service's replicas (slots named ``tasks.<host>``) are
    summed: the release's weight as its percent of the backend's, UP while one of them is."""
    prefix, replicas = f"{service}-", False
    found: dict[str, list[tuple[int, str]]] = {}
    for s in slots:
        named = str(getattr(s, "fqdn", ""))
        fqdn = named.removeprefix("tasks.")  # a release's replicas
        if not fqdn.startswith(prefix):
            continue
        replicas |= fqdn != named
        found.setdefault(fqdn[len(prefix) :], []).append((int(getattr(s, "weight", 0)), _state(s)))
    total = sum(w for ss in found.values() for w, _ in ss)
    out = []
    for rel, ss in found.items():
        weight, states = sum(w for w, _ in ss), [st for _, st in ss]
        if replicas:  # HAProxy's weights per replica, scaled: a share of the whole
            weight = round(100 * weight / total) if total else 0
        up = states.count("UP")
        state = "UP" if up else states[0]
        out.append(Slot(rel, weight, state, up, len(ss)))
    return tuple(sorted(out, key=lambda s: (-s.weight, s.release)))


def _state(s: object) -> str:
    if getattr(s, "in_maintenance", False):
        return "MAINT"
    if getattr(s, "draining", False):
        return "DRAIN"
    return "UP" if getattr(s, "operational", 0) == 2 else "DOWN"


def _try(problems: list[str], source: str, read: Callable[[], T]) -> T | None:
    """``read()``, or None with a line in ``problems`` saying which source failed and how."""
    try:
        return read()
    except (LabError, requests.RequestException, OSError, ValueError) as exc:
        problems.append(f"{source}: {str(exc).splitlines()[0][:160] if str(exc) else exc!r}")
        return None


def read_frame(lab: Lab, names: list[str]) -> Frame:
    """One frame's facts; each source that fails is said, the others still shown."""
    now = time.time()
    problems: list[str] = []
    targets = ["edge.*.*.requests.*", "edge.*.*.latency.{p50,p99}", "edge.*.*.redispatched"]
    series = _try(problems, "graphite", lambda: lab.graphite.series(targets)) or []
    held = _try(problems, "route store", lambda: lock.current(lab.etcd))
    runs = _try(problems, "route store", lambda: activity.current(lab.etcd)) or []
    views = []
    for name in names:
        mine: list[str] = []
        routes = _try(mine, "routes", functools.partial(release.current_routes, lab, name))
        slots = _try(mine, "proxy", functools.partial(lab.runtime.slots, name)) or []
        svc = services.load(lab.config.root, name)
        match = routes.match if routes else None
        views.append(
            ServiceView(
                name,
                services.public_url(svc),
                routes.live if routes else None,
                f"{match.rule} -> {match.release}" if match else "",
                figures(series, name, now),
                pool(slots, name),
                tuple(mine),
            )
        )
    holder = f"held by {held.who} since {held.since}: {held.what}" if held else "free"
    return Frame(now, tuple(views), holder, tuple(runs), tuple(dict.fromkeys(problems)))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def render(frame: Frame) -> RenderableType:
    """The frame as a person reads it (pure)."""
    head = Text(
        f"cdlab watch  {time.strftime('%H:%M:%S', time.localtime(frame.at))}  "
        f"(edge figures: the {WINDOW} s before the last {LAG})   deploy lock: {frame.lock}"
    )
    parts: list[RenderableType] = [head]
    for run in frame.runs:
        stage = run.stage or "starting"
        parts.append(Text(f"  running: {run.what}: {stage} ({activity.age(run, frame.at)})"))
    if not frame.runs:
        parts.append(Text("  no release run in progress"))
    for view in frame.services:
        parts.append(_service_table(view))
    parts += [Text(f"! {p}", style="red") for p in frame.problems]
    return Group(*parts)


def _service_table(view: ServiceView) -> Table:
    live = view.live or "nothing live"
    title = f"{view.name}  {view.url}  live: {live}" + (
        f"  matched: {view.match}" if view.match else ""
    )
    table = Table(title=title, title_justify="left", expand=False)
    for col in ("RELEASE", "POOL", "SHARE", "REQ/S", "FAILED/S", "P50", "P99"):
        table.add_column(col, justify="left" if col in ("RELEASE", "POOL") else "right")
    by_release = {f.release: f for f in view.figures}
    slots = {s.release: s for s in view.pool}
    total = sum(f.rps for f in view.figures)
    order = [*slots, *(r for r in by_release if r not in slots)]
    for rel in order:
        f, s = by_release.get(rel), slots.get(rel)
        share = (f"{f.rps * 100 / total:.1f} %" if f else "0.0 %") if total else "-"
        table.add_row(
            rel,
            _pooled(s) if s else ("no release up" if rel == NO_RELEASE else "gone"),
            share,
            f"{f.rps:.1f}" if f else "0.0",
            Text(f"{f.failed_rps:.1f}", style="red" if f.failed_rps else "") if f else Text("0.0"),
            _ms(f.p50_ms if f else None),
            _ms(f.p99_ms if f else None),
        )
    if not order:
        table.add_row("-", "empty", "-", "0.0", "0.0", "-", "-")
    for p in view.problems:
        table.add_row(Text(f"! {p}", style="red"), "", "", "", "", "", "")
    return table


def _pooled(s: Slot) -> str:
    """ "w90 UP", or a release's replicas: "w90 UP 2/3" (2 of its 3 slots UP)."""
    return f"w{s.weight} {s.state}" + (f" {s.up}/{s.slots}" if s.slots > 1 else "")


def once(lab: Lab, names: list[str], console: Console) -> Frame:
    """Print one frame (for copy-paste and tests)."""
    frame = read_frame(lab, names)
    console.print(render(frame))
    return frame


def live(lab: Lab, names: list[str], console: Console, seconds: float = 0) -> None:
    """Redraw every second until Ctrl-C (or ``seconds``, when given)."""
    end = time.monotonic() + seconds if seconds else float("inf")
    first = render(read_frame(lab, names))
    with (
        Live(first, console=console, auto_refresh=False) as view,
        contextlib.suppress(KeyboardInterrupt),
    ):
        while time.monotonic() < end:
            time.sleep(1.0 - time.time() % 1.0)
            view.update(render(read_frame(lab, names)), refresh=True)
