"""The one place cdlab runs subprocesses."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from lab.errors import CommandError, PreflightError


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    output: str  # stdout and stderr, interleaved as the process wrote them


def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    hint: str = "",
    timeout: float | None = None,
    input: bytes | None = None,
) -> Completed:
    """Run ``argv``; raise ``CommandError`` with the output's tail when it fails and ``check``."""
    try:
        proc = subprocess.run(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            input=input,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise PreflightError(
            f"'{argv[0]}' is not installed",
            "run './cdlab up', which installs what is missing, or install it with apt-get",
        ) from exc
    except subprocess.TimeoutExpired as exc:
        out = (exc.output or b"").decode(errors="replace")
        raise CommandError(argv, -1, out + f"\n(timed out after {timeout} s)", hint) from exc
    result = Completed(tuple(argv), proc.returncode, proc.stdout.decode(errors="replace"))
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, result.output, hint)
    return result


def stream(
    argv: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> int:
    """Run ``argv`` with the terminal as its stdout/stderr; return its exit code."""
    return subprocess.call(list(argv), cwd=cwd, env=dict(env) if env is not None else None)


def capture(argv: Sequence[str], *, cwd: Path | None = None) -> tuple[int, bytes, str]:
    """Run ``argv``; return (exit code, stdout bytes untouched, stderr text)."""
    try:
        proc = subprocess.run(list(argv), cwd=cwd, capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise PreflightError(f"'{argv[0]}' is not installed", "install it with apt-get") from exc
    return proc.returncode, proc.stdout, proc.stderr.decode(errors="replace")


def tee(argv: Sequence[str], out: TextIO | None = None) -> Completed:
    """Run ``argv``, copying its output line by line to ``out`` (default stdout) as it comes,
    and return it too (for a caller that must read the verdict of a streamed run)."""
    sink = out or sys.stdout
    lines = []
    with subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sink.write(line)
            sink.flush()
            lines.append(line)
    return Completed(tuple(argv), proc.returncode, "".join(lines))
