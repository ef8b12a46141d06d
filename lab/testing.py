"""How the README's test command runs pytest (one place, so CI and people run the same)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from lab.errors import ConfigError
from lab.ports import shell

ROOT = Path(__file__).resolve().parent.parent


def pytest_argv(suite: str = "", workers: str = "auto", extra: str = "") -> list[str]:
    """The pytest command line: every suite but ``multilab`` and ``cluster`` unless ``suite``
    (a marker expression) says which; ``extra``, the text after ``--`` on ``invoke test``,
    split as a shell would, goes last (a path, ``-k EXPR``, ``-x``...)."""
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
    # the named labs' test brings three labs up (a quarter of an hour), the cluster's a lab of
    # six hosts: asked for by name only
    argv += ["-m", suite or "not multilab and not cluster"]
    try:
        argv += shlex.split(extra)
    except ValueError as exc:
        raise ConfigError(
            "invoke test -- ARGS", extra, f"arguments a shell can split ({exc})"
        ) from exc
    return argv


def refuse_named_lab(lab: str, suite: str) -> None:
    """The proving suite runs against the default lab (its tests use its ports); on a named
    lab only the unit tests may run (``--suite unit``), which touch no lab."""
    if lab and lab != "default" and suite.strip() != "unit":
        raise ConfigError(
            "CDLAB_LAB",
            lab,
            "the default lab: the proving suite runs there (unset CDLAB_LAB, or drop --lab); "
            "on a named lab, `invoke test --suite unit` only",
        )


def run_pytest(argv: list[str]) -> int:
    (ROOT / "reports").mkdir(exist_ok=True)
    return shell.stream(argv, cwd=ROOT)


def run_on_lab(
    argv: list[str], lab_env: dict[str, str], timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """``argv`` (``./cdlab`` or ``invoke`` with a task) from the checkout, on the lab that
    ``lab_env`` names (``CDLAB_LAB``, ``CDLAB_TOPOLOGY``...) and on no other: every ``CDLAB_``
    variable of this process is dropped first. Output captured, never raised on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDLAB_")}
    return subprocess.run(
        argv,
        cwd=ROOT,
        env={**env, **lab_env},
        text=True,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
