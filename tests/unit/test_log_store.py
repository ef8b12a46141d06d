"""The store's files (cdlab_logs.store): where a line goes, what it keeps, how it stays in
bounds, and that no tag writes outside its folder."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest
from cdlab_logs.config import Limits
from cdlab_logs.store import Store, files


def clock() -> itertools.count[float]:
    return itertools.count(1796098683.0, 0.5)


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(raw) for raw in path.read_text().splitlines()]


def test_a_line_goes_to_its_service_and_release_with_where_it_came_from(tmp_path: Path) -> None:
    store = Store(tmp_path, clock=clock().__next__)
    path = store.add("app/3f2a1b/cdlab-app-3f2a1b-1", "prod", 'said "hi" é')
    assert path == tmp_path / "app" / "3f2a1b.log"
    # written at once: a reader sees it before the store is closed
    assert lines(path) == [
        {
            "t": 1796098683.0,
            "host": "prod",
            "container": "cdlab-app-3f2a1b-1",
            "service": "app",
            "release": "3f2a1b",
            "line": 'said "hi" é',
        }
    ]
    store.add("app/-/proxy", "prod", "GET / 503")
    assert (tmp_path / "app" / "-.log").exists()


def test_a_line_with_a_newline_is_still_one_stored_line(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.add("app/r1/c", "prod", "one\ntwo\x00three")
    assert [d["line"] for d in lines(tmp_path / "app" / "r1.log")] == ["one\ntwo\x00three"]


HOSTILE = [
    "../../../tmp/evil",
    "app/../../evil/c",
    "app/../c",
    "/etc/passwd",
    "app/r1/../../../x",
    "..",
    ".",
    "app/r1/c\x00/../../x",
    "a/b/c/d/e",
    "\x00",
    "",
    "x" * 5000,
]


@pytest.mark.parametrize("tag", HOSTILE)
def test_no_tag_writes_outside_the_store(tmp_path: Path, tag: str) -> None:
    root = tmp_path / "store"
    path = Store(root).add(tag, "prod", "line")
    assert path.parent == root / "_other"
    assert path.resolve().parent == (root / "_other").resolve()
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == [path]
    (doc,) = lines(path)
    assert doc["service"] == "_other" and doc["tag"] == tag and doc["container"] == ""


def test_a_file_over_its_bound_becomes_the_one_old_file(tmp_path: Path) -> None:
    store = Store(tmp_path, Limits(file_bytes=1000, total_bytes=10**6))
    for i in range(40):
        store.add("app/r1/c", "prod", f"line {i:03d}")
    current, old = tmp_path / "app" / "r1.log", tmp_path / "app" / "r1.log.1"
    assert current.stat().st_size <= 1000 and old.stat().st_size <= 1000
    kept = [d["line"] for d in lines(old) + lines(current)]
    # one old file only: the oldest lines are gone, the newest in order, none twice
    assert kept == [f"line {i:03d}" for i in range(40 - len(kept), 40)]
    assert len(kept) < 40
    assert sorted(p.name for p in (tmp_path / "app").iterdir()) == ["r1.log", "r1.log.1"]


def test_over_the_total_the_files_written_to_longest_ago_go_first(tmp_path: Path) -> None:
    store = Store(tmp_path, Limits(file_bytes=10**6, total_bytes=3000))
    for release in ("r1", "r2", "r3"):
        for _ in range(5):
            store.add(f"app/{release}/c", "prod", "x" * 100)
        os.utime(tmp_path / "app" / f"{release}.log", (0, {"r1": 10, "r2": 30, "r3": 20}[release]))
    store.add("quotes/q1/c", "prod", "x" * 1000)  # over 3000 in all: trimmed to 2700 or less
    left = {f"{k.service}/{k.release}" for k in files(tmp_path)}
    assert left == {"app/r2", "quotes/q1"}  # r1 (10) then r3 (20) went; the one written stays
    assert store.total == sum(k.path.stat().st_size for k in files(tmp_path)) <= 2700


def test_the_file_being_written_is_never_trimmed_and_empty_folders_go(tmp_path: Path) -> None:
    store = Store(tmp_path, Limits(file_bytes=10**6, total_bytes=500))
    store.add("old/r1/c", "prod", "x" * 300)
    os.utime(tmp_path / "old" / "r1.log", (0, 0))
    path = store.add("app/r1/c", "prod", "y" * 600)  # alone over the total
    assert [k.path for k in files(tmp_path)] == [path]
    assert not (tmp_path / "old").exists()


def test_a_store_started_again_counts_what_is_there_and_appends(tmp_path: Path) -> None:
    first = Store(tmp_path)
    first.add("app/r1/c", "prod", "before")
    first.close()
    again = Store(tmp_path)
    assert again.total == (tmp_path / "app" / "r1.log").stat().st_size
    again.add("app/r1/c", "prod", "after")
    assert [d["line"] for d in lines(tmp_path / "app" / "r1.log")] == ["before", "after"]


def test_only_so_many_files_stay_open(tmp_path: Path) -> None:
    store = Store(tmp_path, Limits(open_files=2))
    for release in ("r1", "r2", "r3", "r1"):
        store.add(f"app/{release}/c", "prod", release)
    assert len(store._open) == 2
    assert [d["line"] for d in lines(tmp_path / "app" / "r1.log")] == ["r1", "r1"]


def test_files_lists_only_the_store_s_own(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    for name in ("r1.log", "r1.log.1", "x.log.log", ".log", "notes.txt", "r2.log.2"):
        (tmp_path / "app" / name).write_text("")
    (tmp_path / "stray.log").write_text("")
    found = [(k.service, k.release, k.old) for k in files(tmp_path)]
    assert found == [("app", "r1", False), ("app", "r1", True), ("app", "x.log", False)]
    assert [k.release for k in files(tmp_path, "app")] == ["r1", "r1", "x.log"]
    assert list(files(tmp_path / "missing")) == []


def test_a_file_s_order_is_its_time_order_when_the_clock_steps_back(tmp_path: Path) -> None:
    steps = iter([100.0, 99.0, 99.0, 101.0])  # NTP stepped it back
    store = Store(tmp_path, clock=steps.__next__)
    for i in range(3):
        store.add("app/r1/c", "prod", f"line {i}")
    store.add_proxy_lines("app", "r1", "prod", [b"cdlab-edge app r1 200 1 -- 0 GET /"] * 2)
    got = [d["t"] for d in lines(tmp_path / "app" / "r1.log")]
    assert got == [100.0, 100.000001, 100.000002, 101.0, 101.000001]
