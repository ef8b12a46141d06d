"""Reading the store (``python3 -m cdlab_logs query``): one service's lines, or one release's,
in time order, and with ``follow`` the lines that arrive after them.

Each file is in time order already (``store``: ``t`` is when the store received the line), so
the files are merged, never sorted. Following polls the files' sizes: a line is shown once it
is whole; a file renamed ``.log.1`` meanwhile is read to its end first.
"""

from __future__ import annotations

import heapq
import json
import os
import re
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from .store import CURRENT, OLD, files

POLL = 0.2  # seconds between two looks at the files while following
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")  # a line may not drive the terminal

Doc = dict[str, Any]


@dataclass(frozen=True)
class Query:
    service: str
    release: str | None = None  # None: every release of the service
    since: float | None = None  # seconds back from now; None: everything kept
    lines: int | None = None  # at most the last N of what matched
    as_json: bool = False


@dataclass
class _Cursor:
    """How far a file (by inode) has been read: the end of its last whole line."""

    ino: int
    offset: int


def inventory(root: Path) -> dict[str, list[str]]:
    """Service -> its releases, as the store's files name them."""
    found: dict[str, set[str]] = {}
    for kept in files(root):
        found.setdefault(kept.service, set()).add(kept.release)
    return {service: sorted(releases) for service, releases in sorted(found.items())}


def missing(root: Path, service: str, release: str | None) -> str:
    """Why the store has nothing to show for ``service`` (``release``), naming what it has;
    "" when it has something."""
    known = inventory(root)
    if service in known and (release is None or release in known[service]):
        return ""
    what = f"service '{service}'" + (f" release '{release}'" if release else "")
    if service in known:
        has = f"its releases with logs: {', '.join(known[service])}"
    elif known:
        has = "services with logs: " + "; ".join(
            f"{s} ({', '.join(r[-5:])}{', ...' if len(r) > 5 else ''})" for s, r in known.items()
        )
    else:
        has = "the store is empty: no release has logged a line yet"
    return f"no logs for {what} in {root}; {has}"


def render(doc: Doc, show_release: bool) -> str:
    """``2026-12-01T04:10:00.123Z prod app-3f2a1b [release] line``, control characters
    escaped (pure)."""
    t = float(doc["t"])
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"
    fields = [stamp, str(doc.get("host") or "-"), str(doc.get("container") or "-")]
    if show_release:
        fields.append(str(doc.get("release") or "-"))
    fields.append(str(doc.get("line", "")))
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", " ".join(fields))


