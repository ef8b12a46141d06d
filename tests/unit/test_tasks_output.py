"""A task whose reader stops reading (``invoke releases | head -1``) ends quietly, exit 141."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
from invoke import Exit
import tasks

@tasks.presents_errors
def many_lines():
    for i in range(200000):
        print(f"line {i}")

try:
    many_lines()
except Exit as exc:
    sys.exit(exc.code)
"""


def test_a_task_piped_into_a_reader_that_stops_exits_141_without_a_traceback() -> None:
    task = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert task.stdout is not None and task.stderr is not None
    assert task.stdout.readline() == b"line 0\n"
    task.stdout.close()  # the reader goes, as head does
    err = task.stderr.read().decode()
    assert task.wait(timeout=30) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
