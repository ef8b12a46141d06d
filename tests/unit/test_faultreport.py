"""The fault matrix's page: rows rendered to Markdown, and the lines xdist's workers append
merged into the rows of one run."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from lab.proof import faultreport
from lab.proof.faultreport import Row


def row(case: str, t: float, run: str = "r1", test: str = "", **kw: object) -> Row:
    base = Row(case, "etcd stopped", 0, 0.08, 0, "0 failed, deploy refused", "passed", test, run, t)
    return Row(**{**base.__dict__, **kw})


def test_a_page_has_one_row_per_case_with_its_figures() -> None:
    page = faultreport.render(
        [
            row("etcd stopped while serving", 1.0),
            row("postgres restarted", 2.0, failed=37, outage_s=4.2, lost=None, outcome="failed"),
        ],
        when="2026-11-23 10:00",
    )
    lines = page.splitlines()
    assert lines[0] == "# Fault matrix"
    assert "2 cases, run 2026-11-23 10:00: 1 passed, 1 failed" in page
    table = [ln for ln in lines if ln.startswith("|")]
    assert table[0] == (
        "| case | injected | failed requests | outage | writes lost | what must hold | result |"
    )
    assert table[2] == (
        "| etcd stopped while serving | etcd stopped | 0 | 0.08 s | 0 | 0 failed, deploy refused "
        "| passed |"
    )
    cells = [c.strip() for c in table[3].strip("|").split("|")]
    assert cells[2:5] == ["37", "4.20 s", "-"] and cells[6] == "failed"


def test_a_cell_never_breaks_the_table() -> None:
    page = faultreport.render([row("a | b", 1.0, injected="two\nlines", verdict="")])
    (line,) = [ln for ln in page.splitlines() if ln.startswith("| a")]
    assert line.startswith("| a \\| b | two lines | 0 |")
    assert line.count(" | ") == len(faultreport.HEAD) - 1  # the escaped pipe is not a column


def test_nothing_measured_shows_dashes() -> None:
    page = faultreport.render([row("two deploys at once", 1.0, failed=None, outage_s=None)])
    cells = [c.strip() for c in page.splitlines()[-1].strip("|").split("|")]
    assert cells[2:4] == ["-", "-"]


def test_merge_keeps_this_runs_rows_in_recorded_order() -> None:
    lines = [
        faultreport.to_line(row("b", 2.0, test="w1::b")),
        faultreport.to_line(row("old", 0.5, run="r0")),  # an earlier run's line
        '{"case": "cut short", "inje',  # a line a killed worker left half written
        "",
        "[1, 2]",
        faultreport.to_line(row("a", 1.0, test="w2::a")),
        '{"case": "x", "unknown_field": 1}',  # another version's line
    ]
    assert [r.case for r in faultreport.merge(lines, "r1")] == ["a", "b"]
    assert faultreport.merge(lines, "r9") == []


def test_merge_keeps_the_last_row_of_a_case_recorded_twice() -> None:
    lines = [
        faultreport.to_line(row("a", 1.0, test="t::a", outcome="failed")),
        faultreport.to_line(row("a", 3.0, test="t::a", outcome="passed")),
        faultreport.to_line(row("b", 2.0, test="t::b")),
    ]
    got = faultreport.merge(lines, "r1")
    assert [(r.case, r.outcome) for r in got] == [("b", "passed"), ("a", "passed")]


def test_workers_appending_at_once_leave_every_line_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(faultreport.RUN, "run42")
    path = tmp_path / "faults.jsonl"
    long = "x" * 2000  # longer lines than a buffered write would keep together

    def worker(w: int) -> None:
        for i in range(50):
            faultreport.append(Row(f"w{w}-{i}", long, i, 0.1, 0, long, "passed", f"t{w}"), path)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = path.read_text().splitlines()
    assert len(lines) == 400 and all(faultreport.from_line(ln) for ln in lines)
    rows = faultreport.merge(lines, "run42")  # stamped with the run and the time
    assert len(rows) == 400 and all(r.t > 0 for r in rows)


def test_the_page_comes_from_this_runs_lines_only(tmp_path: Path) -> None:
    jsonl, page = tmp_path / "faults.jsonl", tmp_path / "faults.md"
    assert faultreport.write_page("r1", jsonl, page) == 0 and not page.exists()
    faultreport.append(row("old case", 1.0, run="r0"), jsonl)
    faultreport.append(row("proxy killed", 2.0), jsonl)
    assert faultreport.write_page("r1", jsonl, page) == 1
    text = page.read_text()
    assert "| proxy killed |" in text and "old case" not in text
    page.write_text("an earlier page")
    assert faultreport.write_page("r2", jsonl, page) == 0  # no rows: the page stays
    assert page.read_text() == "an earlier page"


@pytest.mark.parametrize(
    ("args", "covered"),
    [
        (["tests"], True),
        (["."], True),
        (["tests/fault"], True),
        (["tests/fault/test_fault_matrix.py::test_x[a]"], True),
        (["tests/unit", "tests/integration"], False),
        (["tests/unit/test_faultreport.py"], False),
        ([], False),
    ],
)
def test_which_runs_may_run_fault_tests(tmp_path: Path, args: list[str], covered: bool) -> None:
    assert faultreport.covers(args, tmp_path, tmp_path / "tests" / "fault") is covered
