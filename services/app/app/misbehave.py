"""TEST HOOK, off by default: ``CDLAB_MISBEHAVE`` makes the service answer wrongly on purpose,
so that a test can show the load's oracle sees it (a positive control:
tests/load/test_oracle_controls.py). No deploy of the lab sets it.

    CDLAB_MISBEHAVE="conflict=5,truncate=1,release=other"

- ``conflict=P``: P % of registrations are answered 409 (and nothing is stored);
- ``truncate=P``: P % of the answers (never /health) declare their whole Content-Length, send
  half the body, then the connection is closed;
- ``release=NAME``: the X-Release header names NAME instead of this release.

Shares are exact, not random: the n-th request misbehaves when floor(n * P / 100) grows.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass

FORM = "conflict=PERCENT,truncate=PERCENT,release=NAME (any of them, comma-separated)"


@dataclass(frozen=True)
class Misbehaviour:
    conflict: int = 0
    truncate: int = 0
    release: str = ""


def parse(text: str) -> Misbehaviour:
    """The misbehaviour ``text`` asks for ("" asks for none). Raises ``ValueError`` naming the
    expected form for anything else."""
    shares, release = {"conflict": 0, "truncate": 0}, ""
    for item in (i.strip() for i in text.split(",") if i.strip()):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in (*shares, "release") or not value:
            raise ValueError(f"CDLAB_MISBEHAVE: {item!r} is not understood; expected {FORM}")
        if key == "release":
            release = value
        elif value.isdigit() and int(value) <= 100:
            shares[key] = int(value)
        else:
            raise ValueError(f"CDLAB_MISBEHAVE: {key} must be a percent from 0 to 100: {value!r}")
    return Misbehaviour(shares["conflict"], shares["truncate"], release)


class Share:
    """Says yes to exactly ``percent`` % of its calls, spread evenly (thread-safe)."""

    def __init__(self, percent: int) -> None:
        self.percent = percent
        self._count = itertools.count(1)
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        if not self.percent:
            return False
        with self._lock:
            n = next(self._count)
        return n * self.percent // 100 > (n - 1) * self.percent // 100


class CutOnPurpose(RuntimeError):
    """Raised after half an answer's body: the server then closes the connection."""


def cut(body: bytes) -> Iterator[bytes]:
    """Half of ``body`` (its Content-Length says all of it), then ``CutOnPurpose``."""
    yield body[: len(body) // 2]
    raise CutOnPurpose("CDLAB_MISBEHAVE truncate: the rest of this body is not sent, on purpose")
