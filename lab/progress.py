"""Stages as data: each long step is a keyed, timed ``Stage``; a reporter prints them.

A stage's ``key`` (stable: ``start``, ``switch``, ``canary-25``...) and its ``figures`` are what
records, the bench and the tests read; its ``title`` is for people only. A run that knows its
stages up front declares them (``plan``), and each line then shows ``[3/11]``. While a stage
runs longer than ``TICK`` seconds its elapsed time is shown (in place on a terminal, a line
every ``TICK`` seconds otherwise).
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

TICK = 10.0


def slug(title: str) -> str:
    """A key for a stage that has none of its own: its title's first words (pure)."""
    words = re.findall(r"[a-z0-9]+", title.lower())[:3]
    return "-".join(words) or "stage"


@dataclass(frozen=True)
class Stage:
    key: str
    title: str
    status: str  # "changed", "unchanged", "failed", "interrupted" or "undone"
    seconds: float
    detail: str = ""
    figures: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # named facts that are not numbers

    @property
    def name(self) -> str:  # the title, under the name older readers used
        return self.title


@dataclass
class StageHandle:
    """Handed to the body of ``Progress.stage``: say what happened, its figures and notes."""

    status: str = "changed"
    detail: str = ""
    figures: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def unchanged(self, detail: str = "") -> None:
        self.status, self.detail = "unchanged", detail

    def changed(self, detail: str = "") -> None:
        self.status, self.detail = "changed", detail

    def figure(self, name: str, value: float) -> None:
        self.figures[name] = round(value, 4)

    def note(self, name: str, value: str) -> None:
        self.notes[name] = value


@dataclass
class Progress:
    """Times stages and prints one line as each starts and ends (quiet work stays quiet)."""

    out: TextIO | None = field(default_factory=lambda: sys.stderr)
    stages: list[Stage] = field(default_factory=list)
    planned: list[str] = field(default_factory=list)  # keys declared up front
    _next: int = 0  # where in ``planned`` the next stage is looked for
    ended: dict[str, float] = field(default_factory=dict)  # key -> monotonic end time
    # told the line of each stage as it starts ("[3/9] integration tests"): ``invoke watch``'s
    # source for the stage a run is at (``lab.release.activity``); must not block or raise
    watchers: list[Callable[[str], None]] = field(default_factory=list)

    def say(self, text: str) -> None:
        """Print ``text``; a closed or broken output (a hung-up terminal, a pipe whose reader
        died) never stops the work, above all not an undo."""
        if self.out is not None:
            try:
                print(text, file=self.out, flush=True)
            except (OSError, ValueError):
                self.out = None

    def plan(self, keys: Sequence[str]) -> None:
        """Declare the stages of a run up front: each then shows ``[n/N]``."""
        self.planned, self._next = list(keys), 0

    def _counter(self, key: str) -> str:
        if key not in self.planned[self._next :]:
            return ""
        n = self.planned.index(key, self._next)
        self._next = n + 1
        return f"[{n + 1}/{len(self.planned)}] "

    @contextmanager
    def stage(self, title: str, key: str | None = None) -> Iterator[StageHandle]:
        key = key or slug(title)
        handle = StageHandle()
        line = f"{self._counter(key)}{title}"
        self.say(f"==> {line} ...")
        for watcher in self.watchers:
            watcher(line)
        start = time.monotonic()
        stop = threading.Event()
        if self.out is not None:  # quiet work starts no ticker
            threading.Thread(target=self._tick, args=(start, stop), daemon=True).start()
        try:
            yield handle
        except BaseException as exc:
            took = time.monotonic() - start
            stop.set()
            status = "interrupted" if not isinstance(exc, Exception) else "failed"
            self._end(Stage(key, title, status, took, "", dict(handle.figures), dict(handle.notes)))
            self.say(f"    {status.upper()} after {took:.1f} s")
            raise
        finally:
            stop.set()
        took = time.monotonic() - start
        self._end(
            Stage(
                key,
                title,
                handle.status,
                took,
                handle.detail,
                dict(handle.figures),
                dict(handle.notes),
            )
        )
        note = f" ({handle.detail})" if handle.detail else ""
        self.say(f"    {handle.status} in {took:.1f} s{note}")

    def _tick(self, start: float, stop: threading.Event) -> None:
        tty = self.out is not None and self.out.isatty()
        every = 1.0 if tty else TICK
        while not stop.wait(every):
            took = time.monotonic() - start
            if took < TICK or self.out is None:
                continue
            if tty:
                print(f"\r    ... {took:.0f} s", end="", file=self.out, flush=True)
            else:
                self.say(f"    ... {took:.0f} s")
        if tty and time.monotonic() - start >= TICK and self.out is not None:
            print("\r", end="", file=self.out, flush=True)

    def _end(self, stage: Stage) -> None:
        self.stages.append(stage)
        self.ended[stage.key] = time.monotonic()

    def record(
        self,
        name: str,
        status: str,
        seconds: float,
        detail: str = "",
        key: str | None = None,
        figures: dict[str, float] | None = None,
    ) -> None:
        """A stage timed elsewhere (e.g. one of several done at once), reported like the rest."""
        key = key or slug(name)
        self._end(Stage(key, name, status, seconds, detail, dict(figures or {})))
        self.say(f"==> {self._counter(key)}{name} ...")
        self.say(f"    {status} in {seconds:.1f} s" + (f" ({detail})" if detail else ""))

    def get(self, key: str) -> Stage | None:
        """The last stage with ``key``."""
        return next((s for s in reversed(self.stages) if s.key == key), None)

    @property
    def changed(self) -> list[Stage]:
        return [s for s in self.stages if s.status == "changed"]

    @property
    def total_seconds(self) -> float:
        return sum(s.seconds for s in self.stages)
