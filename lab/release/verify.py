"""What a release run watches: the proxy's answers (``through_proxy``), a canary step's
metrics (``judge_step``) and the bake window after a switch (``bake``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests

from lab.errors import BakeFailed, LabError, ReleaseError
from lab.ports.etcd import Etcd
from lab.ports.metrics import Graphite
from lab.ports.proxy import Runtime
from lab.release import judge
from lab.release.model import Candidate, StepVerdict

BAKE_MISSES = 5  # reads of the engine or proxy failing in a row before the bake gives up
# seconds the edge's figures of a second take to be readable: the proxy sends a second's figures
# once it has ended and its late lines had 0.3 s (edge.GRACE), and carbon answers them from its
# cache; a judge that read sooner would judge the step's last seconds as if no request was made
SETTLE = 1.6
CANARY_KEY = "/cdlab/canary/"  # + service: "promote" or "abort", written by hand


def through_proxy(
    url: str,
    release: str,
    timeout: float = 15.0,
    since: float | None = None,
    headers: dict[str, str] | None = None,
    path: str = "/version",
) -> float:
    """Poll ``url`` + ``path`` (sending ``headers``) until ``release`` answers 20 times in a
    row (the X-Release the proxy puts on every answer); returns the seconds from ``since``
    (default: now) to the request that began that run: from then on 100 % of responses came
    from ``release``."""
    session = requests.Session()
    session.trust_env = False
    session.headers.update(headers or {})
    started = time.monotonic() if since is None else since
    streak, last, streak_began = 0, "no answer", started
    while time.monotonic() - started < timeout:
        sent = time.monotonic()
        try:
            got = session.get(url + path, timeout=2).headers.get("X-Release", "")
            if got == release and streak == 0:
                streak_began = sent
            streak = streak + 1 if got == release else 0
            last = got
        except requests.RequestException as exc:
            streak, last = 0, type(exc).__name__
        if streak >= 20:
            return streak_began - started
        time.sleep(0.002)
    raise ReleaseError(
        f"the proxy at {url} still answers with release {last!r}, not "
        f"{release!r}, after {timeout:.0f} s"
    )


def judge_step(
    etcd: Etcd,
    graphite: Graphite,
    c: Candidate,
    live: str,
    interval: float,
    thresholds: judge.Thresholds,
    settle: float = SETTLE,
) -> StepVerdict:
    """Wait out one canary step (or a command by hand) and judge it on the edge's figures of
    the whole step so far (from a second after its routes were written, when the proxy runs
    them); holds repeat the wait. Graphite not answering is an error: a canary is never
    promoted blind. The verdict carries the figures it was made on."""
    key, holds, began = CANARY_KEY + c.service.name, 0, time.time()
    start = began + min(1.0, interval / 2)
    wait = interval + settle
    while True:
        command = _wait_or_command(etcd, key, wait)
        wait = interval
        if command:
            reason = "promoted by hand" if command == "promote" else "aborted by hand"
            return StepVerdict(judge.Verdict(command, reason), by_hand=command)
        until = time.time() - settle
        window = max(1, int(until) - int(start))
        try:
            cand = graphite.sample(c.service.name, c.release, window, until)
            was = graphite.sample(c.service.name, live, window, until)
            verdict = judge.judge(cand, was, thresholds)
        except requests.RequestException as exc:
            raise ReleaseError(
                f"the judge could not read the canary's metrics from Graphite at "
                f"{graphite.url}: {type(exc).__name__}: {exc}. A canary is never promoted "
                "without them. Next step: check graphite-web on prod ('invoke lab.status')",
                c.service.name,
                c.release,
            ) from exc
        # Graphite answers the points after ``from`` up to ``until``: seconds from+1 .. until
        figures = step_figures(cand, was, int(until) - window + 1, int(until) + 1)
        if verdict.decision != "hold":
            return StepVerdict(verdict, figures=figures)
        holds += 1
        if holds > thresholds.max_holds:
            reason = f"cannot judge: {verdict.reason} after {holds} waits"
            return StepVerdict(judge.Verdict("abort", reason), figures=figures)


def step_figures(
    cand: judge.Sample, live: judge.Sample, since: int, until: int
) -> dict[str, float]:
    """What a canary step's record keeps of the judge's reading: both releases' requests,
    errors and p95 at the edge, the candidate's observed share of the two, and the window
    they cover: the seconds from ``since`` up to (not including) ``until``, epoch."""
    out = {
        "candidate_requests": cand.requests,
        "candidate_errors": cand.errors,
        "live_requests": live.requests,
        "live_errors": live.errors,
        "window_from": float(since),
        "window_until": float(until),
    }
    if cand.requests + live.requests:
        out["candidate_share"] = cand.requests / (cand.requests + live.requests)
    if cand.p95_ms is not None:
        out["candidate_p95_ms"] = cand.p95_ms
    if live.p95_ms is not None:
        out["live_p95_ms"] = live.p95_ms
    return out


def _wait_or_command(etcd: Etcd, key: str, seconds: float) -> str:
    """Sleep ``seconds`` unless someone writes promote/abort to ``key``; returns that word."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        raw = etcd.get(key)
        if raw in (b"promote", b"abort"):
            etcd.delete(key)
            return raw.decode()
        time.sleep(0.25)
    return ""


