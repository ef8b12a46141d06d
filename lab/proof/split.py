"""Split accuracy: did each release of a canary step get the share of requests its weight says,
counted at the edge (the step's record) and by the load oracle (pure)?

A step's record keeps its configured weight and what the edge counted in its window
(``lab.release.verify.step_figures``). With ``n`` requests in the window and a configured share
``p``, the candidate's count ``k`` must lie within the 99.9 % binomial interval around ``n * p``
(normal approximation, one request of slack for the rounding of a weighted round robin). A weight
written to the route store but not applied by the proxy lands outside it. 99.9 %, not 99 %: a
run of the suite makes some twenty of these checks (two counters per canary step), and the suite
must pass run after run; at 99 % one of them missed by chance every few runs (43 of 119 for a
weight of 25 %, 2.8 standard deviations).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Z = 3.2905  # two-sided 99.9 %


@dataclass(frozen=True)
class Share:
    step: str
    counted_by: str  # "edge" or "load"
    weight_pct: float
    candidate: int
    total: int

    @property
    def observed(self) -> float:
        return self.candidate / self.total if self.total else 0.0

    def interval(self) -> tuple[float, float]:
        """The candidate's count must lie in this range (inclusive)."""
        n, p = self.total, self.weight_pct / 100
        half = Z * math.sqrt(n * p * (1 - p)) + 1
        return max(0.0, n * p - half), min(float(n), n * p + half)

    @property
    def agrees(self) -> bool:
        low, high = self.interval()
        return self.total > 0 and low <= self.candidate <= high

    def __str__(self) -> str:
        low, high = self.interval()
        return (
            f"{self.step}, counted by {self.counted_by}: the candidate served {self.candidate} "
            f"of {self.total} ({self.observed:.1%}) for a weight of {self.weight_pct:g} %; "
            f"the 99.9 % interval is {low:.0f}..{high:.0f}"
        )


def shares(
    stages: Iterable[Mapping[str, Any]],
    requests: Sequence[tuple[float, str]] = (),
    candidate: str = "",
    live: str = "",
) -> list[Share]:
    """Every canary step's shares: at the edge from its figures, and from ``requests`` (the
    load oracle's (start time, X-Release) pairs) in the step's window, when given."""
    out = []
    for stage in stages:
        f = stage.get("figures") or {}
        if not str(stage.get("key", "")).startswith("canary-") or "candidate_requests" not in f:
            continue  # not a canary step, or decided by hand before the judge read anything
        weight, key = float(f["weight_pct"]), str(stage["key"])
        cand, total = (
            f.get("candidate_requests", 0),
            f.get("candidate_requests", 0) + f.get("live_requests", 0),
        )
        out.append(Share(key, "edge", weight, round(cand), round(total)))
        if requests and candidate and live:
            begin, end = f.get("window_from", 0), f.get("window_until", 0)
            seen = [r for t, r in requests if begin <= t < end and r in (candidate, live)]
            out.append(Share(key, "load", weight, seen.count(candidate), len(seen)))
    return out


def problems(found: Iterable[Share]) -> list[str]:
    """What disagrees with its configured weight (empty: the split held)."""
    return [str(s) for s in found if not s.agrees]
