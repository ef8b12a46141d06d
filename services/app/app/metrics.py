"""Per-release request metrics, flushed to carbon once a second (plaintext protocol).

Paths: ``cdlab.<service>.<release>.<instance>.requests.<class>`` (count in that second) and
``...latency.{mean,p95,max}`` (milliseconds). ``instance`` is ``<hostname>-<pid>``: every process
writes its own series, so nothing overwrites anything; queries sum over ``*``.
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of ``values`` (``p`` in 0..100)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def safe(part: str) -> str:
    """A metric path component: dots and spaces would split or break the path."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in part) or "_"


class Window:
    """Counts and latencies of one second."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = defaultdict(int)
        self.latencies: list[float] = []

    def add(self, status: int, millis: float) -> None:
        self.counts[status_class(status)] += 1
        self.latencies.append(millis)

    def lines(self, prefix: str, ts: int) -> list[str]:
        out = [f"{prefix}.requests.{k} {v} {ts}" for k, v in sorted(self.counts.items())]
        if self.latencies:
            mean = sum(self.latencies) / len(self.latencies)
            out += [
                f"{prefix}.latency.mean {mean:.3f} {ts}",
                f"{prefix}.latency.p95 {percentile(self.latencies, 95):.3f} {ts}",
                f"{prefix}.latency.max {max(self.latencies):.3f} {ts}",
            ]
        return out


class Recorder:
    """Thread-safe per-second windows, flushed by a daemon thread started on first use."""

    def __init__(
        self, prefix: str, send: Callable[[str], None], clock: Callable[[], float] = time.time
    ) -> None:
        self.prefix, self.send, self.clock = prefix, send, clock
        self.lock = threading.Lock()
        self.windows: dict[int, Window] = {}
        self.thread: threading.Thread | None = None

    def record(self, status: int, millis: float) -> None:
        second = int(self.clock())
        with self.lock:
            self.windows.setdefault(second, Window()).add(status, millis)
            if self.thread is None:  # started lazily: after gunicorn forked this worker
                self.thread = threading.Thread(target=self._loop, daemon=True, name="metrics")
                self.thread.start()

    def drain(self, before: int) -> list[str]:
        """Lines for every complete second before ``before``, removed from memory."""
        with self.lock:
            done = sorted(s for s in self.windows if s < before)
            windows = [(s, self.windows.pop(s)) for s in done]
        return [line for s, w in windows for line in w.lines(self.prefix, s)]

    def _loop(self) -> None:
        while True:
            time.sleep(1.0 - (self.clock() % 1.0) + 0.05)
            lines = self.drain(int(self.clock()))
            if lines:  # best effort: a metric is never worth failing or slowing a request
                with contextlib.suppress(OSError):
                    self.send("\n".join(lines) + "\n")


def carbon_sender(host: str, port: int) -> Callable[[str], None]:
    def send(payload: str) -> None:
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.sendall(payload.encode())

    return send
