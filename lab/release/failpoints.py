"""Failpoints: make a named step of a release run wait or fail on purpose, from the
environment, so an interruption or a failure can be placed exactly (the fault tests use it; a
trainer can too)::

    CDLAB_FAILPOINTS="drain=sleep:5,tests=fail" invoke deploy --ref HEAD

Unset (the default) it does nothing."""

from __future__ import annotations

import os
import time

from lab.errors import ConfigError, ReleaseError

ENV = "CDLAB_FAILPOINTS"
FORM = "KEY=sleep:SECONDS or KEY=fail, comma-separated (KEY: a stage key such as drain)"


def parse(text: str) -> dict[str, tuple[str, float]]:
    """``"drain=sleep:5,tests=fail"`` -> {"drain": ("sleep", 5.0), "tests": ("fail", 0.0)}."""
    out: dict[str, tuple[str, float]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, action = item.partition("=")
        what, _, arg = action.partition(":")
        try:
            if not key or what not in ("sleep", "fail") or (what == "sleep" and not arg):
                raise ValueError(item)
            out[key] = (what, float(arg) if arg else 0.0)
        except ValueError as exc:
            raise ConfigError(ENV, text, FORM) from exc
    return out


def hit(key: str) -> None:
    """At the start of step ``key``: wait or fail as ``CDLAB_FAILPOINTS`` says."""
    spec = parse(os.environ.get(ENV, "")).get(key)
    if spec is None:
        return
    what, seconds = spec
    if what == "sleep":
        time.sleep(seconds)
        return
    raise ReleaseError(f"failpoint '{key}' failed on purpose ({ENV})", stage=key)
