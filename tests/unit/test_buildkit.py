"""BuildKit's progress stream (base64 protobuf), decoded by hand: a real trace and made-up ones."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from lab.build import buildkit
from lab.proof import measures

REAL = Path(__file__).with_name("data") / "buildkit-trace.json"  # the app's build, warm cache


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: int | str | bytes) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    raw = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(raw)) + raw


def _stamp(seconds: float) -> bytes:
    return _field(1, int(seconds)) + _field(2, round(seconds % 1 * 1e9))


def _message(*parts: tuple[int, bytes]) -> str:
    return base64.b64encode(b"".join(_field(n, v) for n, v in parts)).decode()


def _vertex(digest: str, name: str, *, started: float | None = None, **more: object) -> bytes:
    out = _field(1, digest) + _field(3, name)
    if more.get("cached"):
        out += _field(4, 1)
    if started is not None:
        out += _field(5, _stamp(started))
    if "completed" in more:
        out += _field(6, _stamp(float(str(more["completed"]))))
    if "error" in more:
        out += _field(7, str(more["error"]))
    return out


def _log(digest: str, msg: str) -> bytes:
    return _field(1, digest) + _field(3, 1) + _field(4, msg)


def test_a_real_trace_reads_as_a_plain_log_with_the_unit_tests_timed() -> None:
    trace = buildkit.Trace()
    for aux in json.loads(REAL.read_text()):
        trace.feed(aux)
    log = trace.log()
    assert "#16 [test 6/6] RUN python -m pytest -q -p no:cacheprovider tests/unit" in log
    assert "#16 18 passed in 0.04s" in log
    assert "#9 CACHED [deps 6/6] RUN pip install -r requirements.txt" in log
    assert "#20 exporting to image" in log
    seconds = trace.step_seconds("pytest")
    assert seconds is not None and 0.3 < seconds < 0.4
    assert measures.unit_test_seconds(log) == pytest.approx(seconds, abs=0.01)
    assert trace.step_seconds("pip install") is None  # cached: no run time


def test_log_lines_split_across_messages_join_and_a_failure_says_why() -> None:
    trace = buildkit.Trace()
    trace.feed(_message((1, _vertex("sha256:a", "[test 6/6] RUN pytest", started=100.0))))
    trace.feed(_message((3, _log("sha256:a", "FAILED test_x - assert 1 ="))))
    trace.feed(_message((3, _log("sha256:a", "= 2\n1 failed in 0.1s"))))
    trace.feed(
        _message(
            (
                1,
                _vertex(
                    "sha256:a",
                    "[test 6/6] RUN pytest",
                    started=100.0,
                    completed=100.5,
                    error="process did not complete successfully: exit code: 1",
                ),
            )
        )
    )
    assert trace.log().splitlines() == [
        "#1 [test 6/6] RUN pytest",
        "#1 FAILED test_x - assert 1 == 2",
        "#1 1 failed in 0.1s",
        "#1 ERROR: process did not complete successfully: exit code: 1",
    ]
    assert trace.vertices["sha256:a"].error.endswith("exit code: 1")


def test_a_cached_step_is_one_line_and_has_no_run_time() -> None:
    trace = buildkit.Trace()
    trace.feed(
        _message((1, _vertex("d", "[deps 2/2] RUN pip", started=5.0, completed=5.0, cached=True)))
    )
    assert trace.log() == "#1 CACHED [deps 2/2] RUN pip\n"
    assert trace.step_seconds("pip") is None


@pytest.mark.parametrize(
    "raw",
    [b"\x0a\x05ab", b"\x08\xff", b"\x0b"],  # length past the end; varint cut; wire type 3
)
def test_malformed_messages_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        list(buildkit.fields(raw))


def test_unit_test_seconds_needs_the_step_and_its_end() -> None:
    log = "#7 [test 3/3] RUN python -m pytest -q tests/unit\n#7 3 passed in 0.01s\n#7 DONE 0.42s\n"
    assert measures.unit_test_seconds(log) == 0.42
    assert measures.unit_test_seconds("#7 [test 3/3] RUN python -m pytest\n") == 0.0
    assert measures.unit_test_seconds("") == 0.0