def bake(
    runtime: Runtime,
    graphite: Graphite,
    container: Callable[[], dict[str, Any] | None],
    c: Candidate,
    previous: str,
    seconds: float,
    thresholds: judge.Thresholds,
    say: Callable[[str], None],
) -> str:
    """Watch the new release for ``seconds`` after the switch: ``BakeFailed`` as soon as its
    container stops or restarts, the proxy has it DOWN, or its error rate crosses the judge's
    threshold (compared with what ``previous`` served before). ``container`` returns the
    container's engine state (None when it is gone)."""
    name, started = c.service.name, time.monotonic()
    first = container()
    began = (first or {}).get("StartedAt", "")
    if first is not None and first.get("RestartCount", 0):  # it died between start and bake
        raise BakeFailed(name, c.release, f"it restarted {first['RestartCount']} time(s)", 0.0)
    last_said, metrics_note, next_metrics = seconds + 1, "", started + 2.0
    misses, last_miss = 0, ""
    while (elapsed := time.monotonic() - started) < seconds:
        try:
            state = container()
            slots = runtime.slots(name)
            misses = 0
        except (LabError, requests.RequestException, OSError) as exc:
            # the engine or the proxy not answering once is no verdict on the release
            misses, last_miss = misses + 1, f"{type(exc).__name__}: {exc}".splitlines()[0]
            if misses >= BAKE_MISSES:
                raise BakeFailed(
                    name,
                    c.release,
                    f"not observable {misses} times in a row ({last_miss})",
                    elapsed,
                ) from exc
            time.sleep(0.2)
            continue
        if state is None or not state.get("Running") or state.get("Restarting"):
            raise BakeFailed(name, c.release, "its container stopped", elapsed)
        if state.get("StartedAt", "") != began:
            raise BakeFailed(name, c.release, "its container restarted", elapsed)
        # its slot, or its replicas' (tasks.<host>): DOWN when none is up
        mine = [s for s in slots if s.fqdn in (c.host, f"tasks.{c.host}")]
        if all(s.operational == 0 for s in mine):
            raise BakeFailed(name, c.release, "the proxy has it DOWN", elapsed)
        if time.monotonic() >= next_metrics:
            next_metrics = time.monotonic() + 2.0
            try:
                window = max(2, int(elapsed) + 1)
                now = graphite.sample(name, c.release, window)
                verdict = judge.judge(now, graphite.sample(name, previous, 60), thresholds)
                if verdict.decision == "abort" and verdict.reason.startswith("error rate"):
                    raise BakeFailed(name, c.release, verdict.reason, elapsed)
            except requests.RequestException as exc:
                metrics_note = f"; metrics not read ({type(exc).__name__})"
        left = int(seconds - elapsed)
        if 0 < left < last_said and (left % 5 == 0 or left <= 3):
            say(f"    {left} s left of the bake window")
            last_said = left
        time.sleep(0.2)
    return f"{c.release} healthy for {seconds:.0f} s{metrics_note}"
