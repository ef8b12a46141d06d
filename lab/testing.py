"""How the README's test command runs pytest (one place, so CI and people run the same)."""

from __future__ import annotations

import sys
from pathlib import Path

from lab.ports import shell

ROOT = Path(__file__).resolve().parent.parent


def pytest_argv(suite: str = "", workers: str = "auto") -> list[str]:
    """The pytest command line: every suite unless ``suite`` (a marker expression) narrows it."""
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-n",
        workers,
        "--dist",
        "loadgroup",
        "--junitxml",
        str(ROOT / "reports" / "junit.xml"),
    ]
    if suite:
        argv += ["-m", suite]
    return argv


def run_pytest(argv: list[str]) -> int:
    (ROOT / "reports").mkdir(exist_ok=True)
    return shell.stream(argv, cwd=ROOT)
