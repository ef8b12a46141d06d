"""Rollback planning, lock holders, flight records: pure parts of deploy and rollback."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from lab.errors import ConfigError
from lab.progress import Stage
from lab.release import history, lock, records, routes
from tests.unit.fake_ports import FakeEtcd

S = routes.Server
LIVE_B_WARM_A = routes.Routes("app", (S("b", "app-b", 100), S("a", "app-a", 0, drain=True)))
LIVE_B_ONLY = routes.Routes("app", (S("b", "app-b", 100),))


@pytest.mark.parametrize(
    ("current", "deployed", "to", "want"),
    [
        (LIVE_B_WARM_A, ["a", "b"], None, "a"),  # the warm previous release
        (LIVE_B_ONLY, ["a", "c", "b"], None, "c"),  # none warm: the newest other deployed
        (LIVE_B_ONLY, ["a", "c", "b"], "a", "a"),  # an older one by name
        (LIVE_B_WARM_A, [], "a", "a"),  # warm, though deployed before records existed
    ],
)
def test_rollback_target(
    current: routes.Routes, deployed: list[str], to: str | None, want: str
) -> None:
    assert routes.rollback_target(current, deployed, to) == want


@pytest.mark.parametrize(
    ("current", "deployed", "to", "message"),
    [
        (LIVE_B_ONLY, ["b"], None, "none was deployed before b"),
        (LIVE_B_ONLY, ["a", "b"], "b", "other than the live one (b)"),
        (LIVE_B_ONLY, ["a", "b"], "zzz", "latest first: b, a"),
    ],
)
def test_rollback_target_refusals_say_what_is_possible(
    current: routes.Routes, deployed: list[str], to: str | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        routes.rollback_target(current, deployed, to)


def test_previous_is_the_drained_release() -> None:
    assert routes.previous(LIVE_B_WARM_A) == "a"
    assert routes.previous(LIVE_B_ONLY) is None


def test_lock_holder_round_trip_and_the_refusal_names_who_and_since() -> None:
    me = lock.Holder("ada@ws", 42, "2026-11-23T15:00:00+00:00", "deploy app 3f9c2e1a0b1c")
    raw = json.dumps(me.__dict__).encode()
    assert lock.parse_holder(raw) == me
    assert lock.parse_holder(b"garbage") is None
    text = str(lock.LockHeld(me, raw, lock.TTL))
    assert "ada@ws (pid 42) since 2026-11-23T15:00:00+00:00: deploy app 3f9c2e1a0b1c" in text
    assert "invoke lock.release" in text


def test_timings_read_stage_keys_and_figures_never_titles() -> None:
    stages = [
        Stage("start", "start app-x on prod beside y", "changed", 1.5),
        Stage("healthy", "wait until app-x is healthy", "changed", 1.0, "", {"healthy_s": 0.9}),
        Stage("tests", "integration tests against the candidate's own address", "changed", 0.8),
        Stage("switch", "switch: all traffic to x", "changed", 0.2, "", {"to_100_s": 0.012}),
        Stage("drain", "drain y (until its active connections reach 0)", "changed", 0.1),
        Stage("image-app-x", "switch image app:x on cd", "changed", 4.0),  # a title is no key
        Stage("bake", "bake", "skipped", 0.0),
    ]
    assert records.timings(stages) == {
        "start": 1.5,
        "healthy": 1.0,
        "healthy_s": 0.9,
        "tests": 0.8,
        "switch": 0.2,
        "to_100_s": 0.012,
        "drain": 0.1,
    }


def _record(release: str, started: str, result: str = "succeeded") -> records.Record:
    return records.Record(
        "deploy", "app", release, None, "", "bluegreen", "t", started, 1.0, result
    )


def test_history_is_per_service_oldest_first_and_skips_foreign_files(tmp_path: Path) -> None:
    records.write(tmp_path, _record("b", "2026-11-23T10:00:02+00:00"))
    records.write(tmp_path, _record("a", "2026-11-23T10:00:01+00:00"))
    records.write(tmp_path, _record("c", "2026-11-23T10:00:03+00:00", "failed"))
    (tmp_path / "deploy-x-app-broken.json").write_text("{not json")
    assert [r.release for r in records.history(tmp_path, "app")] == ["a", "b", "c"]
    assert records.history(tmp_path, "other") == []


def test_releases_table() -> None:
    rows = [
        history.ReleaseRow("b", "live", "2026-11-23T10:00:02+00:00", "ada@ws"),
        history.ReleaseRow("a", "warm", "2026-11-23T10:00:01+00:00", "ada@ws"),
    ]
    lines = history.render_releases(rows).splitlines()
    assert lines[0].split() == ["RELEASE", "STATUS", "LAST", "MADE", "LIVE", "BY", "PINNED"]
    assert lines[1].split()[:2] == ["b", "live"] and lines[2].split()[:2] == ["a", "warm"]


def test_record_make_marks_the_failed_stage() -> None:
    from lab.progress import Progress

    p = Progress(out=None)
    p.stages += [
        Stage("build", "build", "changed", 1.0),
        Stage("healthy", "wait until x is healthy", "failed", 6.0),
    ]
    rec = records.make(
        "deploy",
        "app",
        "x",
        "y",
        "",
        "bluegreen",
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        p,
        RuntimeError("boom\nmore"),
    )
    assert (rec.result, rec.failed_stage, rec.error) == ("failed", "healthy", "boom")


def test_history_merges_local_and_shared_records_once(tmp_path: Path) -> None:
    store = FakeEtcd()
    local = _record("a", "2026-11-23T10:00:01+00:00")
    records.write(tmp_path, local)
    records.publish(store, local)  # the same run, in both places
    records.publish(store, _record("b", "2026-11-23T10:00:02+00:00"))  # pushed from dev, on cd
    assert [r.release for r in records.history(tmp_path, "app", store)] == ["a", "b"]


def test_the_trigger_can_be_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDLAB_TRIGGER", "git push to cd (refs/heads/main)")
    assert records.trigger() == "git push to cd (refs/heads/main)"
