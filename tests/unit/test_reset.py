"""``lab.reset``'s history stage: the reset record is written before anything is deleted, says
what the records knew of the database, and keeps the last record of each release a run pins
(a test suite's put-back rolls back to it); another service's records are never touched."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lab.release import history, pins, records, reset
from tests.unit.fake_ports import FakeEtcd

A, B, C = "a" * 12, "b" * 12, "c" * 12


def rec(release: str, kind: str = "deploy", service: str = "app", **schema: str) -> records.Record:
    return records.Record(
        kind, service, release, None, f"img@{release}", "bluegreen", "me", "t", 1.0,
        "succeeded", schema=dict(schema), run=records.new_run_id(),
    )  # fmt: skip


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(records, "copy_to_cd", lambda cfg, path: True)
    monkeypatch.setattr(reset, "_clear_on_cd", lambda lab, name, keep: "")
    state = SimpleNamespace(secret_values=lambda: ())
    return SimpleNamespace(runs=tmp_path, etcd=FakeEtcd(), state=state, config=None)


def keep_all(fake: Any, *recs: records.Record) -> None:
    for r in recs:
        records.write(fake.runs, r)
        records.publish(fake.etcd, r)


def test_the_history_becomes_one_reset_record_with_what_the_database_is_at(fake: Any) -> None:
    keep_all(
        fake,
        rec(A, needs="0001", left="0001"),
        rec(B, needs="0002", left="0002"),
        rec(A, "rollback", left="0002"),  # A went back on v2
        rec(C, service="web-app"),  # another service whose name ends like it
    )
    said = reset._records(fake, "app", A)
    assert said.startswith("3 record(s) cleared")
    (only,) = records.history(fake.runs, "app", fake.etcd)
    assert (only.kind, only.release, only.image) == ("reset", A, f"img@{A}")
    assert only.schema == {"needs": "0001", "left": "0002"}  # the database is still at v2
    assert [r.release for r in records.history(fake.runs, "web-app", fake.etcd)] == [C]
    assert [
        r.release for r in records.history(fake.runs, "app") if r.kind in history.MADE_LIVE
    ] == [A]


def test_the_last_record_of_a_pinned_release_stays_for_a_rollback_to_it(fake: Any) -> None:
    keep_all(fake, rec(B), rec(C), rec(A))
    pins.pin(fake.etcd, "app", B, "suite-0123456789ab")
    reset._records(fake, "app", A)
    got = [(r.kind, r.release) for r in records.history(fake.runs, "app", fake.etcd)]
    assert got == [("deploy", B), ("reset", A)]


def test_a_failed_run_prints_its_record_as_json_and_bad_input_prints_nothing(
    fake: Any,
) -> None:
    import io
    import json

    from lab.errors import ConfigError, ReleaseError

    keep_all(fake, rec(A))
    out = io.StringIO()
    with pytest.raises(ReleaseError):  # noqa: SIM117
        with records.json_on_failure(fake.runs, "app", fake.etcd, ["s3cr3t-Value-0123"], out):
            failed = dataclasses.replace(rec(B), result="failed", error="pw s3cr3t-Value-0123")
            keep_all(fake, failed)
            raise ReleaseError("integration tests failed", "app", B)
    doc = json.loads(out.getvalue())
    assert (doc["release"], doc["result"]) == (B, "failed") and "s3cr3t" not in out.getvalue()
    quiet = io.StringIO()
    with pytest.raises(ConfigError):  # noqa: SIM117
        with records.json_on_failure(fake.runs, "app", fake.etcd, [], quiet):
            raise ConfigError("--steps", "x", "numbers")
    assert quiet.getvalue() == ""
