"""Schema changes in a release run: the scratch check and the migration against a fake prod,
and what the records say about which release works with which version (lab/release/schema.py)."""

from __future__ import annotations

import dataclasses

import pytest

from lab.errors import MigrationFailed, SchemaRefused
from lab.progress import Progress
from lab.release import actions, apply, plan, records, schema
from lab.release.model import Options
from lab.stack.services import Migration
from tests.unit.fake_ports import FakePorts, Fault, Tracking
from tests.unit.release_data import LIVE_A, LIVE_B_WARM_A, MIGRATING, A, B, C, R, cand, facts, srv


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("0002_expand (head)\n", "0002_expand"),
        (
            "INFO  [alembic.runtime.migration] Context impl PostgresqlImpl.\n0001_users\n",
            "0001_users",
        ),
        ("0003_contract (head)\n\n  \n", "0003_contract"),
        ("", ""),
        ("\n\n", ""),
    ],
)
def test_a_version_is_the_first_word_of_the_last_line(output: str, expected: str) -> None:
    assert schema.version(output) == expected


def deploy(ports: FakePorts, force: bool = False) -> tuple[apply.Outcome, FakePorts, Progress]:
    ports.routes = {"app": LIVE_A}
    ports.containers = {A: True}
    p = plan.deploy(
        dataclasses.replace(facts(LIVE_A), live=cand(A)), cand(B, MIGRATING), Options(force=force)
    )
    progress = Tracking(out=None, ports=ports)
    return apply.apply(p, ports, progress), ports, progress


def test_a_migration_the_live_release_works_with_runs_and_the_record_keeps_the_schema() -> None:
    out, ports, progress = deploy(FakePorts(schema="0001", heads={B: "0002"}))
    assert out.result == "succeeded" and ports.schema == "0002"
    assert (
        ports.names.index("schema_check")
        < ports.names.index("migrate")
        < ports.names.index("start")
    )
    assert records.notes(progress.stages) == {
        "before": "0001",
        "needs": "0002",
        "checked": A,
        "checked_at": "0002",
        "left": "0002",
    }


def test_a_migration_that_breaks_the_live_release_is_refused_before_prod_changes() -> None:
    out, ports, progress = deploy(FakePorts(schema="0001", heads={B: "0002"}, breaks={A}))
    assert (out.result, out.stage) == ("failed", "schema-check")
    assert isinstance(out.error, SchemaRefused)
    text = str(out.error)
    assert f"would break the live release {A}" in text
    assert 'column "name" does not exist' in text  # the failing check
    assert "expand first" in text and "contract in a later release" in text
    assert "Prod's database was not touched" in text
    assert ports.schema == "0001" and "migrate" not in ports.names and "start" not in ports.names
    assert ports.routes["app"] == LIVE_A
    assert records.notes(progress.stages) == {"before": "0001", "needs": "0002"}


def test_forced_past_a_failed_check_the_migration_runs_and_the_record_says_so() -> None:
    out, ports, progress = deploy(FakePorts(schema="0001", heads={B: "0002"}, breaks={A}), True)
    assert out.result == "succeeded" and ports.schema == "0002"
    stage = next(s for s in progress.stages if s.key == "schema-check")
    assert stage.detail.startswith("FORCED past a failed scratch check")
    assert stage.notes["forced"] == A and "checked" not in stage.notes


def test_a_migration_that_fails_on_the_scratch_copy_never_reaches_prod() -> None:
    out, ports, _ = deploy(FakePorts(schema="0001", heads={B: "0002"}, migration_fails=True))
    assert (out.result, out.stage) == ("failed", "schema-check")
    assert isinstance(out.error, MigrationFailed)
    text = str(out.error)
    assert "fails on a scratch copy of the database" in text and "TABEL" in text
    assert f"still at 0001, {A} serving. Fix the migration" in text
    assert ports.schema == "0001" and "migrate" not in ports.names and "start" not in ports.names


def test_a_failing_migration_leaves_the_version_and_the_live_release_as_they_were() -> None:
    """Failing on prod only (a lock timeout, say): the scratch copy had passed."""
    ports = FakePorts(schema="0001", heads={B: "0002"})
    ports.faults = [Fault("migrate", MigrationFailed('syntax error at or near "TABEL"'))]
    out, ports, progress = deploy(ports)
    assert (out.result, out.stage) == ("failed", "migrate")
    assert ports.schema == "0001" and ports.routes["app"] == LIVE_A and "start" not in ports.names
    text = str(out.error)
    assert "failed; the database is at 0001 as before, nothing switched" in text
    assert 'syntax error at or near "TABEL"' in text
    assert records.notes(progress.stages)["left"] == "0001"


def test_nothing_to_migrate_checks_nothing() -> None:
    out, ports, progress = deploy(FakePorts(schema="0002", heads={B: "0002"}))
    assert out.result == "succeeded"
    assert "schema_check" not in ports.names and "migrate" not in ports.names
    assert [s.status for s in progress.stages if s.key in ("schema-check", "migrate")] == [
        "unchanged",
        "unchanged",
    ]


