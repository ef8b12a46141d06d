"""The load oracle on fixed series (pure): what counts as failed, gaps, which releases may answer
each request while operations make other releases live."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.proof import load, loadreport


def req(t: float, status: int = 200, release: str = "a", ms: float = 10.0) -> load.Request:
    return load.Request(t, ms, "read", "keepalive", status, "", release)


def series(start: float, stop: float, *releases: str, step: float = 0.01) -> list[load.Request]:
    """A request every ``step`` s from ``start`` (included) to ``stop`` (excluded), answered by
    ``releases`` in turn (several: a switch under way, old and new answers interleaved)."""
    count = round((stop - start) / step)
    return [
        req(round(start + k * step, 4), release=releases[k % len(releases)]) for k in range(count)
    ]


@pytest.mark.parametrize(
    ("status", "ok"),
    [(200, True), (201, True), (404, True), (500, False), (503, False), (0, False)],
)
def test_a_request_fails_on_no_answer_or_5xx(status: int, ok: bool) -> None:
    assert req(0, status).ok is ok


def test_longest_gap_counts_only_successes() -> None:
    rs = [req(0.0), req(0.1), req(0.2, 503), req(0.3, 0), req(1.5), req(1.6)]
    assert load.longest_gap(rs, 0.0, 2.0) == pytest.approx(1.51 - 0.11)


DEPLOY_B = load.Operation("deploy b", "b", started=10.0, returned=10.9)
ROLLBACK_A = load.Operation("rollback to a", "a", started=10.95, returned=11.7)
# The run that failed: b live 0.8 s (10.6 to 11.4) between its deploy and a quick rollback. The
# majority per whole second never went to b (second 10: 60 a, 40 b; second 11: 40 b, 60 a), so
# the sequence of "the release that answered most requests each second" was [a]: b vanished.
B_LIVE_08_S = [
    *series(8.0, 10.56, "a"),
    *series(10.56, 10.64, "a", "b"),  # the switch: old and new answers interleaved
    req(10.6, release="a", ms=400.0),  # in flight on a, answered after b's first answers
    *series(10.64, 11.36, "b"),
    *series(11.36, 11.44, "b", "a"),
    req(11.42, release="b", ms=250.0),
    *series(11.44, 14.0, "a"),
]
# a -> b -> c -> b; deploy c's mark is when deploy b returned, and so on (no time between)
CHAIN = [
    load.Operation("deploy b", "b", 10.0, 10.5),
    load.Operation("deploy c", "c", 10.5, 11.0),
    load.Operation("rollback to b", "b", 11.0, 11.5),
]


@pytest.mark.parametrize(
    ("requests", "operations", "problems"),
    [
        pytest.param(series(0.0, 5.0, "a"), [], [], id="no operation, the first release only"),
        pytest.param(B_LIVE_08_S, [DEPLOY_B, ROLLBACK_A], [], id="b live 0.8 s, seen exactly"),
        pytest.param(
            [
                *series(9.0, 10.2, "a"),
                *series(10.2, 10.3, "a", "b"),
                *series(10.3, 10.7, "b"),
                *series(10.7, 10.8, "b", "c"),
                *series(10.8, 11.2, "c"),
                *series(11.2, 11.3, "c", "b"),
                *series(11.3, 12.0, "b"),
            ],
            CHAIN,
            [],
            id="deploy, deploy, rollback",
        ),
        pytest.param(
            series(9.0, 12.0, "a"),
            [load.Operation("deploy a", "a", 10.0, 10.5)],
            [],
            id="a deploy of the live release",
        ),
        pytest.param(
            [
                *series(9.0, 10.2, "a"),
                *series(10.2, 11.0, "b"),
                req(9.5, 503, release="c"),  # failed: Traffic.failed counts it, not this check
                req(9.6, 0, release=""),
                req(10.95, 404, release=""),  # answered without a release (not by the app)
            ],
            [DEPLOY_B],
            [],
            id="failed requests and answers without a release are not judged",
        ),
        pytest.param(
            series(9.0, 11.7, "a"),
            [
                DEPLOY_B,
                load.Operation("rollback to a", "a", DEPLOY_B.returned, 11.5),
            ],
            ["'deploy b': b answered no request started from then until 'rollback to a' returned"],
            id="a target never seen",
        ),
        pytest.param(
            [*series(9.0, 10.5, "a"), *series(10.5, 11.2, "c"), *series(11.2, 12.0, "b")],
            CHAIN,
            ["'deploy b': b answered no request started from then until 'deploy c' returned"],
            id="a target seen only in a later operation",
        ),
        pytest.param(
            series(9.0, 10.3, "a"),
            [DEPLOY_B],
            ["'deploy b': b answered no request started from then until the end"],
            id="the last target never seen (and no request after it returned)",
        ),
        pytest.param(
            [*B_LIVE_08_S, req(10.6, release="c")],
            [DEPLOY_B, ROLLBACK_A],
            ["a read started 0.600 s into 'deploy b' answered by c, not a or b"],
            id="a third release answers during a switch",
        ),
        pytest.param(
            [*B_LIVE_08_S, req(10.92, release="a")],
            [DEPLOY_B, ROLLBACK_A],
            ["a read started 0.020 s after 'deploy b' returned answered by a, not b"],
            id="the old release answers after the deploy returned",
        ),
        pytest.param(
            [*B_LIVE_08_S, req(12.0, release="b", ms=1.0)],
            [DEPLOY_B, ROLLBACK_A],
            ["a read started 0.300 s after 'rollback to a' returned answered by b, not a"],
            id="the old release answers after the rollback returned",
        ),
        pytest.param(
            [*B_LIVE_08_S, req(9.0, release="b")],
            [DEPLOY_B, ROLLBACK_A],
            ["a read started 1.000 s before 'deploy b' answered by b, not a"],
            id="the next release answers before its deploy",
        ),
        pytest.param(
            [*series(0.0, 1.0, "a"), req(0.5, release="b")],
            [],
            ["a read started with no operation answered by b, not a"],
            id="another release with no operation",
        ),
        pytest.param(
            [*series(8.0, 12.0, "a"), req(10.95, release="c")],
            [DEPLOY_B, ROLLBACK_A],
            [
                "'deploy b': b answered no request started from then until 'rollback to a' "
                "returned",
                *(
                    f"a read started 0.0{k}0 s after 'deploy b' returned answered by a, not b"
                    for k in range(5)
                ),
                "a read started 0.000 s into 'rollback to a' answered by c, not b or a",
            ],
            id="several problems, earliest first",
        ),
    ],
)
def test_release_problems_judge_every_answer_against_the_plan(
    requests: list[load.Request], operations: list[load.Operation], problems: list[str]
) -> None:
    assert load.release_problems(requests, "a", operations) == problems


@pytest.mark.parametrize(
    ("operations", "message"),
    [
        ([load.Operation("deploy b", "b", 10.0, 9.0)], "'deploy b' returned before it started"),
        (
            [
                load.Operation("deploy b", "b", 10.0, 11.0),
                load.Operation("deploy c", "c", 10.5, 12),
            ],
            "'deploy c' started before 'deploy b' returned",
        ),
    ],
)
def test_release_problems_refuse_operations_out_of_order(
    operations: list[load.Operation], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        load.release_problems([], "a", operations)


def test_an_operation_is_marked_and_noted_once_it_returns(tmp_path: Path) -> None:
    traffic = load.Traffic("t", 10, tmp_path / "t.jsonl")
    with traffic.operation("deploy b", target="b"):
        pass
    with pytest.raises(RuntimeError), traffic.operation("deploy c", target="c"):
        raise RuntimeError("the deploy failed")
    assert [label for _, label in traffic.marks] == ["deploy b", "deploy c"]
    (op,) = traffic.operations
    assert (op.label, op.target, op.started) == ("deploy b", "b", traffic.marks[0][0])
    assert op.started <= op.returned <= traffic.marks[1][0]
    traffic.requests = [req(op.started - 1), req(op.returned + 1, release="b")]
    assert traffic.release_problems(first="a") == []
    assert traffic.summary()["answers_by_release"] == {"a": 1, "b": 1}


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


def test_locust_reads_the_given_paths_or_the_demo_mix(tmp_path: Path) -> None:
    base = {"PATH": "/bin", "HTTPS_PROXY": "http://proxy:3128", "CDLAB_LOAD_PATHS": "/stale"}
    given = load.environment(base, tmp_path / "o.jsonl", 300, 1000, ["/", "/simple/", "/a?b=1"])
    assert given["CDLAB_LOAD_PATHS"] == "/,/simple/,/a?b=1"
    assert (given["CDLAB_LOAD_RATE"], given["CDLAB_LOAD_MAX"], given["PATH"]) == (
        "300",
        "1000",
        "/bin",
    )
    assert "HTTPS_PROXY" not in given and given["NO_PROXY"] == "127.0.0.1"
    assert "CDLAB_LOAD_PATHS" not in load.environment(base, tmp_path / "o.jsonl", 300, 1000)


@pytest.mark.parametrize("path", ["simple/", "/a,b", " /x", ""])
def test_a_path_the_locustfile_cannot_read_is_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(load.LoadError, match="a leading '/', no comma"):
        load.environment({}, tmp_path / "o.jsonl", 300, 1000, ["/", path])


def test_a_request_line_keeps_its_path() -> None:
    line = json.dumps({**req(1.0, 500).__dict__, "path": "/packages/"})
    (r,) = load.parse([line])
    assert (r.path, r.ok) == ("/packages/", False)
