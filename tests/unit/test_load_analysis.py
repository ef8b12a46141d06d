"""The load oracle on fixed series (pure): the verdict on each answer, what counts as failed,
lines read or counted as broken, locust's totals against the lines, registrations that cannot be
read back, the rate reached, gaps, which releases may answer each request while operations make
other releases live."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from lab.proof import load, loadreport
from lab.proof.loadgen import verdicts


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
    [(200, True), (201, True), (302, False), (404, False), (409, False), (500, False), (0, False)],
)
def test_a_line_without_verdict_is_ok_only_as_a_2xx(status: int, ok: bool) -> None:
    assert req(0, status).ok is ok


def test_a_line_without_verdict_fails_on_an_error_even_after_a_200() -> None:
    assert not load.Request(0, 1.0, "read", "close", 200, "HTTPParseError: Incomplete", "a").ok


@pytest.mark.parametrize(
    ("status", "verdict", "ok"),
    [(200, "ok", True), (200, "body cut short", False), (201, "no id", False), (0, "ok", True)],
)
def test_a_line_with_a_verdict_is_ok_only_by_it(status: int, verdict: str, ok: bool) -> None:
    r = load.Request(0, 1.0, "read", "close", status, "", "a", verdict=verdict)
    assert r.ok is ok


def head(length: int | None = None, release: str = "abc", **more: str) -> dict[str, str]:
    found = {"x-release": release, **more}
    return found if length is None else {**found, "content-length": str(length)}


def doc(value: object) -> bytes:
    return json.dumps(value).encode()


VERSION = doc({"service": "app", "release": "abc", "image": "x"})
USERS = doc({"users": [{"id": 2, "email": "b@x.org"}, {"id": 1, "email": "a@x.org"}]})
MAIL = "load-1@cdlab.invalid"
REGISTERED = doc({"id": 7, "name": "load", "email": MAIL, "release": "abc"})


@pytest.mark.parametrize(
    ("expect", "status", "headers", "body", "verdict"),
    [
        ("version", 200, head(len(VERSION)), VERSION, "ok"),
        ("version", 200, head(), VERSION, "ok"),  # no Content-Length: chunked, read whole
        ("version", 500, head(), VERSION, "status 500"),
        ("version", 404, head(), VERSION, "status 404"),
        ("version", 200, head(len(VERSION) + 9), VERSION, "body cut short"),
        ("version", 200, head(3), VERSION, "body longer than its Content-Length"),
        ("version", 200, head(len(VERSION), release=""), VERSION, "no X-Release"),
        ("version", 200, head(2), b"{x", "body not JSON"),
        ("version", 200, head(2), b"\xff\xfe", "body not JSON"),
        ("version", 200, head(), doc(["abc"]), "body not a JSON object"),
        ("version", 200, head(), doc({"release": ""}), "no release in body"),
        ("version", 200, head(release="other"), VERSION, "X-Release other, body abc"),
        ("users", 200, head(len(USERS)), USERS, "ok"),
        ("users", 200, head(), doc({"users": []}), "ok"),
        ("users", 200, head(), doc([{"id": 1}]), "body not a JSON object"),
        ("users", 200, head(), doc({"users": {"id": 1}}), "no users list"),
        (
            "users",
            200,
            head(),
            doc({"users": [{"id": i} for i in range(1, 7)]}),
            "6 users, asked 5",
        ),
        ("users", 200, head(), doc({"users": [{"id": 1}, {"email": "a"}]}), "a user without an id"),
        ("users", 200, head(), doc({"users": [{"id": True}]}), "a user without an id"),
        ("register", 201, head(len(REGISTERED)), REGISTERED, "ok"),
        ("register", 201, head(), doc({"id": 7}), "ok"),  # no email echoed: nothing to compare
        ("register", 409, head(), doc({"error": "exists"}), "status 409"),
        ("register", 200, head(), REGISTERED, "status 200"),
        ("register", 201, head(), doc({"email": MAIL}), "no id"),
        ("register", 201, head(), doc({"id": "7", "email": MAIL}), "no id"),
        ("register", 201, head(), doc({"id": True}), "no id"),
        ("register", 201, head(), doc({"id": 0}), "no id"),
        ("register", 201, head(), doc({"id": 7, "email": "x@y.org"}), "email not echoed"),
        ("register", 201, head(len(REGISTERED) + 1), REGISTERED, "body cut short"),
        ("complete", 200, {"content-length": "2"}, b"ok", "ok"),
        ("complete", 200, {}, b"", "ok"),
        ("complete", 200, {"content-length": "9"}, b"ok", "body cut short"),
        ("complete", 200, {"content-length": "9", "content-encoding": "gzip"}, b"ok", "ok"),
        ("complete", 200, {"content-length": "nine"}, b"ok", "bad Content-Length 'nine'"),
        ("complete", 404, {"content-length": "2"}, b"no", "status 404"),
        ("complete", 204, {}, b"", "status 204"),
    ],
)
def test_an_answer_is_ok_only_when_exactly_what_the_script_expects(
    expect: str, status: int, headers: dict[str, str], body: bytes, verdict: str
) -> None:
    email = MAIL if expect == "register" else ""
    assert verdicts.judge(expect, status, headers, body, email) == verdict


def test_an_unknown_expectation_is_refused() -> None:
    with pytest.raises(ValueError, match="expected one of version, users, register, complete"):
        verdicts.judge("page", 200, {}, b"")


@pytest.mark.parametrize(
    ("kind", "message", "status", "verdict"),
    [
        ("HTTPParseError", "Incomplete response.", 200, "body cut short"),
        ("HTTPParseError", "Incomplete response.", 0, "answer cut short"),
        ("HTTPConnectionClosed", "connection closed.", 0, "answer cut short"),
        ("CatchResponseError", "no id", 201, "no id"),
        ("LocustBadStatusCode", "('http://127.0.0.1:1/api/users', 409)", 409, "status 409"),
        ("LocustBadStatusCode", "('http://127.0.0.1:1/version', 503)", 503, "status 503"),
        ("ConnectionRefusedError", "[Errno 111] Connection refused", 0, "connection refused"),
        ("ConnectionResetError", "[Errno 104] Connection reset by peer", 0, "connection reset"),
        ("Timeout", "timed out", 0, "timeout"),
        ("SSLError", "bad handshake", 0, "SSLError: bad handshake"),
    ],
)
def test_a_request_that_raised_fails_with_the_reason_its_error_gives(
    kind: str, message: str, status: int, verdict: str
) -> None:
    assert verdicts.from_error(kind, message, status) == verdict


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text either")


@pytest.mark.parametrize(
    ("context", "name", "ms", "start", "expected"),
    [
        ({"kind": "write", "user": "close"}, "write", 12.345, 100.5, ("write", "close", 100.5)),
        (None, "read", "?", None, ("read", "", None)),  # nothing usable: still a line
    ],
)
def test_a_request_whose_line_cannot_be_made_still_gets_a_failed_line(
    context: object, name: str, ms: object, start: object, expected: tuple[str, str, float | None]
) -> None:
    made = verdicts.fallback_line(KeyError("id"), context, name, ms, start)
    (r,) = load.parse(json.dumps(made) + "\n").requests
    assert (r.kind, r.user) == expected[:2] and not r.ok
    assert r.verdict == "listener error: KeyError: 'id'"
    assert r.t == expected[2] if expected[2] is not None else r.t > 0
    odd = verdicts.fallback_line(_Unprintable(), {}, "read", 1.0, 1.0)
    assert odd["verdict"] == "listener error: _Unprintable"


@pytest.mark.parametrize(
    ("body", "found"),
    [(REGISTERED, 7), (doc({"id": "7"}), None), (b"{", None), (doc([7]), None), (b"", None)],
)
def test_the_id_of_a_registration(body: bytes, found: int | None) -> None:
    assert verdicts.user_id(body) == found


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


def line(r: load.Request, **changes: object) -> str:
    return json.dumps({**r.__dict__, **changes})


def test_parse_sorts_and_counts_a_cut_last_line_as_broken() -> None:
    lines = load.parse(f"{line(req(2.0))}\n{line(req(1.0))}\n" + '{"t": 3')
    assert [r.t for r in lines.requests] == [1.0, 2.0]
    assert (lines.count, lines.broken, lines.cut_tail) == (3, 1, True)


def test_parse_reads_a_whole_last_line_without_its_newline() -> None:
    lines = load.parse(f"{line(req(1.0))}\n{line(req(2.0))}")
    assert (len(lines.requests), lines.count, lines.broken, lines.cut_tail) == (2, 2, 0, False)


@pytest.mark.parametrize(
    "bad",
    [
        "",  # a blank line
        "not json",
        "[1, 2]",
        '{"t": 3',
        line(req(1.0), surprise=1),  # a field the oracle does not know
        json.dumps({k: v for k, v in req(1.0).__dict__.items() if k != "status"}),
        line(req(1.0), status="200"),
        line(req(1.0), status=True),
        line(req(1.0), verdict=None),
        line(req(1.0), id="7"),
    ],
)
def test_parse_counts_every_line_that_is_not_a_request(bad: str) -> None:
    lines = load.parse(f"{line(req(1.0))}\n{bad}\n{line(req(2.0))}\n")
    assert (len(lines.requests), lines.count, lines.broken, lines.cut_tail) == (2, 3, 1, False)


def test_parse_reads_lines_written_before_verdicts() -> None:
    old = {k: v for k, v in req(1.0, 404).__dict__.items() if k not in ("verdict", "path")}
    (r,) = load.parse(json.dumps(old) + "\n").requests
    assert (r.status, r.verdict, r.ok) == (404, "", False)


def test_parse_of_nothing() -> None:
    assert load.parse("") == load.Lines([], 0, 0, False)


def totals(requests: int, failures: int = 0, **more: int) -> load.Totals:
    counts = {"written": requests, "listener_errors": 0, "lost_writes": 0, **more}
    return load.Totals(requests, failures, **counts)


FILE = Path("reports/load/t.jsonl")
TWO = [line(req(1.0)), line(req(2.0, 503), verdict="status 503")]


@pytest.mark.parametrize(
    ("text", "counted", "problems"),
    [
        pytest.param("\n".join(TWO) + "\n", totals(2, 1), [], id="every line, as locust counted"),
        pytest.param(
            "\n".join(TWO) + '\n{"t": 3', totals(3, 1), [], id="one cut last line tolerated"
        ),
        pytest.param(
            f"{TWO[0]}\nnot json\n{TWO[1]}\n",
            totals(3, 1),
            [
                "1 of the 3 lines of reports/load/t.jsonl are not requests: the oracle cannot "
                "judge them (see the file)"
            ],
            id="a broken line",
        ),
        pytest.param(
            "\n".join(TWO) + "\n",
            None,
            [
                "locust wrote no totals (reports/load/t.totals.json): it did not end by itself or "
                "by SIGTERM, so its count of requests cannot be checked against the lines"
            ],
            id="no totals",
        ),
        pytest.param(
            "\n".join(TWO) + "\n",
            totals(3, 1, written=2, lost_writes=1),
            [
                "locust counted 3 requests, reports/load/t.jsonl holds 2 lines (the listener wrote "
                "2, could not write 1)"
            ],
            id="a request without its line",
        ),
        pytest.param(
            "\n".join(TWO) + "\n",
            totals(2, 1, listener_errors=1),
            [
                "1 lines were made by the listener's fallback (verdict 'listener error: ...'): "
                "fix the locustfile"
            ],
            id="a listener error",
        ),
        pytest.param(
            "\n".join(TWO) + "\n",
            totals(2, 2),
            [
                "locust counted 2 failed requests, the lines only 1: the oracle passed answers "
                "locust saw fail"
            ],
            id="a failure locust saw that the line calls ok",
        ),
        pytest.param("\n".join(TWO) + "\n", totals(2, 0), [], id="stricter than locust"),
    ],
)
def test_the_lines_must_add_up_to_what_locust_counted(
    text: str, counted: load.Totals | None, problems: list[str]
) -> None:
    assert load.count_problems(load.parse(text), counted, FILE) == problems


def test_locusts_totals_are_read_or_none(tmp_path: Path) -> None:
    path = tmp_path / "t.totals.json"
    assert load.read_totals(path) is None
    path.write_text('{"requests": 3, "failures": 1, "written": 3, "listener_errors": 0}')
    assert load.read_totals(path) is None  # a count missing
    path.write_text(json.dumps(totals(3, 1).__dict__))
    assert load.read_totals(path) == totals(3, 1)
    assert load.totals_file(tmp_path / "t.jsonl") == path
    path.write_text(json.dumps({**totals(3, 1).__dict__, "stalls": [[100.5, 2.25]]}))
    assert load.read_totals(path) == replace(totals(3, 1), stalls=((100.5, 2.25),))
    path.write_text(json.dumps({**totals(3, 1).__dict__, "stalls": [[100.5]]}))
    assert load.read_totals(path) is None  # a stall without its length


def write(t: float, status: int, uid: int | None, email: str = "") -> load.Request:
    return load.Request(t, 5.0, "write", "close", status, "", "a", email or f"{t}@x.org", uid)


@pytest.mark.parametrize(
    ("requests", "problems"),
    [
        ([req(1.0), write(2.0, 201, 7), write(3.0, 503, None)], []),
        ([req(1.0)], []),  # paths mode: no registration sent
        ([write(1.0, 201, 7), replace(write(2.0, 201, None), verdict="body cut short")], []),
        (
            [write(1.0, 201, 7), write(2.0, 201, None)],
            ["1 registrations counted ok without an id to read back"],
        ),
        (
            [write(1.0, 201, None)],
            [
                "1 registrations counted ok without an id to read back",
                "1 registrations sent and none answered 201 with an id: nothing to read back",
            ],
        ),
        (
            [write(1.0, 409, None), write(2.0, 0, None)],
            ["2 registrations sent and none answered 201 with an id: nothing to read back"],
        ),
    ],
)
def test_every_registration_answered_201_can_be_read_back(
    requests: list[load.Request], problems: list[str]
) -> None:
    assert load.registration_problems(requests) == problems


def test_readback_of_nothing_registered_does_not_pass(tmp_path: Path) -> None:
    traffic = load.Traffic("t", 10, tmp_path / "t.jsonl")
    traffic.requests = [req(1.0), write(2.0, 409, None)]
    assert load.readback(traffic) == [
        "1 registrations sent and none answered 201 with an id: nothing to read back"
    ]


@pytest.mark.parametrize(
    ("sent", "seconds", "problem"),
    [
        (800, 10.0, None),
        (1000, 10.0, None),
        (799, 10.0, "the load reached 79.9 req/s, 79.9% of the 100 asked (at least 80% needed)"),
        (0, 10.0, "the load reached 0.0 req/s, 0.0% of the 100 asked (at least 80% needed)"),
        (0, 0.0, None),
    ],
)
def test_the_load_must_reach_its_rate(sent: int, seconds: float, problem: str | None) -> None:
    found = load.rate_problem(100, sent, seconds)
    assert found is None if problem is None else found is not None and found.startswith(problem)


def test_a_traffic_shows_its_problems_and_rate(tmp_path: Path) -> None:
    traffic = load.Traffic("t", 10, tmp_path / "t.jsonl", started=100.0, ended=102.0)
    assert traffic.problems() == [
        f"the lines of {traffic.file} were never read (the run has not ended)"
    ]
    traffic.lines = load.parse(f"{line(req(100.5))}\nnot json\n")
    traffic.totals = totals(2)
    traffic.requests = traffic.lines.requests
    s = traffic.summary()
    assert (traffic.broken, s["broken"]) == (1, 1)
    assert s["problems"] == traffic.problems() and len(s["problems"]) == 1
    assert s["rate_problem"] == traffic.rate_problem() and "0.5 req/s" in s["rate_problem"]
    assert traffic.rate_problem(min_share=0.05) is None


@pytest.mark.parametrize(
    ("generator", "own", "note"),
    [
        ([], [], ""),
        ([], [(150.0, 40.0)], ""),  # only the test's process: not why the load fell short
        ([(50.0, 5.0)], [], ""),  # before the run
        (
            [(160.3, 41.5), (170.0, 41.5)],
            [],
            "the load generator itself stalled 83.0 s in all, 41.5 s from 60.3 s into the run "
            "(its event loop got no CPU)",
        ),
        (
            [(160.3, 41.5)],
            [(161.0, 30.0)],
            "the load generator itself stalled 41.5 s in all, 41.5 s from 60.3 s into the run "
            "(its event loop got no CPU); the test's own process stalled at the same time: the "
            "whole machine stalled",
        ),
        (
            [(160.3, 1.5)],
            [(170.0, 3.0)],
            "the load generator itself stalled 1.5 s in all, 1.5 s from 60.3 s into the run "
            "(its event loop got no CPU)",
        ),
    ],
)
def test_a_short_load_says_which_process_stalled(
    generator: list[tuple[float, float]], own: list[tuple[float, float]], note: str
) -> None:
    assert load.stall_note(generator, own, start=100.0, end=300.0) == note


def test_a_short_rate_carries_the_generators_stall(tmp_path: Path) -> None:
    traffic = load.Traffic("t", 100, tmp_path / "t.jsonl", started=100.0, ended=200.0)
    traffic.requests = [req(100.0 + i / 100) for i in range(5000)]
    traffic.totals = replace(totals(5000), stalls=((150.0, 40.0),))
    found = traffic.rate_problem()
    assert found is not None and found.startswith("the load reached 50.0 req/s")
    assert found.endswith("40.0 s from 50.0 s into the run (its event loop got no CPU)")
    traffic.requests *= 2
    assert traffic.rate_problem() is None  # the rate reached: no note, whatever stalled


def test_the_heartbeat_sees_its_process_stall() -> None:
    stalls: list[tuple[float, float]] = []
    beat = load._Heartbeat(stalls, beat=0.05)
    beat.start()
    time.sleep(0.2)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(5.0)  # this thread keeps the GIL: the heartbeat's cannot run
    try:
        until = time.monotonic() + 1.3
        while time.monotonic() < until:
            pass
    finally:
        sys.setswitchinterval(interval)
    time.sleep(0.2)
    beat.stop()
    assert len(stalls) == 1 and 1.0 <= stalls[0][1] < 2.0, stalls


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


def test_locust_writes_its_totals_beside_the_lines_and_imports_this_checkout(
    tmp_path: Path,
) -> None:
    env = load.environment({"PYTHONPATH": "/elsewhere"}, tmp_path / "o.jsonl", 300, 1000)
    assert env["CDLAB_LOAD_TOTALS"] == str(tmp_path / "o.totals.json")
    assert env["PYTHONPATH"].split(os.pathsep) == [str(load.ROOT), "/elsewhere"]
    assert (load.ROOT / "lab" / "proof" / "loadgen" / "verdicts.py").is_file()


@pytest.mark.parametrize("path", ["simple/", "/a,b", " /x", ""])
def test_a_path_the_locustfile_cannot_read_is_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(load.LoadError, match="a leading '/', no comma"):
        load.environment({}, tmp_path / "o.jsonl", 300, 1000, ["/", path])


def test_a_request_line_keeps_its_path() -> None:
    (r,) = load.parse(line(req(1.0, 500), path="/packages/") + "\n").requests
    assert (r.path, r.ok) == ("/packages/", False)


@pytest.mark.parametrize(
    ("sent", "since", "steady"),
    [
        ([(1, 200), (2, 0), (3, 200), (4, 200)], 0.5, 3),  # first success after the last failure
        ([(1, 0), (2, 200), (3, 0), (4, 200), (5, 200)], 0.5, 4),  # a late failure moves it on
        ([(1, 0), (2, 200), (3, 200)], 1.5, 2),  # failures before ``since`` do not count
        ([(1, 200), (2, 0)], 0.5, math.inf),  # no success after the last failure: not yet
        ([], 0.5, math.inf),
        ([(1, 200), (2, 200)], 0.5, 1),  # nothing failed: the first success
    ],
)
def test_steady_since_is_the_start_of_the_stretch_of_successes_that_lasts(
    sent: list[tuple[float, int]], since: float, steady: float
) -> None:
    # sent out of order: the answer does not depend on the order lines came in
    requests = [req(t, status) for t, status in reversed(sent)]
    assert load.steady_since(requests, since) == steady


def test_a_registration_answered_from_its_first_copy_is_ok_and_counted(tmp_path: Path) -> None:
    """The proxy sent it twice (Idempotency-Key) and the app replayed the first answer: not a
    failure, but the summary says how many, so a retry is never hidden."""
    write = dataclasses.replace(req(1.0, 201), kind="write", email="e@x.invalid", id=7)
    replayed = dataclasses.replace(write, t=1.1, replayed=1)
    lines = load.parse(f"{line(write)}\n{line(replayed)}\n{line(req(1.2))}\n")
    assert [r.replayed for r in lines.requests] == [0, 1, 0] and lines.broken == 0
    traffic = load.Traffic("t", 10, tmp_path / "t.jsonl")
    traffic.requests = lines.requests
    assert traffic.summary()["replayed"] == 1 and traffic.summary()["failed"] == 0
    # a line written before the field existed reads as not replayed; a bool is not a count
    old = {k: v for k, v in write.__dict__.items() if k != "replayed"}
    (r,) = load.parse(json.dumps(old) + "\n").requests
    assert r.replayed == 0
    assert load.parse(line(write, replayed=True) + "\n").broken == 1
