from __future__ import annotations

import pytest

from lab.errors import ConfigError
from lab.release.judge import Sample, Thresholds, judge, parse_interval, parse_steps

LIVE = Sample(1000, 2, 40.0)
T = Thresholds(min_requests=50)


@pytest.mark.parametrize(
    ("candidate", "decision", "why"),
    [
        (Sample(10, 0, 30.0), "hold", "only 10 candidate requests (need 50)"),
        (Sample(200, 0, 42.0), "promote", "200 requests, error rate 0.0%"),
        (Sample(200, 1, 42.0), "promote", "error rate 0.5%"),  # under the 1% limit
        (Sample(200, 20, 42.0), "abort", "error rate 10.0% (live 0.2%, limit 1.0%)"),
        (Sample(200, 0, 200.0), "abort", "p95 200 ms > 85 ms (live 40 ms)"),
        (Sample(200, 0, None), "promote", ""),
    ],
)
def test_judge(candidate: Sample, decision: str, why: str) -> None:
    verdict = judge(candidate, LIVE, T)
    assert verdict.decision == decision
    assert why in verdict.reason


def test_a_candidate_as_bad_as_live_is_not_blamed() -> None:
    bad_live = Sample(1000, 50, 40.0)  # 5% errors already
    assert judge(Sample(200, 10, 40.0), bad_live, T).decision == "promote"


def test_error_rate_of_no_traffic_is_zero() -> None:
    assert Sample(0, 0, None).error_rate == 0.0


@pytest.mark.parametrize(("text", "steps"), [("10,25,50,100", (10, 25, 50, 100)), ("100", (100,))])
def test_parse_steps(text: str, steps: tuple[int, ...]) -> None:
    assert parse_steps(text) == steps


@pytest.mark.parametrize("text", ["10,50", "50,25,100", "0,100", "10,x,100", "", "10,10,100"])
def test_bad_steps_say_the_expected_form(text: str) -> None:
    with pytest.raises(ConfigError, match="--steps"):
        parse_steps(text)


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30.0), ("2m", 120.0), ("45", 45.0)])
def test_parse_interval(text: str, seconds: float) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "x", "0s", "2h", "-5s"])
def test_bad_intervals_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="--interval"):
        parse_interval(text)
