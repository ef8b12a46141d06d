"""``apply`` against a fake prod, with a failure injected at every port call of every plan.

Before the commit point any exception or ``Stop`` ends the run and its undo puts prod back as
it was (routes, containers, frontends); after it (retire, retain) a failure is a warning and the
release stays live."""

from __future__ import annotations

import dataclasses
import functools
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pytest
import requests

from lab.errors import CanaryAborted, EngineError, ReleaseError, RunStopped, Stop
from lab.release import apply, plan, routes, signals
from lab.release.model import Options, Plan, Step
from tests.unit.fake_ports import FakePorts, Fault, Tracking
from tests.unit.release_data import (
    HOOKED,
    LIVE_A,
    LIVE_A_STALE_B,
    LIVE_A_WARM_D,
    LIVE_B_WARM_A,
    MATCH,
    MATCHED,
    MIGRATING,
    NOTHING,
    A,
    B,
    C,
    D,
    R,
    cand,
    facts,
    srv,
)

HOOKED_TESTED = dataclasses.replace(HOOKED, test_command="python3 -m app.selftest")
CANARY = Options(strategy="canary", steps=(10, 25, 50, 100))


def prod(
    current: routes.Routes, running: set[str], stopped: Iterable[str] = (), frontend: bool = True
) -> FakePorts:
    """A fake prod with ``current`` routes, containers of ``running`` (and ``stopped``) releases
    and the service's frontend (or none yet)."""
    return FakePorts(
        containers={**{r: False for r in stopped}, **{r: True for r in running}},
        routes={"app": current},
        frontends={"app": 8001} if frontend else {},
    )


@dataclass(frozen=True)
class Scenario:
    id: str
    plan: Plan
    start: FakePorts
    end: routes.Routes  # the routes after a clean run
    leftovers: frozenset[str] = field(default_factory=frozenset)  # the clear step removes them

    def run(
        self, *faults: Fault, verdicts: list[tuple[str, str]] | None = None, stop_at: str = ""
    ) -> Ran:
        ports = self.start.copy()
        ports.faults = list(faults)
        ports.verdicts = list(verdicts or [])
        progress = Tracking(out=None, ports=ports, stop_at=stop_at)
        return Ran(apply.apply(self.plan, ports, progress), ports, progress)


@dataclass(frozen=True)
class Ran:
    outcome: apply.Outcome
    ports: FakePorts
    progress: Tracking


SCENARIOS = [
    Scenario(
        "deploy-first",
        plan.deploy(
            dataclasses.replace(facts(NOTHING), frontend_current=False), cand(B), Options()
        ),
        prod(NOTHING, set(), frontend=False),
        R(srv(B, 100)),
    ),
    Scenario(
        "deploy-bluegreen",
        plan.deploy(facts(LIVE_A_WARM_D), cand(B), Options()),
        prod(LIVE_A_WARM_D, {A, D}),
        R(srv(B, 100), srv(A, 0, drain=True)),
    ),
    Scenario(
        "deploy-canary",
        plan.deploy(facts(LIVE_A), cand(B), CANARY),
        prod(LIVE_A, {A}),
        R(srv(B, 100), srv(A, 0, drain=True)),
    ),
    Scenario(
        "deploy-hooks-tests",
        plan.deploy(facts(LIVE_A), cand(B, HOOKED_TESTED), Options()),
        prod(LIVE_A, {A}),
        R(srv(B, 100), srv(A, 0, drain=True)),
    ),
    Scenario(
        "deploy-migrate",  # the schema moves before the start: a failure after it is no undo
        plan.deploy(
            dataclasses.replace(facts(LIVE_A), live=cand(A)), cand(B, MIGRATING), Options()
        ),
        dataclasses.replace(prod(LIVE_A, {A}), heads={B: "0002"}),
        R(srv(B, 100), srv(A, 0, drain=True)),
    ),
    Scenario(
        "deploy-free-slot-clear",
        plan.deploy(facts(LIVE_A_STALE_B, running={A}, present={A, C}), cand(B), Options()),
        prod(LIVE_A_STALE_B, {A}, stopped={C}),
        R(srv(B, 100), srv(A, 0, drain=True)),
        frozenset({C}),
    ),
    Scenario(
        "deploy-live-again",  # the live release's containers are gone: started again
        plan.deploy(facts(LIVE_A, running=set()), cand(A), Options()),
        prod(LIVE_A, set()),
        LIVE_A,
    ),
    Scenario(
        "deploy-match",
        plan.deploy(facts(LIVE_A), cand(B), Options(match=MATCH)),
        prod(LIVE_A, {A}),
        MATCHED,
    ),
    Scenario(
        "rollback-warm",
        plan.rollback(facts(LIVE_B_WARM_A), cand(A)),
        prod(LIVE_B_WARM_A, {A, B}),
        R(srv(A, 100), srv(B, 0, drain=True)),
    ),
    Scenario(
        "rollback-cold",
        plan.rollback(facts(LIVE_B_WARM_A, running={B}), cand(A)),
        prod(LIVE_B_WARM_A, {B}),
        R(srv(A, 100), srv(B, 0, drain=True)),
    ),
    Scenario(
        "promote",
        plan.promote(facts(MATCHED), cand(B, HOOKED), Options()),
        prod(MATCHED, {A, B}),
        R(srv(B, 100), srv(A, 0, drain=True)),
    ),
    Scenario("abort", plan.abort(facts(MATCHED), "app"), prod(MATCHED, {A, B}), LIVE_A),
    Scenario(
        "prepare",
        plan.prepare(facts(LIVE_A), cand(B)),
        prod(LIVE_A, {A}),
        R(srv(A, 100), srv(B, 0)),
    ),
]
BY_ID = {s.id: s for s in SCENARIOS}


