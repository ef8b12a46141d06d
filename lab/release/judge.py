"""The canary judge: compare the candidate with the live release on error rate and p95 latency,
with a minimum sample size, and decide: promote, hold or abort (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from lab.config import parse_duration


@dataclass(frozen=True)
class Sample:
    """One release's traffic over a judging window (from Graphite)."""

    requests: float
    errors: float  # 5xx answers
    p95_ms: float | None  # mean of the per-second p95 latencies; None without traffic

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Thresholds:
    min_requests: int = 50  # fewer candidate requests than this: no verdict yet (hold)
    max_error_rate: float = 0.01  # abort above this, unless the live release is as bad
    error_rate_margin: float = 0.01  # ... i.e. candidate > live + margin
    max_p95_ratio: float = 1.5  # abort when candidate p95 > live p95 * ratio + slack
    p95_slack_ms: float = 25.0
    max_holds: int = 3  # consecutive holds before giving up (abort: cannot judge)


@dataclass(frozen=True)
class Verdict:
    decision: str  # "promote", "hold" or "abort"
    reason: str


def judge(candidate: Sample, live: Sample, t: Thresholds = Thresholds()) -> Verdict:
    if candidate.requests < t.min_requests:
        return Verdict(
            "hold", f"only {candidate.requests:.0f} candidate requests (need {t.min_requests})"
        )
    rate, live_rate = candidate.error_rate, live.error_rate
    if rate > t.max_error_rate and rate > live_rate + t.error_rate_margin:
        return Verdict(
            "abort", f"error rate {rate:.1%} (live {live_rate:.1%}, limit {t.max_error_rate:.1%})"
        )
    if candidate.p95_ms is not None and live.p95_ms is not None:
        limit = live.p95_ms * t.max_p95_ratio + t.p95_slack_ms
        if candidate.p95_ms > limit:
            return Verdict(
                "abort",
                f"p95 {candidate.p95_ms:.0f} ms > {limit:.0f} ms (live {live.p95_ms:.0f} ms)",
            )
    return Verdict(
        "promote",
        f"{candidate.requests:.0f} requests, error rate {rate:.1%} "
        f"(live {live_rate:.1%}), p95 {candidate.p95_ms or 0:.0f} ms "
        f"(live {live.p95_ms or 0:.0f} ms)",
    )


def parse_steps(text: str) -> tuple[int, ...]:
    """``"10,25,50,100"`` into weights; must rise and end at 100."""
    from lab.errors import ConfigError

    try:
        steps = tuple(int(p) for p in text.split(","))
    except ValueError as exc:
        raise ConfigError("--steps", text, "percentages like 10,25,50,100") from exc
    if (
        not steps
        or steps[-1] != 100
        or any(not 0 < s <= 100 for s in steps)
        or list(steps) != sorted(set(steps))
    ):
        raise ConfigError("--steps", text, "rising percentages ending at 100, like 10,25,50,100")
    return steps


def parse_interval(text: str, option: str = "--interval", minimum: float = 1) -> float:
    """``"30s"``, ``"2m"`` or ``"45"`` into seconds, from ``minimum`` to an hour."""
    return parse_duration(text, option, minimum, 3600)