def rec(
    kind: str, release: str, result: str = "succeeded", previous: str = "", **s: str
) -> records.Record:
    return records.Record(
        kind, "app", release, previous or None, "", "bluegreen", "t", "2026", 1.0, result, schema=s
    )


HISTORY = [
    rec("deploy", A, needs="0001", before="none", left="0001"),
    rec("deploy", B, needs="0002", before="0001", left="0002", checked=A, checked_at="0002"),
    rec("deploy", C, needs="0003", before="0002", left="0003", checked=B, checked_at="0003"),
]


@pytest.mark.parametrize(
    ("history", "target", "refused"),
    [
        ([], A, False),  # the records know no version: nothing to judge
        (HISTORY[:2], A, False),  # expand: A was checked at 0002 before B's migration ran
        (HISTORY, B, False),  # contract: B was checked at 0003
        (HISTORY, A, True),  # A needs 0001 and never ran at 0003
        (
            [*HISTORY[:1], rec("deploy", B, needs="0002", before="0001", left="0002", forced=A)],
            A,
            True,
        ),
        # a run that failed after its migration left the live release working at that version
        (
            [*HISTORY[:1], rec("deploy", B, "failed", A, needs="0002", before="0001", left="0002")],
            A,
            False,
        ),
    ],
)
def test_a_rollback_goes_only_to_a_release_known_to_work_at_the_version(
    history: list[records.Record], target: str, refused: bool
) -> None:
    k = schema.known(history)
    why = schema.rollback_refusal(k, "app", target, C)
    assert bool(why) is refused, why
    if refused:
        assert f"rollback of app to {target} refused" in why
        assert f"--to {target} --migrate-down" in why and "the live cccccccccccc does" in why


def test_a_refused_rollback_stops_before_anything_switches() -> None:
    k = schema.known(HISTORY)
    p = plan.rollback(facts(LIVE_B_WARM_A), cand(A), k, schema.rollback_refusal(k, "app", A, B))
    ports = FakePorts(routes={"app": LIVE_B_WARM_A}, containers={A: True, B: True})
    out = apply.apply(p, ports, Tracking(out=None, ports=ports))
    assert (out.result, out.stage) == ("failed", "schema")
    assert ports.routes["app"] == LIVE_B_WARM_A and ports.calls == []
    allowed = plan.rollback(facts(LIVE_B_WARM_A), cand(A), k, "")
    assert apply.apply(allowed, ports, Tracking(out=None, ports=ports)).result == "succeeded"
    assert ports.routes["app"] == R(srv(A, 100), srv(B, 0, drain=True))


DOWN_MANIFEST = dataclasses.replace(
    MIGRATING, migration=Migration("up", "current", "heads", "down {version}")
)


def rolled_down(breaks: set[str]) -> tuple[apply.Outcome, FakePorts]:
    live, target = cand(B, DOWN_MANIFEST), cand(A, DOWN_MANIFEST)
    down = actions.SchemaDown(live, "0001", (target, live))
    p = plan.rollback(facts(LIVE_B_WARM_A), target, schema.known(HISTORY[:2]), "", down)
    ports = FakePorts(
        routes={"app": LIVE_B_WARM_A}, containers={A: True, B: True}, schema="0002", breaks=breaks
    )
    return apply.apply(p, ports, Tracking(out=None, ports=ports)), ports


def test_migrate_down_checks_both_releases_on_a_copy_then_migrates_and_rolls_back() -> None:
    out, ports = rolled_down(set())
    assert out.result == "succeeded" and ports.schema == "0001"
    assert ports.names[:3] == ["schema_version", "schema_check", "migrate"]
    assert ports.routes["app"] == R(srv(A, 100), srv(B, 0, drain=True))


def test_migrate_down_that_would_break_the_warm_release_is_refused_untouched() -> None:
    out, ports = rolled_down({B})
    assert (out.result, out.stage) == ("failed", "schema-down")
    assert f"would break {B}" in str(out.error) and "Prod's database was not touched" in str(
        out.error
    )
    assert ports.schema == "0002" and ports.routes["app"] == LIVE_B_WARM_A


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (
            "Traceback (most recent call last):\n  File x\nsqlalchemy.exc.ProgrammingError: "
            '(psycopg2.errors.SyntaxError) syntax error at or near "TABEL"\nLINE 1: ALTER TABEL\n'
            "[SQL: ALTER TABEL users]\n(Background on this error at: https://sqlalche.me/e/20/f405)",
            "sqlalchemy.exc.ProgrammingError: (psycopg2.errors.SyntaxError) syntax error at or "
            'near "TABEL"',
        ),
        (
            "FAILED: Can't locate revision identified by '0003'\n",
            "FAILED: Can't locate revision identified by '0003'",
        ),
        (
            "could not connect to postgresql://app:***@db/x\n",
            "could not connect to postgresql://app:***@db/x",
        ),
        ("", "no output"),
    ],
)
def test_a_failed_commands_cause_is_the_line_that_says_why(output: str, expected: str) -> None:
    assert schema.cause(output) == expected
