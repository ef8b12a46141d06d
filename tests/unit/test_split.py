"""Split accuracy (lab.proof.split): the binomial interval, and the shares read from a record's
canary steps and from the load oracle."""

from __future__ import annotations

import pytest

from lab.proof import split


@pytest.mark.parametrize(
    ("weight", "candidate", "total", "agrees"),
    [
        (25, 250, 1000, True),
        (25, 216, 1000, True),  # 25 % +- 3.29 sd (13.7) + 1: 204..296
        (25, 203, 1000, False),
        (25, 200, 1000, False),
        (25, 300, 1000, False),
        (50, 6, 10, True),
        (10, 0, 10, True),  # few requests: a wide interval
        (25, 0, 400, False),  # weight written, never applied
        (100, 50, 50, True),
        (100, 49, 50, True),  # one request of slack
        (100, 45, 50, False),
        (25, 0, 0, False),  # nothing counted is no proof
    ],
)
def test_the_99_9_percent_interval(weight: int, candidate: int, total: int, agrees: bool) -> None:
    share = split.Share("canary-25", "edge", weight, candidate, total)
    assert share.agrees is agrees
    assert ("interval" in str(share)) and f"{weight} %" in str(share)


STAGES = [
    {"key": "build", "figures": {}},
    {
        "key": "canary-25",
        "figures": {
            "weight_pct": 25.0,
            "candidate_requests": 251.0,
            "live_requests": 749.0,
            "window_from": 100.0,
            "window_until": 104.0,
        },
    },
    {"key": "canary-50", "figures": {"weight_pct": 50.0}},  # a hand command: no reading
]


def test_shares_come_from_the_edge_and_the_load_in_the_steps_window() -> None:
    requests = [(100.0 + i / 100, "c" if i % 4 == 0 else "l") for i in range(400)]
    requests += [(99.0, "c")] * 50 + [(105.0, "c")] * 50 + [(101.0, "other")] * 9
    got = split.shares(STAGES, requests, "c", "l")
    assert [(s.step, s.counted_by, s.candidate, s.total) for s in got] == [
        ("canary-25", "edge", 251, 1000),
        ("canary-25", "load", 100, 400),
    ]
    assert split.problems(got) == []


def test_a_weight_not_applied_is_caught() -> None:
    stage = {**STAGES[1], "figures": {**STAGES[1]["figures"], "candidate_requests": 40.0}}
    requests = [(100.0 + i / 100, "c" if i % 20 == 0 else "l") for i in range(400)]
    (edge, by_load) = split.shares([stage], requests, "c", "l")
    assert not edge.agrees and not by_load.agrees
    assert "served 20 of 400 (5.0%) for a weight of 25 %" in str(by_load)
