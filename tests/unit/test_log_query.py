"""Reading the store back (cdlab_logs.query and the ``query`` command): time order across
releases and old files, --since, --release, --lines, the output's form, a service without
logs, and following through a rotation."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cdlab_logs import __main__ as cli
from cdlab_logs import query
from cdlab_logs.config import Limits
from cdlab_logs.query import Query
from cdlab_logs.store import Store

T0 = 1796098683.0  # 2026-12-01T04:18:03Z


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def filled(root: Path, limits: Limits | None = None) -> Clock:
    """app's r1 and r2 written in turns (t = T0+1 ... T0+8), quotes' q1 once; r1's first
    lines rotated into r1.log.1 by a small file bound."""
    clock = Clock()
    store = Store(root, limits or Limits(file_bytes=400), clock=clock)
    for i in range(4):
        store.add("app/r1/app-r1", "prod", f"r1 line {i}")
        store.add("app/r2/app-r2", "prod", f"r2 line {i}")
    store.add("quotes/q1/quotes-q1", "prod", "q1 line")
    store.close()
    return clock


def run(root: Path, q: Query, clock: Callable[[], float] = time.time) -> list[str]:
    out = io.StringIO()
    query.run(root, q, out, clock=clock)
    return out.getvalue().splitlines()


def test_a_service_s_lines_come_in_time_order_across_releases_and_old_files(
    tmp_path: Path,
) -> None:
    filled(tmp_path)
    assert (tmp_path / "app" / "r1.log.1").exists()  # the merge has an old file to read
    assert run(tmp_path, Query("app")) == [
        f"2026-12-01T04:18:{4 + n:02d}.000Z prod app-{r} {r} {r} line {i}"
        for n, (i, r) in enumerate((i, r) for i in range(4) for r in ("r1", "r2"))
    ]


def test_one_release_without_its_name_on_each_line(tmp_path: Path) -> None:
    filled(tmp_path)
    assert run(tmp_path, Query("app", "r2")) == [
        f"2026-12-01T04:18:{5 + 2 * i:02d}.000Z prod app-r2 r2 line {i}" for i in range(4)
    ]


def test_since_and_lines(tmp_path: Path) -> None:
    clock = filled(tmp_path)  # now: T0 + 9, the last line of app at T0 + 8
    since = run(tmp_path, Query("app", since=3.5), clock=lambda: clock.now)
    assert [line.rsplit(" ", 3)[1:] for line in since] == [
        ["r2", "line", "2"],
        ["r1", "line", "3"],
        ["r2", "line", "3"],
    ]
    assert run(tmp_path, Query("app", lines=2)) == since[-2:]
    assert run(tmp_path, Query("app", since=3.5, lines=1), clock=lambda: clock.now) == since[-1:]
    assert run(tmp_path, Query("app", lines=0)) == []


def test_json_gives_the_stored_objects(tmp_path: Path) -> None:
    filled(tmp_path)
    (line,) = run(tmp_path, Query("quotes", as_json=True))
    assert line == (
        '{"t": 1796098692.0, "host": "prod", "container": "quotes-q1", "service": "quotes", '
        '"release": "q1", "line": "q1 line"}'
    )


def test_a_line_cannot_drive_the_terminal_and_milliseconds_are_not_rounded_up() -> None:
    doc = {
        "t": T0 + 0.9999,
        "host": "prod",
        "container": "",
        "release": "r1",
        "line": "\x1b[2Ja\tb",
    }
    assert query.render(doc, show_release=True) == "2026-12-01T04:18:03.999Z prod - r1 \\x1b[2Ja\tb"
    assert query.render(doc, show_release=False) == "2026-12-01T04:18:03.999Z prod - \\x1b[2Ja\tb"


def test_torn_or_foreign_lines_are_passed_over(tmp_path: Path) -> None:
    filled(tmp_path)
    with (tmp_path / "quotes" / "q1.log").open("a") as f:
        f.write('not json\n["a list"]\n{"t": "soon"}\n{"t": 1, "line": "half')
    assert [line.split(" ", 4)[4] for line in run(tmp_path, Query("quotes"))] == ["q1 line"]


def test_what_the_store_lacks_is_said_with_what_it_has(tmp_path: Path) -> None:
    assert "the store is empty" in query.missing(tmp_path, "app", None)
    filled(tmp_path)
    assert query.missing(tmp_path, "app", None) == ""
    assert query.missing(tmp_path, "app", "r1") == ""
    assert query.missing(tmp_path, "web", None) == (
        f"no logs for service 'web' in {tmp_path}; services with logs: app (r1, r2); quotes (q1)"
    )
    assert query.missing(tmp_path, "app", "r9") == (
        f"no logs for service 'app' release 'r9' in {tmp_path}; its releases with logs: r1, r2"
    )


def test_the_command_exits_3_for_a_service_without_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CDLAB_LOGS_DIR", str(tmp_path))
    filled(tmp_path)
    assert cli.main(["query", "--service", "web"]) == cli.NO_LOGS
    assert "no logs for service 'web'" in capsys.readouterr().err
    assert cli.main(["query", "--service", "app", "--release", "r1", "--lines", "1"]) == 0
    assert capsys.readouterr().out.endswith("prod app-r1 r1 line 3\n")


@pytest.mark.parametrize(
    "argv",
    [
        ["--service", "../etc"],
        ["--service", "app", "--release", "../../etc/passwd"],
        ["--service", "app", "--release", ".."],
        ["--service", "app", "--since", "5m"],  # the workstation converts it
        ["--service", "app", "--since", "-1"],
        ["--service", "app", "--lines", "-1"],
    ],
)
def test_the_command_refuses_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["query", *argv])
    assert exit_.value.code == 2


def test_bad_settings_are_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CDLAB_LOGS_TOTAL_MB", "lots")
    assert cli.main(["query", "--service", "app"]) == 2
    assert "CDLAB_LOGS_TOTAL_MB: 'lots'; expected a size in MB" in capsys.readouterr().err


class Lines(io.StringIO):
    def seen(self) -> list[str]:
        return self.getvalue().splitlines()


def wait_for(out: Lines, count: int) -> list[str]:
    deadline = time.monotonic() + 5
    while len(out.seen()) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return out.seen()


def test_follow_shows_new_lines_once_through_a_rotation_and_a_new_release(tmp_path: Path) -> None:
    store = Store(tmp_path, Limits(file_bytes=500))
    store.add("app/r1/c", "prod", "before")
    out, stop = Lines(), threading.Event()
    q = Query("app", lines=1)
    follower = threading.Thread(
        target=query.run,
        args=(tmp_path, q, out),
        kwargs={"follow": True, "stop": stop, "poll": 0.01},
    )
    follower.start()
    try:
        assert wait_for(out, 1)[0].endswith("r1 before")
        for i in range(6):  # about 110 bytes each: one rotation among them
            store.add("app/r1/c", "prod", f"during {i}")
        store.add("app/r2/c", "prod", "a new release")
        store.add("other/o1/c", "prod", "not asked")
        seen = wait_for(out, 8)
    finally:
        stop.set()
        follower.join(5)
    assert not follower.is_alive()  # a stop ends the follow
    assert (tmp_path / "app" / "r1.log.1").exists()
    assert [line.split(" ", 4)[4] for line in seen] == [
        "before",
        *(f"during {i}" for i in range(6)),
        "a new release",
    ]


def test_follow_ends_when_its_reader_goes_away(tmp_path: Path) -> None:
    Store(tmp_path).add("app/r1/c", "prod", "x")
    read, write = os.pipe()
    out = Lines()
    follower = threading.Thread(
        target=query.run,
        args=(tmp_path, Query("app"), out),
        kwargs={"follow": True, "stdin_fd": read, "poll": 0.01},
    )
    follower.start()
    wait_for(out, 1)
    os.close(write)  # the connection behind standard input ended
    follower.join(5)
    assert not follower.is_alive()


def test_follow_loses_nothing_when_it_looks_between_a_rotation_and_the_new_file(
    tmp_path: Path,
) -> None:
    """The follower may look after the store renamed ``r1.log`` to ``r1.log.1`` and before it
    created the next ``r1.log`` (one flaky run lost the renamed file's last lines there)."""
    current = tmp_path / "app" / "r1.log"
    store = Store(tmp_path, Limits(file_bytes=10_000))
    store.add("app/r1/c", "prod", "read before")
    store.flush()
    cursors: dict[Path, query._Cursor] = {}
    assert [d["line"] for d in query._fresh(current, cursors)] == ["read before"]
    store.add("app/r1/c", "prod", "written before the rename")
    store.close()
    os.replace(current, tmp_path / "app" / "r1.log.1")  # what the store's rotation does first
    assert [d["line"] for d in query._fresh(current, cursors)] == ["written before the rename"]
    assert current in cursors  # the new file, when it comes, is read from its start
    store = Store(tmp_path, Limits(file_bytes=10_000))
    store.add("app/r1/c", "prod", "in the new file")
    store.flush()
    assert [d["line"] for d in query._fresh(current, cursors)] == ["in the new file"]
    assert query._fresh(current, cursors) == []


def test_follow_forgets_a_file_removed_to_keep_the_store_in_bounds(tmp_path: Path) -> None:
    current = tmp_path / "app" / "r1.log"
    store = Store(tmp_path, Limits(file_bytes=10_000))
    store.add("app/r1/c", "prod", "soon removed")
    store.close()
    cursors: dict[Path, query._Cursor] = {}
    assert len(query._fresh(current, cursors)) == 1
    current.unlink()
    assert query._fresh(current, cursors) == [] and current not in cursors
