"""Every lesson runs to its end non-interactively on the lab (``invoke lesson.run``), then
``invoke lesson.check`` says yes; the lab serves what it served before (each lesson puts back
the live release and the dev clone)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lab.estate.state import State
from lab.lessons.catalog import LESSONS
from lab.release import api as release
from lab.release import devloop
from tests.conftest import invoke

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.xdist_group("prod")  # lessons deploy, roll back and kill the proxy


@pytest.mark.parametrize("name", [lesson.name for lesson in LESSONS])
def test_a_lesson_runs_to_its_end_reaches_its_goal_and_puts_the_lab_back(
    lab: State, name: str
) -> None:
    live = release.current_routes(lab, "app").live
    dev = devloop.clone_head(lab.config)
    done = invoke("lesson.run", name)
    kept = ROOT / "reports" / "lessons"  # what a lesson really prints: the tutorial shows it
    kept.mkdir(parents=True, exist_ok=True)
    (kept / f"{name}.txt").write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    steps = re.findall(r"^\[(\d+)/(\d+)\] ", done.stdout, re.M)
    assert steps and steps[-1][0] == steps[-1][1], done.stdout  # every step ran
    assert f"outcome of {name}" in done.stdout
    checked = invoke("lesson.check", name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith(f"{name}: yes")
    assert release.current_routes(lab, "app").live == live  # put back
    assert devloop.clone_head(lab.config) == dev
    if name == "rollback-drill":  # a switch to a warm release under load loses nothing
        assert re.search(r"requests at \d+/s, 0 failed", done.stdout), done.stdout


def test_a_lesson_that_does_not_exist_is_refused_with_the_names(lab: State) -> None:
    done = invoke("lesson.check", "first-deplyo")
    assert done.returncode == 1 and "one of: first-deploy" in done.stderr
