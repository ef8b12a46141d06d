"""Stages as data: each long step is a named, timed ``Stage``; a reporter prints them.

The same records feed the progress lines, the JSON run record and the tests.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO


@dataclass(frozen=True)
class Stage:
    name: str
    status: str  # "changed", "unchanged" or "failed"
    seconds: float
    detail: str = ""


@dataclass
class StageHandle:
    """Handed to the body of ``Progress.stage``: say what happened."""

    status: str = "changed"
    detail: str = ""

    def unchanged(self, detail: str = "") -> None:
        self.status, self.detail = "unchanged", detail

    def changed(self, detail: str = "") -> None:
        self.status, self.detail = "changed", detail


@dataclass
class Progress:
    """Times stages and prints one line as each ends (quiet work stays one short line)."""

    out: TextIO | None = field(default_factory=lambda: sys.stderr)
    stages: list[Stage] = field(default_factory=list)

    def say(self, text: str) -> None:
        if self.out is not None:
            print(text, file=self.out, flush=True)

    @contextmanager
    def stage(self, name: str) -> Iterator[StageHandle]:
        handle = StageHandle()
        self.say(f"==> {name} ...")
        start = time.monotonic()
        try:
            yield handle
        except BaseException:
            took = time.monotonic() - start
            self.stages.append(Stage(name, "failed", took, ""))
            self.say(f"    FAILED after {took:.1f} s")
            raise
        took = time.monotonic() - start
        self.stages.append(Stage(name, handle.status, took, handle.detail))
        note = f" ({handle.detail})" if handle.detail else ""
        self.say(f"    {handle.status} in {took:.1f} s{note}")

    def record(self, name: str, status: str, seconds: float, detail: str = "") -> None:
        """A stage timed elsewhere (e.g. one of several done at once), reported like the rest."""
        self.stages.append(Stage(name, status, seconds, detail))
        self.say(f"==> {name} ...")
        self.say(f"    {status} in {seconds:.1f} s" + (f" ({detail})" if detail else ""))

    @property
    def changed(self) -> list[Stage]:
        return [s for s in self.stages if s.status == "changed"]

    @property
    def total_seconds(self) -> float:
        return sum(s.seconds for s in self.stages)
