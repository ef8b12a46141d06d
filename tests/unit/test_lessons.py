"""Lessons (``invoke lesson.*``): a run narrates every step and puts back what it changed
whatever stops it; a check says no on a fresh lab, naming what is missing, and yes once the
evidence is there. The lab is stood in for by its records and a registry."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lab import lessons
from lab.errors import ConfigError
from lab.lessons import Ctx, Lesson, Step, catalog
from lab.release import records, reset
from tests.unit.fake_ports import FakeEtcd

A, B, C = "a" * 12, "b" * 12, "c" * 12


class Registry:
    def __init__(self, tags: set[str]) -> None:
        self.tags = tags

    def digest(self, repository: str, tag: str) -> str | None:
        return f"sha256:{tag}" if tag in self.tags else None


@dataclass
class FakeLab:
    runs: Path
    etcd: FakeEtcd = field(default_factory=FakeEtcd)
    registry: Registry = field(default_factory=lambda: Registry({A}))


def rec(
    release: str, kind: str = "deploy", result: str = "succeeded", trigger: str = "me@laptop"
) -> records.Record:
    stage = "image-app" if result == "failed" else None
    return records.Record(
        kind, "app", release, None, "", "bluegreen", trigger, "t", 1.0, result, stage
    )


@pytest.fixture
def fresh(tmp_path: Path) -> FakeLab:
    """A lab just brought up: one deploy of the checkout's commit, by the workstation."""
    lab = FakeLab(tmp_path)
    records.write(tmp_path, rec(A))
    return lab


@pytest.mark.parametrize(
    ("lesson", "says"),
    [
        (catalog.FIRST_DEPLOY, "no deploy of app started by a push from dev"),
        (catalog.BROKEN_BUILD, "no push of a commit whose unit tests fail"),
        (catalog.ROLLBACK_DRILL, "no rollback of app yet"),
        (catalog.BAD_CANARY, "no canary of app aborted by the judge"),
        (catalog.BROKEN_RELEASE, "no deploy of app stopped before its switch"),
        (catalog.NAIVE_VS_BLUEGREEN, "no side-by-side measure of a naive deploy"),
        (catalog.SCHEMA_CHANGE, "no schema change in three releases"),
    ],
)
def test_on_a_fresh_lab_a_check_says_no_and_what_is_missing(
    fresh: FakeLab, lesson: Lesson, says: str
) -> None:
    missing = lessons.check(lesson, fresh)  # type: ignore[arg-type]
    assert len(missing) == 1 and says in missing[0]
    text = lessons.render_check(lesson, missing)
    assert text.startswith(f"{lesson.name}: no, not yet") and says in text


def test_each_check_says_yes_once_its_evidence_is_there(fresh: FakeLab) -> None:
    records.write(fresh.runs, rec(B, trigger="git push to cd (refs/heads/main)"))
    records.write(fresh.runs, rec(C, result="failed", trigger="git push to cd (refs/heads/main)"))
    records.write(fresh.runs, rec(A, kind="rollback"))
    for lesson in (catalog.FIRST_DEPLOY, catalog.BROKEN_BUILD, catalog.ROLLBACK_DRILL):
        assert lessons.check(lesson, fresh) == []  # type: ignore[arg-type]
        assert "yes, the goal is reached" in lessons.render_check(lesson, [])


def test_the_figures_a_lesson_kept_are_its_evidence_until_they_show_a_failure(
    fresh: FakeLab,
) -> None:
    def keep(lesson: str, figures: object) -> None:
        fresh.etcd.put(reset.RESULTS + lesson, json.dumps(figures).encode())

    keep("naive-vs-bluegreen", {"naive": {"failed": 80}, "bluegreen": {"failed": 3}})
    assert lessons.check(catalog.NAIVE_VS_BLUEGREEN, fresh) != []  # type: ignore[arg-type]
    keep("naive-vs-bluegreen", {"naive": {"failed": 80}, "bluegreen": {"failed": 0}})
    assert lessons.check(catalog.NAIVE_VS_BLUEGREEN, fresh) == []  # type: ignore[arg-type]
    keep("schema-change", {"failed": 0, "lost": 2})
    assert lessons.check(catalog.SCHEMA_CHANGE, fresh) != []  # type: ignore[arg-type]
    fresh.etcd.put(reset.RESULTS + "schema-change", b"{not json")
    assert lessons.check(catalog.SCHEMA_CHANGE, fresh) != []  # type: ignore[arg-type]
    keep("schema-change", {"failed": 0, "lost": 0})
    assert lessons.check(catalog.SCHEMA_CHANGE, fresh) == []  # type: ignore[arg-type]


def test_a_schema_change_done_by_hand_on_app_is_evidence_only_once_contracted(
    fresh: FakeLab,
) -> None:
    def deployed(release: str, left: str) -> None:
        r = rec(release)
        records.write(fresh.runs, dataclasses.replace(r, schema={"left": left}))

    deployed(B, "0002_display_name")
    assert lessons.check(catalog.SCHEMA_CHANGE, fresh) != []  # type: ignore[arg-type]
    deployed(C, "0003_drop_name")
    assert lessons.check(catalog.SCHEMA_CHANGE, fresh) == []  # type: ignore[arg-type]


def test_a_release_stopped_before_its_switch_is_the_broken_release_evidence(
    fresh: FakeLab,
) -> None:
    def failed(stage: str, kind: str = "deploy") -> None:
        r = dataclasses.replace(rec(C, kind=kind, result="failed"), failed_stage=stage)
        records.write(fresh.runs, r)

    failed("image-app")  # a broken build is another lesson
    failed("bake")  # after the switch: users saw it
    failed("tests", kind="rollback")
    assert lessons.check(catalog.BROKEN_RELEASE, fresh) != []  # type: ignore[arg-type]
    failed("tests")
    assert lessons.check(catalog.BROKEN_RELEASE, fresh) == []  # type: ignore[arg-type]


