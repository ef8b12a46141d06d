"""The order of a service's history with runners whose clocks disagree (cd's off by 10 minutes):
shared records in the route store's revision order, local-only ones merged by time, no two
runs' records colliding; and what reads that order (``invoke releases``, the rollback target,
retention, the schema's last known version) reads it right."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from lab.errors import ConfigError
from lab.progress import Progress
from lab.release import history, records, routes, schema
from tests.unit.fake_ports import FakeEtcd

S = routes.Server
WS, CD = "ada@workstation", "git push to cd (refs/heads/main)"


class Runner:
    """A machine that runs releases: its own records folder and its clock's offset (seconds)."""

    def __init__(self, folder: Path, trigger: str, offset: float) -> None:
        self.folder, self.trigger, self.offset = folder, trigger, offset

    def run(
        self,
        store: FakeEtcd,
        monkeypatch: pytest.MonkeyPatch,
        release: str,
        kind: str = "deploy",
        result: str = "",
        left: str = "",
    ) -> records.Record:
        """A run as ``pipeline.Run`` records it: ``started`` from ``records.now`` with this
        runner's clock, the file written here, then published."""
        monkeypatch.setenv(records.CLOCK_OFFSET, str(self.offset))
        monkeypatch.setenv("CDLAB_TRIGGER", self.trigger)
        started = records.now()
        rec = records.make(
            kind, "app", release, None, "", "bluegreen", started, Progress(out=None), None, result
        )
        if left:
            rec = records.Record(**{**rec.__dict__, "schema": {"left": left}})
        records.write(self.folder, rec)
        records.publish(store, rec)
        return rec


@pytest.fixture
def runners(tmp_path: Path) -> tuple[Runner, Runner]:
    return Runner(tmp_path / "ws", WS, 0.0), Runner(tmp_path / "cd", CD, -600.0)


@pytest.mark.parametrize(
    "offsets",
    [
        [0, -600, -1200, -1800],  # each run's clock 10 minutes behind the one before
        [600, 0, 600, 0],  # cd's clock 10 minutes ahead, cd and the workstation in turn
        [0, -600, 0, -600],  # cd's clock 10 minutes behind
    ],
)
def test_records_written_with_clocks_going_backwards_are_listed_in_write_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offsets: list[float]
) -> None:
    store = FakeEtcd()
    written = [
        Runner(tmp_path / ("ws", "cd")[i % 2], (WS, CD)[i % 2], offset).run(
            store, monkeypatch, release
        )
        for i, (release, offset) in enumerate(zip("abcd", offsets, strict=True))
    ]
    stamps = [r.started for r in written]
    assert stamps != sorted(stamps), "the clocks were not skewed: the test proves nothing"
    for folder in ("ws", "cd", "elsewhere"):  # whichever runner reads it
        got = records.history(tmp_path / folder, "app", store)
        assert [r.release for r in got] == ["a", "b", "c", "d"], folder


