"""The store: one file per service and release, one JSON object a line, bounded.

    <root>/<service>/<release>.log     {"t", "host", "container", "service", "release", "line"}
    <root>/<service>/<release>.log.1   the same release's previous 20 MB
    <root>/_other/<safe name>.log      lines whose tag is not cdlab's (their "tag" kept)

``t`` is when the store received the line (one clock for every host, and a file's order is
its time order, which lets a reader merge files without sorting them): a microsecond after the
line before it at least, so the proxy's lines of one datagram are a microsecond apart, in the
order they came. Each line, and each release's part of a datagram of the proxy's lines,
is one ``write`` on a file opened for appending: a reader sees it at once, whole. A file that
a write would take over ``Limits.file_bytes`` is renamed ``.log.1`` first (replacing the
previous one); over ``Limits.total_bytes`` in all, the files written to longest ago are removed
until 90 % of it is used. Nothing else removes a file: a release's lines outlive the release.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from . import proxy
from .config import Limits
from .syslog import parse_tag, safe_name

OTHER = "_other"
CURRENT, OLD = ".log", ".log.1"
TRIM_TO = 0.9  # of total_bytes, once over it: one trim makes room for many lines
# a byte JSON writes otherwise (control characters, quote, backslash) or that may not be UTF-8
_NOT_PLAIN = re.compile(rb"[^\x20\x21\x23-\x5b\x5d-\x7f]")


@dataclass(frozen=True)
class Kept:
    """A file of the store: ``service``'s ``release``, ``old`` for its ``.log.1``."""

    path: Path
    service: str
    release: str
    old: bool


def files(root: Path, service: str = "") -> Iterator[Kept]:
    """Every file of the store under ``root`` (nothing else found there), or of ``service``."""
    folders = [root / service] if service else sorted(root.iterdir()) if root.is_dir() else []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            for suffix, old in ((OLD, True), (CURRENT, False)):
                if path.name.endswith(suffix) and len(path.name) > len(suffix):
                    yield Kept(path, folder.name, path.name[: -len(suffix)], old)
                    break


def record(tag: str, host: str, line: str, t: float) -> tuple[str, str, dict[str, object]]:
    """(service, release) the line is filed under, and its JSON object (pure)."""
    found = parse_tag(tag)
    if found is not None:
        service, release, container = found.service, found.release, found.container
        doc: dict[str, object] = {}
    else:
        service, release, container = OTHER, safe_name(tag), ""
        doc = {"tag": tag}
    doc = {
        "t": round(t, 6),
        "host": host,
        "container": container,
        "service": service,
        "release": release,
        "line": line,
        **doc,
    }
    return service, release, doc


def proxy_records(
    host: str, service: str, release: str, lines: Sequence[bytes], times_us: Sequence[int]
) -> bytes:
    """The JSON lines ``record`` makes of the proxy's request ``lines`` of ``service``'s
    ``release``, tagged ``<service>/<release>/proxy`` (a tag of cdlab's), at ``times_us``
    (microseconds) (pure): the same objects, built at once."""
    doc = {"host": host, "container": proxy.CONTAINER, "service": service, "release": release}
    rest = (", " + json.dumps(doc, ensure_ascii=False)[1:-1] + ', "line": ').encode()
    if _NOT_PLAIN.search(b"".join(lines)) is None:  # each line is its JSON string's text
        texts = [b'"' + line + b'"' for line in lines]
    else:
        texts = [json.dumps(x.decode(errors="replace"), ensure_ascii=False).encode() for x in lines]
    return b"".join(
        [
            b'{"t": ' + repr(us / 1e6).encode() + rest + text + b"}\n"
            for us, text in zip(times_us, texts, strict=True)
        ]
    )