def test_a_failed_build_whose_image_exists_is_not_the_evidence(fresh: FakeLab) -> None:
    records.write(fresh.runs, rec(C, result="failed"))
    fresh.registry.tags.add(C)  # it was built after all (a later push of the same commit)
    assert lessons.check(catalog.BROKEN_BUILD, fresh) != []  # type: ignore[arg-type]


def test_an_unknown_lesson_is_refused_with_the_names() -> None:
    with pytest.raises(ConfigError, match="one of: first-deploy, broken-build"):
        lessons.find(catalog.LESSONS, "first-deplyo")


def lesson_of(fail_at: int, log: list[str]) -> Lesson:
    def step(n: int) -> Step:
        def do(ctx: Ctx) -> str:
            ctx.undo.append((f"thing {n}", lambda: log.append(f"undo {n}") or f"{n} back"))
            if n == fail_at:
                raise KeyboardInterrupt
            ctx.measured[f"step {n}"] = "ok"
            return f"did {n}"

        return Step(f"step {n}", "because", "here", do)

    return Lesson("demo", "a demo", "goal", tuple(step(n) for n in (1, 2, 3)), lambda lab: [])


def test_a_run_narrates_each_step_and_says_its_outcome() -> None:
    said: list[str] = []
    log: list[str] = []
    waits: list[int] = []
    out = lessons.run(lesson_of(0, log), None, said.append, wait=lambda: waits.append(1))  # type: ignore[arg-type]
    text = "\n".join(said)
    assert "[1/3] step 1" in text and "why: because" in text and "look: here" in text
    assert "done in" in text and "outcome of demo" in text and "step 3: ok" in text
    assert len(waits) == 2  # after each step but the last
    assert log == ["undo 3", "undo 2", "undo 1"]  # newest first
    assert out.put_back == ("thing 3: 3 back", "thing 2: 2 back", "thing 1: 1 back")


def test_a_run_stopped_halfway_still_puts_back_what_it_changed() -> None:
    said: list[str] = []
    log: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        lessons.run(lesson_of(2, log), None, said.append)  # type: ignore[arg-type]
    assert log == ["undo 2", "undo 1"]  # step 3 never ran
    assert "put back: thing 1: 1 back" in said


def test_a_put_back_that_fails_is_said_and_the_others_still_run() -> None:
    said: list[str] = []

    def broken(ctx: Ctx) -> str:
        ctx.undo.append(("first", lambda: "done"))
        ctx.undo.append(("second", lambda: str(1 / 0)))
        return "did"

    lessons.run(
        Lesson("x", "x", "g", (Step("s", "w", "l", broken),), lambda lab: []), None, said.append
    )  # type: ignore[arg-type]
    assert "put back: second: could not (division by zero); do it by hand" in said
    assert "put back: first: done" in said


def test_a_signal_during_a_step_puts_everything_back_then_says_the_run_stopped() -> None:
    import os
    import signal

    from lab.errors import RunStopped

    said: list[str] = []
    log: list[str] = []

    def signalled(ctx: Ctx) -> str:
        ctx.undo.append(("thing", lambda: log.append("undone") or "back"))
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill` or a closed terminal would
        time.sleep(5)  # never reached: the signal stops the step
        return "did"

    lesson = Lesson("x", "x", "g", (Step("s", "w", "l", signalled),), lambda lab: [])
    with pytest.raises(RunStopped, match="interrupted by SIGTERM during 's'"):
        lessons.run(lesson, None, said.append)  # type: ignore[arg-type]
    assert log == ["undone"] and "put back: thing: back" in said


def test_a_check_reads_only_what_happened_since_the_last_reset(fresh: FakeLab) -> None:
    import dataclasses

    at = "2026-12-02T10:0{}:00+00:00"
    records.write(fresh.runs, dataclasses.replace(rec(A, kind="rollback"), started=at.format(1)))
    assert lessons.check(catalog.ROLLBACK_DRILL, fresh) == []  # type: ignore[arg-type]
    records.write(fresh.runs, dataclasses.replace(rec(A, kind="reset"), started=at.format(2)))
    assert lessons.check(catalog.ROLLBACK_DRILL, fresh) != []  # type: ignore[arg-type]


def test_the_immutable_server_check_needs_a_drift_seen_and_none_left_on_the_live_release(
    fresh: FakeLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lab.release import drift

    left: list[drift.Drift] = []
    monkeypatch.setattr(drift, "check", lambda lab, names: (left, []))
    monkeypatch.setattr(
        catalog.release, "current_routes", lambda lab, name: type("R", (), {"live": A})()
    )
    missing = lessons.check(catalog.IMMUTABLE_SERVER, fresh)  # type: ignore[arg-type]
    assert len(missing) == 1 and "no drift seen yet" in missing[0]
    fresh.etcd.put(drift.SEEN, b"{}")
    assert lessons.check(catalog.IMMUTABLE_SERVER, fresh) == []  # type: ignore[arg-type]
    left.append(drift.Drift("app", A, f"app-{A}", ("memory 512 MiB",), "deploy"))
    missing = lessons.check(catalog.IMMUTABLE_SERVER, fresh)  # type: ignore[arg-type]
    assert len(missing) == 1 and f"live release {A} still drifts" in missing[0]
    left[0] = drift.Drift("app", B, f"app-{B}", ("memory 512 MiB",), "deploy")  # a warm one
    assert lessons.check(catalog.IMMUTABLE_SERVER, fresh) == []  # type: ignore[arg-type]
