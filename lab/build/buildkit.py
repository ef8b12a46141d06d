"""Builds with BuildKit through the engine API, and its progress stream made readable (pure).

The engine's ``POST /build?version=2`` takes the same tar context as the classic builder but
reports progress as ``moby.buildkit.trace`` messages: base64 protobuf ``StatusResponse``s (the
vertices of the build graph, their start and end, their log lines). The few fields cdlab reads
are decoded here by hand; a plain log like ``docker build --progress=plain`` prints is rendered
from them.

Why BuildKit: the classic builder commits a container for every instruction, metadata included
(about 65 ms each here); BuildKit does not, and builds independent stages concurrently. A
code-only change of the app built in 1.45 s classic, 0.6 s with BuildKit.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

# StatusResponse: 1 vertexes, 3 logs. Vertex: 1 digest, 3 name, 4 cached, 5 started,
# 6 completed, 7 error. VertexLog: 1 vertex, 4 msg. Timestamp: 1 seconds, 2 nanos.
TRACE_ID = "moby.buildkit.trace"
IMAGE_ID = "moby.image.id"


def fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """The (field number, value) pairs of one protobuf message: ints for varints and fixed
    numbers, bytes for length-delimited values (strings, nested messages)."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            yield number, value
        elif wire == 2:
            size, i = _varint(buf, i)
            if i + size > n:
                raise ValueError("truncated length-delimited field")
            yield number, buf[i : i + size]
            i += size
        elif wire == 1:
            yield number, struct.unpack_from("<q", buf, i)[0]
            i += 8
        elif wire == 5:
            yield number, struct.unpack_from("<i", buf, i)[0]
            i += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def _timestamp(buf: bytes) -> float:
    seconds = nanos = 0
    for number, value in fields(buf):
        if number == 1 and isinstance(value, int):
            seconds = value
        elif number == 2 and isinstance(value, int):
            nanos = value
    return seconds + nanos / 1e9


@dataclass
class Vertex:
    digest: str
    name: str = ""
    cached: bool = False
    started: float | None = None
    completed: float | None = None
    error: str = ""

    @property
    def seconds(self) -> float | None:
        if self.started is None or self.completed is None:
            return None
        return self.completed - self.started


@dataclass
class Trace:
    """What a build reported so far: its vertices in first-seen order, and a plain log."""

    vertices: dict[str, Vertex] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    _number: dict[str, int] = field(default_factory=dict)
    _partial: dict[str, str] = field(default_factory=dict)

    def feed(self, aux: str) -> None:
        """One ``moby.buildkit.trace`` message (its base64 ``aux``)."""
        for number, value in fields(base64.b64decode(aux)):
            if isinstance(value, bytes) and number == 1:
                self._vertex(value)
            elif isinstance(value, bytes) and number == 3:
                self._log(value)

    def _vertex(self, buf: bytes) -> None:
        seen: dict[int, int | bytes] = dict(fields(buf))
        digest = _text(seen.get(1))
        v = self.vertices.get(digest)
        if v is None:
            v = self.vertices[digest] = Vertex(digest)
            self._number[digest] = len(self._number) + 1
        v.name = _text(seen.get(3)) or v.name
        started, completed = seen.get(5), seen.get(6)
        tag = f"#{self._number[digest]}"
        if seen.get(4) and not v.cached:
            v.cached = True
            self.lines.append(f"{tag} CACHED {v.name}")
        if isinstance(started, bytes) and v.started is None:
            v.started = _timestamp(started)
            if not v.cached:
                self.lines.append(f"{tag} {v.name}")
        if isinstance(completed, bytes) and v.completed is None:
            v.completed = _timestamp(completed)
            self._flush(digest)
            v.error = _text(seen.get(7))
            if v.error:
                self.lines.append(f"{tag} ERROR: {v.error}")
            elif not v.cached:
                self.lines.append(f"{tag} DONE {v.seconds or 0:.2f}s")

    def _log(self, buf: bytes) -> None:
        seen: dict[int, int | bytes] = dict(fields(buf))
        digest, msg = _text(seen.get(1)), _text(seen.get(4))
        number = self._number.get(digest, 0)
        text = self._partial.pop(digest, "") + msg
        *whole, rest = text.split("\n")
        self.lines += [f"#{number} {line.rstrip()}" for line in whole]
        if rest:
            self._partial[digest] = rest

    def _flush(self, digest: str) -> None:
        rest = self._partial.pop(digest, "")
        if rest:
            self.lines.append(f"#{self._number[digest]} {rest.rstrip()}")

    def step_seconds(self, contains: str) -> float | None:
        """The run time of the (last, not cached) step whose name contains ``contains``."""
        found = [
            v.seconds
            for v in self.vertices.values()
            if contains in v.name and not v.cached and v.seconds is not None
        ]
        return found[-1] if found else None

    def log(self) -> str:
        for digest in list(self._partial):
            self._flush(digest)
        return "\n".join(self.lines) + "\n"


def _text(value: int | bytes | None) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else ""