def test_a_workstation_and_a_skewed_cd_share_one_history(
    runners: tuple[Runner, Runner], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, cd = runners
    store = FakeEtcd()
    ws.run(store, monkeypatch, "a", left="0001")
    cd.run(store, monkeypatch, "b", left="0002")  # 10 minutes earlier by cd's clock
    ws.run(store, monkeypatch, "c", result="failed", left="0002")
    cd.run(store, monkeypatch, "d", left="0003")
    for reader in (ws, cd):
        got = records.history(reader.folder, "app", store)
        assert [(r.release, r.trigger) for r in got] == [("a", WS), ("b", CD), ("c", WS), ("d", CD)]
        # the schema's version now is what the last run left, not the latest clock's
        assert schema.known(got).now == "0003"


def test_releases_rollback_and_retention_follow_the_history_not_the_clocks(
    runners: tuple[Runner, Runner], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, cd = runners
    store = FakeEtcd()
    ws.run(store, monkeypatch, "a")
    ws.run(store, monkeypatch, "b")
    cd.run(store, monkeypatch, "c")  # made live last, stamped 10 minutes before b
    got = records.history(ws.folder, "app", store)
    made_live = [r.release for r in got if r.result == "succeeded" and r.kind in history.MADE_LIVE]
    assert made_live == ["a", "b", "c"]

    current = routes.Routes("app", (S("c", "app-c", 100), S("b", "app-b", 0, drain=True)))
    rows = history.rows(got, current, {"a", "b", "c"})
    assert [(r.release, r.status, r.by) for r in rows] == [
        ("c", "live", CD),
        ("b", "warm", WS),
        ("a", "retained", WS),
    ]
    # no warm release: the newest made live before the live one, by the history's order
    cold = routes.Routes("app", (S("c", "app-c", 100),))
    assert routes.rollback_target(cold, made_live, None) == "b"
    kept, pruned = routes.retention(made_live, ["a", "b", "c"], cold, 2)
    assert (kept, pruned) == (["c", "b"], [])


def test_a_rollback_puts_its_release_on_top_of_the_table(
    runners: tuple[Runner, Runner], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, cd = runners
    store = FakeEtcd()
    ws.run(store, monkeypatch, "a")
    ws.run(store, monkeypatch, "b")
    cd.run(store, monkeypatch, "a", kind="rollback")  # a live again, by cd's earlier clock
    got = records.history(ws.folder, "app", store)
    current = routes.Routes("app", (S("a", "app-a", 100), S("b", "app-b", 0, drain=True)))
    assert [(r.release, r.status) for r in history.rows(got, current, {"a", "b"})] == [
        ("a", "live"),
        ("b", "warm"),
    ]


def test_two_runs_stamped_the_same_second_never_overwrite_each_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FakeEtcd()
    frozen = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)
    monkeypatch.setattr(records, "now", lambda: frozen)
    first = Runner(tmp_path / "runs", WS, 0).run(store, monkeypatch, "a")
    second = Runner(tmp_path / "runs", CD, 0).run(store, monkeypatch, "a")  # same second, kind
    assert first.started == second.started and first.run != second.run
    assert len(list((tmp_path / "runs").glob("*.json"))) == 2
    assert len(store.get_prefix(records.ETCD_PREFIX)) == 2
    got = records.history(tmp_path / "runs", "app", store)
    assert [r.trigger for r in got] == [WS, CD]


def test_publish_creates_and_never_overwrites() -> None:
    store = FakeEtcd()
    rec = records.Record(
        "deploy", "app", "a", None, "", "bluegreen", WS, "2026-11-23T10:00:00+00:00", 1.0,
        "succeeded", run="r1",
    )  # fmt: skip
    records.publish(store, rec)
    records.publish(store, records.Record(**{**rec.__dict__, "result": "failed"}))
    (entry,) = store.get_prefix_with_revisions(records.ETCD_PREFIX)
    assert entry.key == records.key(rec) and (entry.create_revision, entry.mod_revision) == (1, 1)
    assert b'"succeeded"' in entry.value


def test_etcd_down_when_publishing_keeps_the_local_record(tmp_path: Path) -> None:
    store = FakeEtcd(down=True)
    rec = _rec("a", "2026-11-23T10:00:00+00:00", "r1")
    records.write(tmp_path, rec)
    records.publish(store, rec)  # best effort: not an error of the run
    assert records.history(tmp_path, "app", store) == [rec]


def _rec(release: str, started: str, run: str = "", kind: str = "deploy") -> records.Record:
    return records.Record(
        kind, "app", release, None, "", "bluegreen", WS, started, 1.0, "succeeded", run=run
    )


T = "2026-11-23T10:{:02d}:00+00:00".format
ORDER_CASES = {
    # case: (shared (revision, record), local records, expected releases)
    "shared only: by revision, the clocks reversed": (
        [(3, _rec("c", T(0), "r3")), (1, _rec("a", T(20), "r1")), (2, _rec("b", T(10), "r2"))],
        [],
        ["a", "b", "c"],
    ),
    "local only: by time": (
        [],
        [_rec("b", T(10), "r2"), _rec("a", T(5), "r1")],
        ["a", "b"],
    ),
    "a run both local and shared: once, in the shared place": (
        [(1, _rec("a", T(30), "r1")), (2, _rec("b", T(0), "r2"))],
        [_rec("b", T(0), "r2")],
        ["a", "b"],
    ),
    "local-only before the first shared run that started after it": (
        [(1, _rec("a", T(0), "r1")), (2, _rec("c", T(20), "r3"))],
        [_rec("b", T(10), "r2")],
        ["a", "b", "c"],
    ),
    "local-only after every shared run": (
        [(1, _rec("a", T(0), "r1")), (2, _rec("b", T(10), "r2"))],
        [_rec("c", T(30), "r3")],
        ["a", "b", "c"],
    ),
    "the shared order never moves for a local-only run": (
        # cd's b is 10 minutes ahead: the local-only c (between them by time) goes before b,
        # and b stays after a although a started later by its clock than c
        [(1, _rec("a", T(10), "r1")), (2, _rec("b", T(30), "r2"))],
        [_rec("c", T(20), "r3")],
        ["a", "c", "b"],
    ),
    "records of a cdlab before run ids: the same run by started, kind, release": (
        [(1, _rec("a", T(0))), (2, _rec("a", T(5), kind="rollback"))],
        [_rec("a", T(0)), _rec("a", T(5), kind="rollback")],
        ["a", "a"],
    ),
    "a duplicate in the store counts once, at its first revision": (
        [(1, _rec("a", T(0), "r1")), (2, _rec("b", T(1), "r2")), (3, _rec("a", T(0), "r1"))],
        [],
        ["a", "b"],
    ),
}


@pytest.mark.parametrize("case", list(ORDER_CASES))
def test_order(case: str) -> None:
    shared, local, expected = ORDER_CASES[case]
    got = records.order([records.Shared(rev, rec) for rev, rec in shared], local)
    assert [r.release for r in got] == expected


def test_the_clock_offset_moves_the_runners_clock_only() -> None:
    real = dt.datetime.now(dt.UTC)
    skewed = records.now({records.CLOCK_OFFSET: "-600"})
    assert abs((real - skewed).total_seconds() - 600) < 5
    assert abs((records.now({}) - real).total_seconds()) < 5


def test_a_bad_clock_offset_says_what_is_expected() -> None:
    with pytest.raises(ConfigError, match=r"CDLAB_CLOCK_OFFSET_S.*'ten'.*number of seconds"):
        records.now({records.CLOCK_OFFSET: "ten"})


def test_the_releases_table_without_records_and_with_a_match() -> None:
    current = routes.Routes(
        "app",
        (S("b", "app-b", 100), S("a", "app-a", 0, drain=True), S("m", "app-m", 0)),
        routes.Match("header", "X-Canary", "1", "m"),
    )
    rows = history.rows([_rec("a", T(0), "r1")], current, {"a"})
    assert [(r.release, r.status) for r in rows] == [
        ("m", "matched (header:X-Canary=1)"),
        ("b", "live"),
        ("a", "warm"),
    ]
