"""What each release run is doing now, for ``invoke watch``: the run's stage line ("[7/15]
switch the proxy") in the route store under ``/cdlab/activity/``, on a lease of the run's own,
so that it is gone soon after the run ends, however it ends (a process killed by a signal
included: the lease expires).

The pipeline never waits on it: a thread of the board's own writes the latest line, so a slow
or unreachable etcd (one of the fault matrix's cases) costs the run nothing.

    with activity.board(lab.etcd, "deploy app 3f9c2e1a0b1c", progress):
        ...  # every stage the progress starts is published
    activity.current(lab.etcd)  # [Activity("deploy app 3f9c2e1a0b1c", "[7/15] switch", ...)]
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from lab.progress import Progress

PREFIX = "/cdlab/activity/"
TTL = 15  # seconds the line outlives a run that could not remove it


class Store(Protocol):
    def grant(self, ttl: int) -> str: ...
    def keepalive(self, lease: str) -> int: ...
    def revoke(self, lease: str) -> None: ...
    def put(self, key: str, value: bytes, fence: Any = None, lease: str | None = None) -> None: ...
    def get_prefix(self, prefix: str) -> dict[str, bytes]: ...


@dataclass(frozen=True)
class Activity:
    what: str  # "deploy app 3f9c2e1a0b1c"
    stage: str  # "[7/15] switch the proxy", "" before the first stage
    since: float  # unix time the stage began
    by: str  # user@host (pid)


def current(store: Store) -> list[Activity]:
    """The runs going on, oldest stage first; a value of another shape is skipped."""
    found = []
    for raw in store.get_prefix(PREFIX).values():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            doc = json.loads(raw)
            found.append(
                Activity(str(doc["what"]), str(doc["stage"]), float(doc["since"]), str(doc["by"]))
            )
    return sorted(found, key=lambda a: a.since)


class Board(threading.Thread):
    """Publishes the latest stage line of one run (``tell``) and keeps its lease alive; all
    in its own thread, every failure swallowed (it is a view, never part of the run)."""

    def __init__(self, store: Store, what: str) -> None:
        super().__init__(daemon=True, name="activity-board")
        self.store, self.what = store, what
        self.key = f"{PREFIX}{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self.by = f"{os.environ.get('USER', 'root')}@{socket.gethostname()} ({os.getpid()})"
        self.latest, self.since = "", time.time()
        self.changed, self.done = threading.Event(), threading.Event()

    def tell(self, line: str) -> None:
        self.latest, self.since = line, time.time()
        self.changed.set()

    def stop(self) -> None:
        """Ask the thread to remove the line and end; never waits for etcd."""
        self.done.set()
        self.changed.set()

    def run(self) -> None:
        lease, renewed = "", 0.0
        self.changed.set()  # publish the run at once, before its first stage
        while not self.done.is_set():
            self.changed.wait(TTL / 3)
            try:
                if not lease:
                    lease = self.store.grant(TTL)
                    renewed = time.monotonic()
                if self.changed.is_set() and not self.done.is_set():
                    self.changed.clear()
                    doc = {"what": self.what, "stage": self.latest, "since": self.since}
                    doc["by"] = self.by
                    self.store.put(self.key, json.dumps(doc).encode(), lease=lease)
                if time.monotonic() - renewed >= TTL / 3:
                    renewed = time.monotonic()
                    if self.store.keepalive(lease) <= 0:
                        lease = ""  # expired: a new one and the line again
                        self.changed.set()
            except Exception:  # etcd slow or gone: publish again in a moment
                self.changed.set()
                self.done.wait(0.5)
        if lease:
            with contextlib.suppress(Exception):
                self.store.revoke(lease)  # the line goes with it


@contextlib.contextmanager
def board(store: Store, what: str, progress: Progress) -> Iterator[Board]:
    """Publish ``what`` and each stage ``progress`` starts for the ``with`` body."""
    b = Board(store, what)
    b.start()
    progress.watchers.append(b.tell)
    try:
        yield b
    finally:
        with contextlib.suppress(ValueError):
            progress.watchers.remove(b.tell)
        b.stop()


def age(a: Activity, now: float | None = None) -> str:
    """How long the run has been at its stage, as a person reads it."""
    seconds = max(0.0, (now or time.time()) - a.since)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
