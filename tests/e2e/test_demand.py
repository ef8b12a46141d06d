"""``invoke load`` and ``invoke watch --once``, run as a user runs them: load on demand against
the live app with its summary; bad input refused before anything starts; one frame of the live
view; ``releases --json`` as a program reads it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lab.estate.state import State
from lab.release import api as release
from tests.conftest import invoke

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.xdist_group("prod")  # the share of the live release must be 100 %


def test_load_on_demand_runs_its_time_and_summarizes_what_it_saw(lab: State) -> None:
    live = release.current_routes(lab, "app").live
    done = invoke("load", "--rate", "40", "--for", "8s")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"load app: \d+ s of 8 s, [\d,]+ requests, 0 failed", out), out
    head = next(line for line in out.splitlines() if line.startswith("load on app"))
    sent = int(re.search(r"ran its time: ([\d,]+) requests", head)[1].replace(",", ""))  # type: ignore[index]
    assert sent >= 0.8 * 40 * 8 and head.endswith(", 0 failed"), head
    assert re.search(rf"{live}\s+[\d,]+\s+100\.0 %", out), out  # every answer from the live one
    assert "cannot vouch" not in out  # locust's own count matched the lines
    assert (ROOT / "reports" / "demand" / "load-app.jsonl").stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--rate", "0"), "bad value for '--rate'"),
        (("--rate", "9999"), "1 to 500"),
        (("--for", "3h"), "bad value for '--for'"),
        (("--service", "nosuch"), "one of: app"),
        (("--ui", "--ui-port", "80"), "1024 to 65535"),
    ],
)
def test_bad_load_input_is_refused_before_anything_starts(
    lab: State, args: tuple[str, ...], says: str
) -> None:
    done = invoke("load", *args, timeout=30)
    assert done.returncode == 1 and says in done.stderr, done.stderr
    assert "load app:" not in done.stdout  # nothing was sent


def test_watch_once_prints_one_frame_of_every_service(lab: State) -> None:
    live = release.current_routes(lab, "app").live
    for _ in range(3):  # a source slow for a moment (a timeout) is a problem line: try again
        done = invoke("watch", "--once", timeout=30)
        assert done.returncode == 0, done.stderr
        if "! " not in done.stdout:  # every source answered
            break
    assert "! " not in done.stdout, done.stdout
    assert "deploy lock:" in done.stdout and f"live: {live}" in done.stdout
    for service in ("app", "quotes", "pypiserver"):
        assert f"{service}  http://127.0.0.1:" in done.stdout
    assert re.search(rf"│ {live} │ w100 UP", done.stdout), done.stdout


def test_releases_json_is_what_the_table_says(lab: State) -> None:
    done = invoke("releases", "--json", timeout=30)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    live = release.current_routes(lab, "app").live
    assert [r["release"] for r in rows if r["status"] == "live"] == [live]
    assert all(set(r) == {"release", "status", "last_made_live", "by", "pinned"} for r in rows)
