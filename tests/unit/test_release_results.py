"""What the release ports answer beyond a plain value (``Drained``, ``StepVerdict``, ``Pruned``):
made by the lab's adapters, read by the actions into a step's detail, figures and next step."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from lab.errors import CanaryAborted
from lab.ports.proxy import Runtime
from lab.release import actions, judge, verify
from lab.release.model import Drained, Pruned, StepVerdict
from tests.unit.fake_ports import FakePorts
from tests.unit.release_data import A, B, R, cand, srv


class CountingRuntime(Runtime):
    """The proxy's Runtime API answering ``sessions`` from a list (then its last value)."""

    def __init__(self, answers: list[int | None]) -> None:
        super().__init__("127.0.0.1", timeout=0.1)
        self.answers = answers

    def sessions(self, backend: str, host: str) -> int | None:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.mark.parametrize(
    ("answers", "timeout", "left", "at_least", "below"),
    [
        ([None], 5.0, 0, 0.0, 1.0),  # no slot serves it: nothing to wait for
        ([3, 1, 0], 5.0, 0, 0.1, 2.0),  # two waits of 50 ms, then drained: no wait to the bound
        ([2], 0.2, 2, 0.2, 2.0),  # still open at the bound
    ],
)
def test_wait_drained_says_how_long_and_what_was_left(
    answers: list[int | None], timeout: float, left: int, at_least: float, below: float
) -> None:
    got = CountingRuntime(answers).wait_drained("app", "app-x", timeout=timeout)
    assert isinstance(got, Drained) and got.left == left
    assert at_least <= got.seconds < below


@dataclass
class FakeEtcd:
    data: dict[str, bytes] = field(default_factory=dict)

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


@dataclass
class FakeGraphite:
    samples: dict[str, judge.Sample]
    url: str = "http://graphite"

    def sample(
        self, service: str, release: str, seconds: int, until: float | None = None
    ) -> judge.Sample:
        return self.samples[release]


NO_WAIT = Drained(0.3, 0)
KEPT_A = Pruned((A,), ())
GOOD = judge.Sample(requests=100, errors=0, p95_ms=10.0)
FEW = judge.Sample(requests=3, errors=0, p95_ms=10.0)


@pytest.mark.parametrize(
    ("command", "candidate", "expected"),  # expected: a verdict when the judge decides
    [
        (b"promote", FEW, StepVerdict(judge.Verdict("promote", "promoted by hand"), "promote")),
        (b"abort", GOOD, StepVerdict(judge.Verdict("abort", "aborted by hand"), "abort")),
        (None, GOOD, judge.judge(GOOD, GOOD)),
    ],
)
def test_a_canary_step_says_whether_a_person_decided(
    command: bytes | None, candidate: judge.Sample, expected: StepVerdict
) -> None:
    c = cand(B)
    etcd = FakeEtcd({verify.CANARY_KEY + "app": command} if command else {})
    graphite = FakeGraphite({B: candidate, A: GOOD})
    got = verify.judge_step(etcd, graphite, c, A, 0.01, judge.Thresholds(), settle=0)  # type: ignore[arg-type]
    if isinstance(expected, judge.Verdict):  # judged: on the figures it read, kept
        assert (got.verdict, got.by_hand) == (expected, "")
        assert got.figures["candidate_requests"] == 100 and got.figures["candidate_share"] == 0.5
    else:
        assert got == expected
    assert etcd.data == {}  # a command is read once


def test_a_canary_that_cannot_be_judged_is_aborted_by_the_judge_not_by_hand() -> None:
    graphite = FakeGraphite({B: FEW, A: GOOD})
    got = verify.judge_step(
        FakeEtcd(),  # type: ignore[arg-type]
        graphite,  # type: ignore[arg-type]
        cand(B),
        A,
        0.01,
        judge.Thresholds(max_holds=0),
        settle=0,
    )
    assert got.by_hand == "" and got.verdict.decision == "abort"
    assert got.verdict.reason.startswith("cannot judge: only 3 candidate requests")


@dataclass
class Answering(FakePorts):
    """A fake prod whose proxy, judge and registry answer as told."""

    drained: Drained = NO_WAIT
    judged: list[StepVerdict] = field(default_factory=list)
    retained: Pruned = KEPT_A

    def wait_drained(self, backend: str, host: str) -> Drained:
        with self._call("wait_drained"):
            return self.drained

    def judge_step(
        self, c: object, live: str, interval: float, thresholds: judge.Thresholds
    ) -> StepVerdict:
        with self._call("judge_step"):
            return self.judged.pop(0)

    def prune(self, service: str, made_live: str) -> Pruned:
        with self._call("prune"):
            return self.retained


@pytest.mark.parametrize(
    ("drained", "detail"),
    [
        (Drained(0.25, 0), "drained; kept running for an instant rollback"),
        (Drained(15.0, 2), "2 connection(s) still open after 15.0 s; kept running for an"),
    ],
)
def test_drain_reports_what_was_left_and_how_long(drained: Drained, detail: str) -> None:
    got = actions.Drain("app", A).run(Answering(drained=drained))
    assert got.detail.startswith(detail) and got.figures == {"drain_s": drained.seconds}


@pytest.mark.parametrize(
    ("pruned", "detail", "changed"),
    [
        (Pruned((B, A), ()), f"kept {B}, {A}", False),
        (Pruned((B, A), ("c1", "c2")), f"pruned c1, c2; kept {B}, {A}", True),
    ],
)
def test_retain_reports_what_it_kept_and_pruned(pruned: Pruned, detail: str, changed: bool) -> None:
    got = actions.Retain("app", 2, B).run(Answering(retained=pruned))
    assert (got.detail, got.changed) == (detail, changed)


def canary_step() -> actions.CanaryStep:
    return actions.CanaryStep(cand(B), R(srv(A, 90), srv(B, 10)), A, 10, 0.0, judge.Thresholds())


@pytest.mark.parametrize(
    ("judged", "skip_to"),
    [
        (StepVerdict(judge.Verdict("promote", "fine")), ""),  # the next weight, then the switch
        (StepVerdict(judge.Verdict("promote", "promoted by hand"), "promote"), "switch"),
    ],
)
def test_only_a_promotion_by_hand_skips_the_remaining_weights(
    judged: StepVerdict, skip_to: str
) -> None:
    assert canary_step().run(Answering(judged=[judged])).skip_to == skip_to


def test_an_abort_by_hand_aborts_the_canary_with_its_reason() -> None:
    ports = Answering(judged=[StepVerdict(judge.Verdict("abort", "aborted by hand"), "abort")])
    with pytest.raises(CanaryAborted, match="aborted at 10%: aborted by hand"):
        canary_step().run(ports)
