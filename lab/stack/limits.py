"""What one container of a service may use: the manifest's ``[limits]`` table (pure).

    [limits]
    memory = "256m"   # RAM, swap none: a whole number then m (MiB) or g (GiB), 16m to 999999m
    pids = 256        # processes and threads at once, 1 to 32768
    cpus = 1.5        # CPUs' worth of time, more than 0 and at most 64; absent: no CPU cap

Every container cdlab starts for a service (its releases, hooks, migrations, integration
tests) gets them; a table that is absent, or a key that is, takes ``Limits()``'s default, which
fits the services in ``services/`` (two gunicorn workers of eight threads, a stdlib server).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from lab.errors import ConfigError, UnknownKey

MIB = 1024 * 1024
KEYS = frozenset({"memory", "pids", "cpus"})
# 16m (a Python process needs more than Docker's minimum of 6m) to 999999m, or 1g to 999g
MEMORY = re.compile(r"\A(?:(?:1[6-9]|[2-9][0-9]|[1-9][0-9]{2,5})[mM]|[1-9][0-9]{0,2}[gG])\Z")
MEMORY_FORM = (
    'a size as a string: a whole number then m (MiB) or g (GiB), from "16m" to "999g", '
    'e.g. memory = "256m"'
)
PIDS = range(1, 32769)
PIDS_FORM = "processes and threads at once, a whole number from 1 to 32768, e.g. pids = 256"
MAX_CPUS = 64
CPUS_FORM = f"CPUs' worth of time, a number above 0 and at most {MAX_CPUS}, e.g. cpus = 1.5"


@dataclass(frozen=True)
class Limits:
    """One container's bounds: ``memory`` in bytes (and no swap beyond it), ``pids``, and
    ``cpus`` (0.0: no CPU cap)."""

    memory: int = 256 * MIB
    pids: int = 256
    cpus: float = 0.0


def parse_memory(text: object, source: str = "") -> int:
    """``text`` ("256m", "1g") in bytes; ``ConfigError`` naming ``memory``, the value, the
    expected form with an example, and ``source`` (the manifest and its table) otherwise."""
    if not isinstance(text, str) or not MEMORY.match(text):
        raise ConfigError("memory", text, MEMORY_FORM, source)
    unit = MIB if text[-1] in "mM" else 1024 * MIB
    return int(text[:-1]) * unit


def parse(doc: dict[str, Any], source: str) -> Limits:
    """The ``[limits]`` table ``doc`` of the manifest ``source`` (``{}``: every default)."""
    where = f"{source} [limits]"
    if not isinstance(doc, dict):
        raise ConfigError("limits", doc, f"a table with some of: {', '.join(sorted(KEYS))}", source)
    unknown = sorted(set(doc) - KEYS)
    if unknown:
        near = difflib.get_close_matches(unknown[0], sorted(KEYS), n=1)
        raise UnknownKey(unknown[0], doc[unknown[0]], sorted(KEYS), where, near[0] if near else "")
    default = Limits()
    memory = parse_memory(doc["memory"], where) if "memory" in doc else default.memory
    pids = doc.get("pids", default.pids)
    if not isinstance(pids, int) or isinstance(pids, bool) or pids not in PIDS:
        raise ConfigError("pids", pids, PIDS_FORM, where)
    cpus = doc.get("cpus", default.cpus)
    if "cpus" in doc and (
        isinstance(cpus, bool) or not isinstance(cpus, int | float) or not 0 < cpus <= MAX_CPUS
    ):
        raise ConfigError("cpus", cpus, CPUS_FORM, where)
    return Limits(memory, pids, float(cpus))