@pytest.mark.parametrize("s", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_a_clean_run_succeeds_and_leaves_the_release_routed(s: Scenario) -> None:
    ran = s.run()
    assert ran.outcome == apply.Outcome("succeeded")
    assert ran.ports.routes == {"app": s.end}
    assert ran.ports.frontends == {"app": 8001}
    assert [st.key for st in ran.progress.stages] == list(s.plan.keys)
    # every release in the pool runs; no other one is left on prod
    pool = {server.release for server in s.end.servers}
    assert all(ran.ports.containers.get(r) for r in pool)
    if s.plan.keys[-1] in ("retire", "retain", "remove"):
        assert set(ran.ports.containers) == pool


# Every port call of a clean run, each failing in turn

KINDS: dict[str, Callable[[], BaseException]] = {
    "lab-error": lambda: EngineError("prod", "https://prod:2376", "read timed out"),
    "runtime-error": lambda: RuntimeError("boom"),
    "connection-error": lambda: requests.ConnectionError("connection refused"),
    "sigint": lambda: Stop("SIGINT"),
}
MODES = {"before": False, "after": True}  # the call raises before, or after, its effect


@functools.cache
def clean_calls(sid: str) -> tuple[tuple[str, str], ...]:
    """(step key, call name) of every port call of a clean run of scenario ``sid``."""
    return tuple(BY_ID[sid].run().ports.calls)


INJECTIONS = [
    pytest.param(s.id, i, kind, mode, id=f"{s.id}-{i}-{name}-{kind}-{mode}")
    for s in SCENARIOS
    for i, (_, name) in enumerate(clean_calls(s.id))
    for kind in KINDS
    for mode in MODES
    if mode == "before" or kind in ("lab-error", "sigint")
]


def undone_before(p: Plan, key: str) -> tuple[str, ...]:
    """The steps a failure in ``key`` undoes: it and those before it with an undo, reversed."""
    steps = p.steps[: p.keys.index(key) + 1]
    return tuple(s.key for s in reversed(steps) if s.undo and not s.after_commit)


def names_the_step(message: str, step: Step) -> bool:
    return step.title in message or f"'{step.key}'" in message


@pytest.mark.parametrize(("sid", "index", "kind", "mode"), INJECTIONS)
def test_a_failure_at_any_call_is_undone_or_only_warns_after_the_commit(
    sid: str, index: int, kind: str, mode: str
) -> None:
    s = BY_ID[sid]
    key, _ = clean_calls(sid)[index]
    step = next(st for st in s.plan.steps if st.key == key)
    exc = KINDS[kind]()
    ran = s.run(Fault(index, exc, after=MODES[mode]))
    out, ports = ran.outcome, ran.ports
    if step.after_commit:
        assert out.result == "succeeded"
        assert out.error is None and out.undone == ()
        assert len(out.warnings) == 1 and out.warnings[0].startswith(f"{key}: ")
        assert ports.routes == {"app": s.end}  # live, as a clean run leaves it
        assert all(ports.containers.get(server.release) for server in s.end.servers)
        return
    assert out.result == ("interrupted" if kind == "sigint" else "failed")
    assert out.stage == key
    assert out.undone == undone_before(s.plan, key)
    assert out.undo_errors == ()
    assert out.error is not None and names_the_step(str(out.error), step)
    assert f"{', '.join(out.undone) or 'nothing'}" in str(out.error)
    # prod as it was: routes, frontends, containers (a leftover the clear step removed stays gone)
    assert ports.routes == s.start.routes
    assert ports.frontends == s.start.frontends
    assert {r: up for r, up in ports.containers.items() if r not in s.leftovers} == {
        r: up for r, up in s.start.containers.items() if r not in s.leftovers
    }
    # the stage it stopped at, then the undos, reversed
    statuses = {st.key: st.status for st in ran.progress.stages}
    assert statuses[key] == ("interrupted" if kind == "sigint" else "failed")
    undos = [st.key for st in ran.progress.stages if st.key.startswith("undo-")]
    assert undos == [f"undo-{k}" for k in out.undone]
    if kind == "sigint":
        assert isinstance(out.error, RunStopped) and out.error.signal == "SIGINT"
        assert (out.error.service, out.error.release, out.error.stage) == (
            "app",
            s.plan.release,
            key,
        )
    elif kind == "lab-error":
        assert out.error is exc  # a LabError as it is, with where it stopped and the undo
    else:
        assert isinstance(out.error, ReleaseError) and out.error.__cause__ is exc
        assert out.error.stage == key
        assert f"{type(exc).__name__}: {exc}" in str(out.error)


@pytest.mark.parametrize("sid", BY_ID)
def test_every_step_makes_a_call_a_failure_can_be_injected_at(sid: str) -> None:
    # a guard on the matrix above: a step without a port call would never be failed there
    assert {key for key, _ in clean_calls(sid)} == set(BY_ID[sid].plan.keys)


# Undo, skip and judge: named cases


def index_of(sid: str, name: str) -> int:
    """The index of the first call ``name`` in a clean run."""
    return next(i for i, (_, n) in enumerate(clean_calls(sid)) if n == name)


@pytest.mark.parametrize(
    ("failing_undo", "undone", "undo_errors"),
    [
        # the switch's undo: its route write fails, the stage and start undos still run
        (1, ("stage", "start"), ("switch",)),
        # the switch's undo: its check that the live release answers fails
        (2, ("stage", "start"), ("switch",)),
        # the switch's undo: the wait for the candidate's requests in flight fails
        (3, ("stage", "start"), ("switch",)),
        # the stage's undo
        (4, ("switch", "start"), ("stage",)),
        # the start's undo (the candidate's removal)
        (5, ("switch", "stage"), ("start",)),
    ],
)
def test_a_failing_undo_is_reported_and_the_other_undos_still_run(
    failing_undo: int, undone: tuple[str, ...], undo_errors: tuple[str, ...]
) -> None:
    s = BY_ID["deploy-bluegreen"]
    bake = index_of(s.id, "bake")
    # after the bake fails: switch undo (write_routes, verify), stage undo, start undo
    ran = s.run(
        Fault(bake, RuntimeError("unhealthy")),
        Fault(bake + failing_undo, EngineError("prod", "https://prod:2376", "gone")),
    )
    out = ran.outcome
    assert (out.result, out.stage, out.undone) == ("failed", "bake", undone)
    assert tuple(e.split(":")[0] for e in out.undo_errors) == undo_errors
    assert "gone" in out.undo_errors[0]
    assert "Some undo failed" in str(out.error) and "invoke releases" in str(out.error)


def test_a_canary_promoted_by_hand_skips_the_remaining_steps() -> None:
    s = BY_ID["deploy-canary"]
    ran = s.run(verdicts=[("promote", "promote")])
    out = ran.outcome
    assert out.result == "succeeded"
    assert out.skipped == ("canary-25", "canary-50")
    assert ran.ports.names.count("judge_step") == 1
    assert ran.ports.routes == {"app": s.end}
    statuses = [(st.key, st.status) for st in ran.progress.stages]
    assert ("canary-25", "skipped") in statuses and ("canary-50", "skipped") in statuses


def test_a_failure_after_a_skip_undoes_only_the_steps_that_ran() -> None:
    s = BY_ID["deploy-canary"]
    ran = s.run(
        Fault("bake", RuntimeError("bad")), verdicts=[("promote", ""), ("promote", "promote")]
    )
    assert ran.outcome.undone == ("switch", "canary-25", "canary-10", "stage", "start")
    assert ran.ports.snapshot() == s.start.snapshot()


@pytest.mark.parametrize("at", [1, 2, 3])
def test_a_canary_aborted_by_the_judge_undoes_to_the_original_routes(at: int) -> None:
    s = BY_ID["deploy-canary"]
    verdicts = [("promote", "")] * (at - 1) + [("abort", "")]
    ran = s.run(verdicts=verdicts)
    out, weight = ran.outcome, (10, 25, 50)[at - 1]
    assert (out.result, out.stage) == ("failed", f"canary-{weight}")
    assert isinstance(out.error, CanaryAborted) and out.error.weight == weight
    assert out.error.stage == f"canary-{weight}"
    assert out.undone == (*(f"canary-{w}" for w in (50, 25, 10)[3 - at :]), "stage", "start")
    assert ran.ports.snapshot() == s.start.snapshot()
    assert f"aborted at {weight}%: judged abort" in out.reason


def test_a_lab_error_names_the_step_and_keeps_its_own_message() -> None:
    s = BY_ID["deploy-bluegreen"]
    exc = EngineError("prod", "https://prod:2376", "read timed out")
    out = s.run(Fault("wait_healthy", exc)).outcome
    text = str(out.error)
    assert text.startswith("the Docker engine of 'prod'")
    assert f"wait until app-{B} is healthy" in text
    assert f"Undone: start. Every request is back on {A}.\nIts output: invoke logs " in text
    assert text.endswith(f"--service app --release {B} --since 1h")


def test_a_release_error_gets_the_stage_service_and_release() -> None:
    s = BY_ID["deploy-bluegreen"]
    out = s.run(Fault("address", ReleaseError("no container"))).outcome
    assert isinstance(out.error, ReleaseError)
    assert (out.error.stage, out.error.service, out.error.release) == ("proxy-up", "app", B)


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM", "a lost lock lease"])
def test_a_stop_says_which_signal_and_where(name: str) -> None:
    s = BY_ID["deploy-bluegreen"]
    out = s.run(Fault("verify", Stop(name))).outcome
    assert out.result == "interrupted"
    assert str(out.error) == f"interrupted by {name} during 'switch'; undone: switch, stage, start."


@pytest.mark.parametrize("call", ["retire", "prune"])
def test_a_stop_after_the_commit_point_leaves_the_release_live(call: str) -> None:
    s = BY_ID["deploy-bluegreen"]
    ran = s.run(Fault(call, Stop("SIGINT")))
    out = ran.outcome
    assert (out.result, out.undone) == ("succeeded", ())
    assert out.warnings and "SIGINT" in out.warnings[0]
    assert ran.ports.routes == {"app": s.end}


def test_after_a_failed_retire_retain_still_runs() -> None:
    s = BY_ID["deploy-bluegreen"]
    ran = s.run(Fault("retire", RuntimeError("engine busy")))
    assert ran.outcome.warnings == ("retire: engine busy",)
    assert ran.ports.names[-1] == "prune"


def test_the_free_slot_waits_for_the_old_address_to_leave_the_pool() -> None:
    ran = BY_ID["deploy-free-slot-clear"].run()
    i = ran.ports.names.index("wait_released")
    assert ran.ports.calls[i - 1 : i + 2] == [
        ("free-slot", "write_routes"),
        ("free-slot", "wait_released"),
        ("free-slot", "sleep"),
    ]
    assert ran.ports.slept == [1.1]
    assert C not in ran.ports.containers  # the leftover is cleared
    assert D not in ran.ports.containers


# Signals between steps, and real ones


def check_stopped_or_warned(s: Scenario, ran: Ran, key: str, signal_name: str) -> None:
    __tracebackhide__ = True
    step = next(st for st in s.plan.steps if st.key == key)
    out = ran.outcome
    if step.after_commit:
        assert (out.result, out.undone) == ("succeeded", ())
        assert out.warnings == (f"{key}: interrupted by {signal_name}; the release is live",)
        assert ran.ports.routes == {"app": s.end}
        return
    assert (out.result, out.stage) == ("interrupted", key)
    assert out.undone == undone_before(s.plan, key)
    assert isinstance(out.error, RunStopped) and out.error.signal == signal_name
    assert ran.ports.routes == s.start.routes
    assert ran.ports.frontends == s.start.frontends
    assert {r: up for r, up in ran.ports.containers.items() if r not in s.leftovers} == {
        r: up for r, up in s.start.containers.items() if r not in s.leftovers
    }


@pytest.mark.parametrize(
    ("sid", "key"),
    [pytest.param(s.id, k, id=f"{s.id}-{k}") for s in SCENARIOS for k in s.plan.keys],
)
def test_a_signal_as_a_step_begins(sid: str, key: str) -> None:
    s = BY_ID[sid]
    check_stopped_or_warned(s, s.run(stop_at=key), key, "SIGTERM")


@pytest.mark.parametrize(
    ("sid", "call", "sig", "name"),
    [
        ("deploy-bluegreen", "start", signal.SIGTERM, "SIGTERM"),
        ("deploy-canary", "judge_step", signal.SIGINT, "SIGINT"),
        ("rollback-warm", "verify", signals.LEASE_SIGNAL, "a lost lock lease"),
        ("deploy-bluegreen", "prune", signal.SIGINT, "SIGINT"),
    ],
)
def test_a_real_signal_inside_a_step(sid: str, call: str, sig: signal.Signals, name: str) -> None:
    s = BY_ID[sid]
    handlers = {n: signal.getsignal(n) for n in signals.NAMES}
    ran = s.run(Fault(call, sig))
    key = next(k for k, n in clean_calls(sid) if n == call)
    check_stopped_or_warned(s, ran, key, name)
    assert {n: signal.getsignal(n) for n in signals.NAMES} == handlers


def test_a_signal_during_the_undo_is_noted_and_the_undo_goes_on() -> None:
    s = BY_ID["deploy-bluegreen"]
    bake = index_of(s.id, "bake")
    ran = s.run(Fault(bake, RuntimeError("unhealthy")), Fault(bake + 1, signal.SIGINT))
    assert (ran.outcome.result, ran.outcome.undone) == ("failed", ("switch", "stage", "start"))
    assert ran.ports.snapshot() == s.start.snapshot()
    assert any("SIGINT received: undoing what was done first" in line for line in ran.progress.said)


def test_a_failed_deploy_of_the_warm_release_keeps_it_warm() -> None:
    """Deploying the warm previous release again pools it as it is (never restarted): a
    failure leaves it running, warm, and the routes as they were."""
    s = Scenario(
        "redeploy-warm",
        plan.deploy(facts(LIVE_B_WARM_A), cand(A), Options()),
        prod(LIVE_B_WARM_A, {A, B}),
        R(srv(A, 100), srv(B, 0, drain=True)),
    )
    assert "start" not in s.plan.keys and "healthy" not in s.plan.keys
    ran = s.run(Fault("verify", RuntimeError("the proxy did not answer")))
    assert ran.outcome.result == "failed"
    assert ran.ports.snapshot() == s.start.snapshot()
