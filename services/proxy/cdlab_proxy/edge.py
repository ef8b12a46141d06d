"""Figures at the edge: every request a service's HAProxy answers, counted for the release that
served it, every second, into carbon (pure parts; ``metrics`` does the I/O).

Each HAProxy logs one line per request (``LOG_FORMAT``, to the supervisor, from its ring): the
service, the release that answered (from the slot map, see ``config``), the status, the
time it took and how it ended. Health checks are not requests and are not logged. A request the
proxy could not get an answer for (connection refused or reset, an empty answer, a timeout)
counts as a ``proxy`` error against the release it was sent to.

What HAProxy's log cannot say, its per-server counters do: a request redispatched away from a
release (it failed there and another served it) counts against the release chosen first, from
the ``wredis`` counter of ``show stat`` (see ``stat_deltas``).

The naming scheme (documented in the README), one point a second while a release has traffic::

    edge.<service>.<release>.requests.{2xx,3xx,4xx,5xx,proxy,aborted}  requests that second
    edge.<service>.<release>.latency.{p50,p95,p99,max}                  milliseconds
    edge.<service>.<release>.redispatched                   failed here, served elsewhere
    edge.<service>.<release>.retries                        connection retries here (those of
                                                            a request redispatched: not here)
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PREFIX = "edge"
MARK = "cdlab-edge"  # the first word of a request line (anything else on the socket is ignored)
# %f frontend (= service), the release var (set from the slot map at the response), status
# (-1: none), active time (ms), termination state, retries ("+" when redispatched), method, path
LOG_FORMAT = f"{MARK} %f %[var(txn.release)] %ST %Ta %ts %rc %HM %HPO"
CLASSES = ("2xx", "3xx", "4xx", "5xx", "proxy", "aborted")
PERCENTILES = (("p50", 50), ("p95", 95), ("p99", 99))
GRACE = 0.3  # seconds a second's lines may still arrive after it ended (read every 50 ms)
NO_RELEASE = "-"  # no release was chosen (no server up): counted under this name


@dataclass(frozen=True)
class Request:
    service: str
    release: str  # NO_RELEASE when the proxy had none to send it to
    status: int  # -1: no answer
    ms: int
    termination: str  # HAProxy's two-letter termination state, "--" when normal
    retries: int
    method: str
    path: str
    redispatched: bool = False  # "+" before the retries: another server than the first answered

    @property
    def kind(self) -> str:
        return classify(self.status, self.termination)


def classify(status: int, termination: str) -> str:
    """A request's class, from its status (-1: none) and HAProxy's termination state (HAProxy
    2.6, configuration.txt 8.5: the first letter says who ended it, the second in which phase):

    - ``aborted``: the client left before any answer (``CH``, ``CD`` with no status);
    - ``proxy``: a release did not give a whole answer: refused, reset, closed or timed out
      (``SC``/``sC``/``sQ`` 503, ``SH`` 502, ``sH`` 504; and ``SD``/``sD`` after its status:
      the answer was cut short), gave one the proxy refused to pass on (``PH`` 502, ``PD``),
      or none was reached (no status, any other 502/503/504 of the proxy's own);
    - else by its status (1xx with 2xx): a release's own answer, its 502 included (``--``),
      the proxy's local answers (``LR``: stats, redirects), a request the proxy refused on
      its own rules (``PR`` 403 denied, ``PR`` 400 malformed: the client's doing, no
      release involved, so 4xx and not ``proxy``), one the client never finished sending
      (``CR`` 400, ``cR`` 408), an answer the client left during (``CD`` 200).
    """
    cause, phase = termination[:1], termination[1:2]
    if status < 0:
        return "aborted" if cause in ("C", "c") else "proxy"
    if (
        cause in ("S", "s")
        or (cause == "P" and phase in ("D", "L"))
        or (status in (502, 503, 504) and cause not in ("-", "L"))
    ):
        return "proxy"
    if 100 <= status < 300:
        return "2xx"
    return f"{status // 100}xx" if 300 <= status < 600 else "proxy"


def parse(line: str) -> Request | None:
    """One request line, or None for anything else (HAProxy's own messages, a cut line)."""
    parts = line.strip().split(" ", 8)
    if len(parts) < 8 or parts[0] != MARK:
        return None
    _, service, release, status, ms, term, retries, method, *rest = parts
    try:
        return Request(
            service,
            release if release and release != "-" else NO_RELEASE,
            int(status),
            max(0, int(ms)),
            term,
            int(retries.removeprefix("+")),
            method,
            rest[0] if rest else "",
            retries.startswith("+"),
        )
    except ValueError:
        return None


def _outcome(status: str, termination: str, retries: str) -> tuple[str, int]:
    """A request line's class and the retries it counts for the release that answered (none
    when it was redispatched: see ``Second.add``); ``ValueError`` when they are not numbers."""
    tries = int(retries.removeprefix("+"))
    return classify(int(status), termination), 0 if retries.startswith("+") else tries


def percentile(sorted_ms: list[int], p: float) -> int:
    """Nearest-rank percentile of a sorted, non-empty list."""
    # p * n first: p / 100 * n is off by one rank for some (7 / 100 * 100 = 7.000000000000001)
    return sorted_ms[max(0, math.ceil(p * len(sorted_ms) / 100) - 1)]


@dataclass
class Second:
    """One release's requests in one second."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    ms: list[int] = field(default_factory=list)
    retries: int = 0
    redispatched: int = 0

    def add(self, r: Request) -> None:
        self.counts[r.kind] += 1
        # a redispatched request's retries were spent on the releases it left (``redispatched``
        # counts it against the first), not on the one that answered
        self.retries += 0 if r.redispatched else r.retries
        if r.kind != "aborted":
            self.ms.append(r.ms)


class Window:
    """Requests by (second, service, release), until ``flush`` hands them over, each second
    once: a request arriving for a second already flushed counts in the first one still open
    (carbon keeps the last point sent for a second: a second flushed again would replace its
    figures with those of its latecomers)."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[int, str, str], Second] = defaultdict(Second)
        self.open_from = 0  # every second before this one has been flushed
        # (status, termination, retries) as logged -> (class, retries counted): a few dozen
        self._outcomes: dict[tuple[str, str, str], tuple[str, int]] = {}

    def add(self, r: Request, now: float) -> None:
        self.seconds[(max(int(now), self.open_from), r.service, r.release)].add(r)

    def add_lines(self, lines: Iterable[str], now: float) -> list[str]:
        """Count every request line of ``lines`` at ``now``, as ``add(parse(line), now)`` does
        (the proxy's thousands a second: one split and one lookup a line); returns the lines
        that are not request lines, not counted."""
        second = max(int(now), self.open_from)
        seconds, outcomes = self.seconds, self._outcomes
        skipped = []
        for line in lines:
            parts = line.split(" ", 7)
            if len(parts) < 8 or parts[0] != MARK or line[-1].isspace():
                # a cut line, HAProxy's own message, spaces around it: as ``parse`` reads it
                r = parse(line)
                if r is None:
                    skipped.append(line)
                else:
                    self.add(r, now)
                continue
            _, service, release, status, ms, termination, retries, _ = parts
            try:
                outcome = outcomes.get((status, termination, retries))
                if outcome is None:
                    outcome = _outcome(status, termination, retries)
                    if len(outcomes) < 4096:  # bounded, whatever comes
                        outcomes[(status, termination, retries)] = outcome
                took = int(ms)
            except ValueError:
                skipped.append(line)
                continue
            if not release or release == "-":
                release = NO_RELEASE
            kind, counted = outcome
            s = seconds[(second, service, release)]
            s.counts[kind] += 1
            s.retries += counted
            if kind != "aborted":
                s.ms.append(took if took > 0 else 0)
        return skipped

    def add_redispatched(self, counts: Mapping[tuple[str, str], int], now: float) -> None:
        for (service, release), n in counts.items():
            if n > 0:
                self.seconds[(max(int(now), self.open_from), service, release)].redispatched += n

    def flush(self, now: float, grace: float = GRACE) -> list[str]:
        """Carbon lines of every second that ended at least ``grace`` seconds ago."""
        self.open_from = max(self.open_from, math.floor(now - 1 - grace) + 1)
        done = sorted(k for k in self.seconds if k[0] < self.open_from)
        return [line for k in done for line in lines(*k, self.seconds.pop(k))]


def lines(second: int, service: str, release: str, s: Second) -> list[str]:
    """Carbon's plaintext lines for one release's second."""
    base = f"{PREFIX}.{service}.{release}"
    out = [f"{base}.requests.{c} {n} {second}" for c, n in s.counts.items()]
    if s.ms:
        ms = sorted(s.ms)
        out += [f"{base}.latency.{name} {percentile(ms, p)} {second}" for name, p in PERCENTILES]
        out.append(f"{base}.latency.max {ms[-1]} {second}")
    out.append(f"{base}.retries {s.retries} {second}")
    out.append(f"{base}.redispatched {s.redispatched} {second}")
    return out


def stat_counters(text: str) -> dict[tuple[str, str], int]:
    """``wredis`` (requests redispatched away) per (backend, server) from ``show stat`` (CSV
    with a ``# pxname,svname,...`` header)."""
    rows = text.splitlines()
    if not rows or not rows[0].startswith("# "):
        return {}
    header = rows[0][2:].split(",")
    try:
        px, sv, col = header.index("pxname"), header.index("svname"), header.index("wredis")
    except ValueError:
        return {}
    out = {}
    for row in rows[1:]:
        cells = row.split(",")
        if len(cells) <= col or cells[sv] in ("FRONTEND", "BACKEND"):
            continue
        try:
            out[(cells[px], cells[sv])] = int(cells[col] or 0)
        except ValueError:
            continue
    return out


def stat_deltas(
    before: Mapping[tuple[str, str], int],
    now: Mapping[tuple[str, str], int],
    releases: Mapping[tuple[str, str], str],
) -> dict[str, int]:
    """Redispatches since ``before``, by the release each slot serves (``releases``); a counter
    that went down (a new process) counts from zero."""
    out: dict[str, int] = defaultdict(int)
    for key, value in now.items():
        release = releases.get(key)
        if release is None:
            continue
        delta = value - before.get(key, 0)
        out[release] += value if delta < 0 else delta
    return {k: v for k, v in out.items() if v}


def release_keys(
    slots: Iterable[tuple[str, str, str]], hosts: Mapping[str, Mapping[str, str]]
) -> dict[str, str]:
    """The slot map's entries: ``<backend>/<server>`` -> release, for every slot (backend,
    server, fqdn) whose name is one routed in its backend (``hosts``: backend -> slot name, as
    ``document.fqdn`` gives it -> release)."""
    return {f"{b}/{s}": hosts[b][fqdn] for b, s, fqdn in slots if fqdn in hosts.get(b, {})}