class Store:
    def __init__(
        self,
        root: Path,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.time,
        buffer_bytes: int = 0,
    ) -> None:
        """``buffer_bytes``: 0, each line one write(2) as it comes; more, lines wait in a
        buffer of that size until ``flush`` (the receiver's, thousands of lines a second)."""
        self.root, self.limits, self.clock = root, limits or Limits(), clock
        self.buffer_bytes = buffer_bytes
        self._open: OrderedDict[Path, tuple[BinaryIO, int]] = OrderedDict()  # file, its size
        self.total = sum(_stat(k.path)[1] for k in files(root))
        self._last_us = 0  # the time given to the last line stored, in microseconds

    def times(self, lines: int) -> int:
        """The time (microseconds) of the first of ``lines`` lines received now, the others
        a microsecond apart, each later than every line before: a file's order stays its time
        order when the clock steps back, or a datagram's lines run a little ahead of it."""
        first = max(round(self.clock() * 1_000_000), self._last_us + 1)
        self._last_us = first + lines - 1
        return first

    def add(self, tag: str, host: str, line: str, time_us: int | None = None) -> Path:
        """File ``line`` (sent by ``host`` with ``tag``, received at ``time_us``, from
        ``times``; None: now); returns the file it went to."""
        us = self.times(1) if time_us is None else time_us
        service, release, doc = record(tag, host, line, us / 1e6)
        path = self._path(service, release)
        self._write(path, (json.dumps(doc, ensure_ascii=False) + "\n").encode())
        return path

    def add_proxy_lines(
        self,
        service: str,
        release: str,
        host: str,
        lines: Sequence[bytes],
        times_us: Sequence[int] | None = None,
    ) -> None:
        """File the proxy's request ``lines`` of ``service``'s ``release`` (sent by ``host``)
        received at ``times_us`` (from ``times``; None: now): what ``add`` files for each,
        tagged ``<service>/<release>/proxy``, in one write."""
        if times_us is None:
            first = self.times(len(lines))
            times_us = range(first, first + len(lines))
        tag = proxy.tag(service, release)
        found = parse_tag(tag)
        if found is None or (found.service, found.release) != (service, release):
            # not cdlab's names: under _other, kept with their tag
            for line, us in zip(lines, times_us, strict=True):
                self.add(tag, host, line.decode(errors="replace"), us)
            return
        path = self._path(service, release)
        data = proxy_records(host, service, release, lines, times_us)
        if len(data) > self.limits.file_bytes:  # more than a file holds: line by line
            for one in data.splitlines(keepends=True):
                self._write(path, one)
        else:
            self._write(path, data)

    def _path(self, service: str, release: str) -> Path:
        folder = self.root / service
        path = folder / (release + CURRENT)
        if path.parent != folder or release in ("", ".", ".."):  # parse_tag/safe_name forbid it
            raise ValueError(f"refusing to write outside {folder}: {path}")
        return path

    def _write(self, path: Path, data: bytes) -> None:
        """Append ``data`` (whole lines) to ``path``, first renamed ``.log.1`` when ``data``
        would take it over its bound; then keep the store within its total."""
        out, size = self._file(path)
        if size and size + len(data) > self.limits.file_bytes:
            self._rotate(path)
            out, size = self._file(path)
        out.write(data)
        self._open[path] = (out, size + len(data))
        self.total += len(data)
        if self.total > self.limits.total_bytes:
            self.trim(keep=path)

    def _file(self, path: Path) -> tuple[BinaryIO, int]:
        if path in self._open:
            self._open.move_to_end(path)
            return self._open[path]
        path.parent.mkdir(parents=True, exist_ok=True)
        out = path.open("ab", buffering=self.buffer_bytes)  # O_APPEND
        self._open[path] = (out, os.fstat(out.fileno()).st_size)
        while len(self._open) > self.limits.open_files:
            self._open.popitem(last=False)[1][0].close()
        return self._open[path]

    def _close(self, path: Path) -> None:
        if path in self._open:
            self._open.pop(path)[0].close()

    def _rotate(self, path: Path) -> None:
        old = path.with_name(path.name[: -len(CURRENT)] + OLD)
        self._close(path)
        self.total -= _stat(old)[1]
        os.replace(path, old)

    def trim(self, keep: Path) -> list[Path]:
        """Remove the files written to longest ago (never ``keep``) until the store uses at
        most ``TRIM_TO`` of its total; returns them."""
        found = sorted(((*_stat(k.path), k.path) for k in files(self.root)), reverse=True)
        self.total = sum(size for _, size, _ in found)
        removed = []
        while self.total > self.limits.total_bytes * TRIM_TO and found:
            _, size, path = found.pop()
            if path == keep:
                continue
            self._close(path)
            path.unlink(missing_ok=True)
            self.total -= size
            removed.append(path)
            if not any(path.parent.iterdir()):
                path.parent.rmdir()
        return removed

    def flush(self) -> None:
        """Every open file's buffered lines to disk (where a reader sees them)."""
        for out, _ in self._open.values():
            out.flush()

    def close(self) -> None:
        for path in list(self._open):
            self._close(path)


def _stat(path: Path) -> tuple[float, int]:
    """(last written, size) of ``path``; (0, 0) when it is gone."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return 0.0, 0
    return st.st_mtime, st.st_size
