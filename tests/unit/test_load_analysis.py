"""The load oracle on fixed series (pure): what counts as failed, gaps, the release sequence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.proof import load, loadreport


def req(t: float, status: int = 200, release: str = "a", ms: float = 10.0) -> load.Request:
    return load.Request(t, ms, "read", "keepalive", status, "", release)


@pytest.mark.parametrize(
    ("status", "ok"),
    [(200, True), (201, True), (404, True), (500, False), (503, False), (0, False)],
)
def test_a_request_fails_on_no_answer_or_5xx(status: int, ok: bool) -> None:
    assert req(0, status).ok is ok


def test_longest_gap_counts_only_successes() -> None:
    rs = [req(0.0), req(0.1), req(0.2, 503), req(0.3, 0), req(1.5), req(1.6)]
    assert load.longest_gap(rs, 0.0, 2.0) == pytest.approx(1.51 - 0.11)


def test_release_sequence_collapses_and_takes_the_majority_per_second() -> None:
    rs = [
        req(0.1, release="a"),
        req(0.5, release="a"),
        req(1.1, release="a"),
        req(1.2, release="b"),
        req(1.3, release="b"),
        req(2.5, release="b"),
        req(3.5, release="a"),
        req(3.6, 503, release=""),
    ]
    assert load.release_sequence(rs) == ["a", "b", "a"]


def test_percentiles_and_latency_after_moments() -> None:
    values = [float(v) for v in range(1, 101)]
    assert load.percentile(values, 99) == 99.0 and load.percentile([], 99) == 0.0
    rs = [req(t, ms=ms) for t, ms in ((0.5, 10), (10.5, 900), (11, 20), (30, 5))]
    assert load.p99_after(rs, [10.0]) == 900.0


def test_parse_skips_a_cut_line_and_sorts() -> None:
    lines = [json.dumps(req(2.0).__dict__), json.dumps(req(1.0).__dict__), '{"t": 3']
    assert [r.t for r in load.parse(lines)] == [1.0, 2.0]


def test_load_goes_to_loopback_only() -> None:
    with pytest.raises(load.LoadError, match=r"127\.0\.0\.1 only"):
        load.argv("http://10.100.200.201:8000", 300, 60)
    assert "--headless" in load.argv("http://127.0.0.1:8000", 300, 60)
    assert load.users_for(300) == 150


def test_the_report_page_has_one_row_per_second(tmp_path: Path) -> None:
    traffic = load.Traffic("t", 10, tmp_path / "t.jsonl", started=100.0, ended=103.0)
    traffic.requests = [req(100.2), req(101.5, 503), req(102.1, release="b")]
    traffic.mark("deploy b")
    rows = loadreport.per_second(traffic)
    assert [(r.ok, r.failed) for r in rows] == [(1, 0), (0, 1), (1, 0), (0, 0)]
    page = loadreport.write(traffic, tmp_path, {"deploys": 1})
    assert "<svg" in page.read_text()
    assert json.loads((tmp_path / "t.summary.json").read_text())["deploys"] == 1