def decode(raw: bytes) -> Doc | None:
    """One stored line, or None when it is not one (a torn or foreign line)."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("t"), int | float):
        return None
    return doc


def _records(f: BinaryIO, cursor: _Cursor, end: int, since: float) -> Iterator[Doc]:
    """The whole lines of ``f`` from ``cursor`` to ``end`` at ``since`` or later; the cursor
    follows each line read."""
    f.seek(cursor.offset)
    for raw in f:
        if not raw.endswith(b"\n") or cursor.offset + len(raw) > end:
            return
        cursor.offset += len(raw)
        doc = decode(raw)
        if doc is not None and doc["t"] >= since:
            yield doc


def _paths(root: Path, q: Query) -> list[tuple[Path, Path]]:
    """(current, old) file of each release asked for."""
    folder = root / q.service
    releases = [q.release] if q.release else sorted({k.release for k in files(root, q.service)})
    return [(folder / (r + CURRENT), folder / (r + OLD)) for r in releases]


def history(
    root: Path, q: Query, since: float, stack: ExitStack
) -> tuple[Iterator[Doc], dict[Path, _Cursor]]:
    """What is stored now, merged in time order, and where each current file ends (what
    ``follow`` reads on from). The files stay open in ``stack``."""
    inputs, cursors = [], {}
    for current, old in _paths(root, q):
        # the current file first: renamed .log.1 after this, it is still the file read
        now, before = _opened(current, stack), _opened(old, stack)
        ino = now[1].st_ino if now else -1
        if before and before[1].st_ino != ino and before[1].st_mtime >= since:
            inputs.append(_records(before[0], _Cursor(0, 0), before[1].st_size, since))
        if now:
            cursors[current] = _Cursor(ino, 0)
            inputs.append(_records(now[0], cursors[current], now[1].st_size, since))
    return heapq.merge(*inputs, key=_time), cursors


def _opened(path: Path, stack: ExitStack) -> tuple[BinaryIO, os.stat_result] | None:
    try:
        f = stack.enter_context(path.open("rb"))
    except FileNotFoundError:
        return None
    return f, os.fstat(f.fileno())


def _time(doc: Doc) -> float:
    return float(doc["t"])


def _fresh(current: Path, cursors: dict[Path, _Cursor]) -> list[Doc]:
    """The whole lines written to ``current`` since the last look (a new file: all of it)."""
    cursor = cursors.get(current)
    try:
        f = current.open("rb")
    except FileNotFoundError:
        # renamed .log.1 and its successor not created yet, or removed to keep the store in
        # bounds: the rest of a renamed file is read now, and its cursor kept (whatever comes
        # next in a new file is read from its start)
        rest = _rest_of_renamed(current, cursor) if cursor is not None else None
        if rest is None:
            cursors.pop(current, None)
        return rest or []
    got: list[Doc] = []
    with f:
        st = os.fstat(f.fileno())
        if cursor is not None and cursor.ino != st.st_ino:  # rotated: finish the old file first
            got += _rest_of_renamed(current, cursor) or []
            cursor = None
        if cursor is None or st.st_size < cursor.offset:
            cursor = cursors[current] = _Cursor(st.st_ino, 0)
        got += _records(f, cursor, st.st_size, 0.0)
    return got


def _rest_of_renamed(current: Path, cursor: _Cursor) -> list[Doc] | None:
    """The lines after ``cursor`` of the file it was reading, now renamed ``.log.1``; None when
    that file is gone."""
    old = current.with_name(current.name[: -len(CURRENT)] + OLD)
    try:
        with old.open("rb") as g:
            st = os.fstat(g.fileno())
            return list(_records(g, cursor, st.st_size, 0.0)) if st.st_ino == cursor.ino else None
    except FileNotFoundError:
        return None


def run(
    root: Path,
    q: Query,
    out: TextIO,
    *,
    follow: bool = False,
    stop: threading.Event | None = None,
    stdin_fd: int | None = None,
    clock: Callable[[], float] = time.time,
    poll: float = POLL,
) -> None:
    """Write what ``q`` matches to ``out``; with ``follow``, then what arrives, until ``stop``
    is set (or ``stdin_fd`` reaches its end: the reader on the other side went away)."""
    stop = stop or threading.Event()
    since = clock() - q.since if q.since is not None else float("-inf")
    with ExitStack() as stack:
        merged, cursors = history(root, q, since, stack)
        if q.lines is not None:
            merged = iter(deque(merged, maxlen=q.lines))
        for doc in merged:
            if stop.is_set():
                return
            out.write(_show(doc, q) + "\n")
    out.flush()
    while follow and not _wait(stop, stdin_fd, poll):
        batch = [doc for current, _ in _paths(root, q) for doc in _fresh(current, cursors)]
        for doc in sorted(batch, key=_time):
            out.write(_show(doc, q) + "\n")
        out.flush()


def _show(doc: Doc, q: Query) -> str:
    return json.dumps(doc) if q.as_json else render(doc, show_release=q.release is None)


def _wait(stop: threading.Event, stdin_fd: int | None, seconds: float) -> bool:
    """Wait ``seconds``; True when it is time to stop (``stop`` set, or ``stdin_fd`` ended:
    the workstation's reader went away)."""
    if stdin_fd is None:
        return stop.wait(seconds)
    readable, _, _ = select.select([stdin_fd], [], [], seconds)
    if readable and not os.read(stdin_fd, 4096):
        return True
    return stop.is_set()
