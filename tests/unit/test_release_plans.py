"""The release planners (lab/release/plan.py) as tables: facts in, named steps with undos out."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from lab.release import actions, plan, routes, schema
from lab.release.model import Action, Options, Plan, Step
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
    TESTED,
    A,
    B,
    C,
    D,
    R,
    cand,
    facts,
    srv,
)

CANARY = Options(strategy="canary", steps=(10, 25, 50, 100), interval=5.0)
START = ("start", "healthy", "stage", "proxy-up")
LIVE_AFTER = ("switch", "drain", "bake", "retire", "retain")
COMMIT = ("retire", "retain")


@dataclass(frozen=True)
class Case:
    id: str
    plan: Plan
    keys: tuple[str, ...]
    undo: tuple[str, ...]  # keys of the steps that have an undo, in order
    after_commit: tuple[str, ...] = COMMIT


CASES = [
    Case(
        "deploy: blue/green, nothing live",
        plan.deploy(facts(NOTHING), cand(B), Options()),
        ("pull", *START, "switch", *COMMIT),
        ("start", "stage", "switch"),
    ),
    Case(
        "deploy: blue/green, A live",
        plan.deploy(facts(LIVE_A), cand(B), Options()),
        ("pull", *START, *LIVE_AFTER),
        ("start", "stage", "switch"),
    ),
    Case(
        "deploy: blue/green, A live and D warm",
        plan.deploy(facts(LIVE_A_WARM_D), cand(B), Options()),
        ("pull", *START, *LIVE_AFTER),
        ("start", "stage", "switch"),
    ),
    Case(
        "deploy: canary 10,25,50,100, A live",
        plan.deploy(facts(LIVE_A), cand(B), CANARY),
        ("pull", *START, "canary-10", "canary-25", "canary-50", *LIVE_AFTER),
        ("start", "stage", "canary-10", "canary-25", "canary-50", "switch"),
    ),
    Case(
        "deploy: canary, nothing live (nothing to compare with: no canary steps)",
        plan.deploy(facts(NOTHING), cand(B), CANARY),
        ("pull", *START, "switch", *COMMIT),
        ("start", "stage", "switch"),
    ),
    Case(
        "deploy: matched traffic (A/B) ends at the match step",
        plan.deploy(facts(LIVE_A), cand(B), Options(match=MATCH)),
        ("pull", *START, "match"),
        ("start", "stage", "match"),
        (),
    ),
    Case(
        "deploy: pre- and post-deploy hooks",
        plan.deploy(facts(LIVE_A), cand(B, HOOKED), Options()),
        ("pull", "pre-hook", *START, "switch", "drain", "bake", "post-hook", *COMMIT),
        ("start", "stage", "switch"),
    ),
    Case(
        "deploy: integration tests after the stage",
        plan.deploy(facts(LIVE_A), cand(B, TESTED), Options()),
        ("pull", "start", "healthy", "stage", "tests", "proxy-up", *LIVE_AFTER),
        ("start", "stage", "switch"),
    ),
    Case(
        "deploy: the candidate in the pool, its containers gone",
        plan.deploy(facts(LIVE_A_STALE_B, running={A}), cand(B), Options()),
        ("pull", "free-slot", *START, *LIVE_AFTER),
        ("free-slot", "start", "stage", "switch"),
    ),
    Case(
        "deploy: the live release again, its containers gone",
        plan.deploy(facts(LIVE_A, running=set()), cand(A), Options()),
        ("pull", "free-slot", *START, "switch", *COMMIT),
        ("free-slot", "start", "stage", "switch"),
    ),
    Case(
        "deploy: leftovers out of the pool are cleared first",
        plan.deploy(facts(LIVE_A, present={A, C}), cand(B), Options()),
        ("pull", "clear", *START, *LIVE_AFTER),
        ("start", "stage", "switch"),
    ),
    Case(
        "deploy: bake 0, no bake step",
        plan.deploy(facts(LIVE_A), cand(B), Options(bake=0)),
        ("pull", *START, "switch", "drain", *COMMIT),
        ("start", "stage", "switch"),
    ),
    Case(
        "deploy: retain False, no retain step",
        plan.deploy(facts(LIVE_A), cand(B), Options(retain=False)),
        ("pull", *START, "switch", "drain", "bake", "retire"),
        ("start", "stage", "switch"),
        ("retire",),
    ),
    Case(
        "rollback: warm target",
        plan.rollback(facts(LIVE_B_WARM_A), cand(A, HOOKED)),
        ("switch", "drain", "retire"),
        ("switch",),
        ("retire",),
    ),
    Case(
        "rollback: cold target, out of the pool",
        plan.rollback(facts(R(srv(B, 100))), cand(A)),
        ("pull", *START, "switch", "drain", "retire"),
        ("start", "stage", "switch"),
        ("retire",),
    ),
    Case(
        "rollback: cold target, in the pool but its containers gone",
        plan.rollback(facts(LIVE_B_WARM_A, running={B}), cand(A)),
        ("pull", "free-slot", *START, "switch", "drain", "retire"),
        ("free-slot", "start", "stage", "switch"),
        ("retire",),
    ),
    Case(
        "rollback: cold target of a service with tests (no tests, hooks or bake: it served)",
        plan.rollback(facts(R(srv(B, 100))), cand(A, TESTED)),
        ("pull", *START, "switch", "drain", "retire"),
        ("start", "stage", "switch"),
        ("retire",),
    ),
    Case(
        "deploy: a service with [migrate], A live (scratch check, then the migration)",
        plan.deploy(
            dataclasses.replace(facts(LIVE_A), live=cand(A)), cand(B, MIGRATING), Options()
        ),
        ("pull", "schema-check", "migrate", *START, *LIVE_AFTER),
        ("start", "stage", "switch"),
    ),
    Case(
        "deploy: a service with [migrate], matched traffic only (no migration for a trial)",
        plan.deploy(facts(LIVE_A), cand(B, MIGRATING), Options(match=MATCH)),
        ("pull", *START, "match"),
        ("start", "stage", "match"),
        (),
    ),
    Case(
        "rollback: the records know the schema (a gate first, nothing to undo)",
        plan.rollback(
            facts(LIVE_B_WARM_A), cand(A), schema.Known("0002", {A: "0002"}, frozenset())
        ),
        ("schema", "switch", "drain", "retire"),
        ("switch",),
        ("retire",),
    ),
    Case(
        "promote",
        plan.promote(facts(MATCHED), cand(B), Options()),
        LIVE_AFTER,
        ("switch",),
    ),
    Case(
        "promote: with hooks (post-deploy only: pre-deploy ran at the match)",
        plan.promote(facts(MATCHED), cand(B, HOOKED), Options(bake=0)),
        ("switch", "drain", "post-hook", *COMMIT),
        ("switch",),
    ),
    Case(
        "abort",
        plan.abort(facts(MATCHED), "app"),
        ("unmatch", "remove"),
        ("unmatch",),
        ("remove",),
    ),
    Case(
        "prepare",
        plan.prepare(facts(LIVE_A), cand(B)),
        ("pull", *START),
        ("start", "stage"),
        (),
    ),
    Case(
        "prepare: with tests",
        plan.prepare(facts(LIVE_A), cand(B, TESTED)),
        ("pull", "start", "healthy", "stage", "tests", "proxy-up"),
        ("start", "stage"),
        (),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan_steps_undos_and_commit_point(case: Case) -> None:
    p = case.plan
    assert p.keys == case.keys
    assert tuple(s.key for s in p.steps if s.undo) == case.undo
    assert tuple(s.key for s in p.steps if s.after_commit) == case.after_commit
    # the commit point: nothing that undoes runs after it
    first = next((i for i, s in enumerate(p.steps) if s.after_commit), len(p.steps))
    assert all(s.after_commit for s in p.steps[first:])


@pytest.mark.parametrize(
    ("the_plan", "kind", "release", "previous"),
    [
        (plan.deploy(facts(LIVE_A), cand(B), Options()), "deploy", B, A),
        (plan.deploy(facts(LIVE_A), cand(B), Options(match=MATCH)), "match", B, A),
        (plan.rollback(facts(LIVE_B_WARM_A), cand(A)), "rollback", A, B),
        (plan.promote(facts(MATCHED), cand(B), Options()), "deploy", B, A),
        (plan.abort(facts(MATCHED), "app"), "abort", B, A),
        (plan.prepare(facts(NOTHING), cand(B)), "prepare", B, None),
    ],
)
def test_plan_says_what_it_makes_live_and_what_was(
    the_plan: Plan, kind: str, release: str, previous: str | None
) -> None:
    assert (the_plan.kind, the_plan.service, the_plan.release, the_plan.previous) == (
        kind,
        "app",
        release,
        previous,
    )


def test_a_candidate_live_and_running_is_an_empty_plan_that_says_why() -> None:
    p = plan.deploy(facts(LIVE_A), cand(A), Options())
    assert (p.steps, p.note, p.previous) == ((), "already live", A)


def test_a_matched_deploy_of_the_live_release_is_not_already_live() -> None:
    assert plan.deploy(facts(LIVE_A), cand(A), Options(match=MATCH)).steps


# The routes each step writes: what the proxy will do, and what an undo puts back


def carried(actions_: tuple[Action, ...]) -> list[tuple[str, routes.Routes]]:
    """(action type, routes) of every action that writes routes."""
    out = []
    for a in actions_:
        if isinstance(a, actions.WriteRoutes | actions.Switch):
            out.append((type(a).__name__, a.routes))
        elif isinstance(a, actions.CanaryStep):
            out.append(("CanaryStep", a.weighted))
        elif isinstance(a, actions.FreeSlot):
            out.append(("FreeSlot", a.without))
    return out


def step(p: Plan, key: str) -> Step:
    return next(s for s in p.steps if s.key == key)


def test_blue_green_routes_and_their_undos() -> None:
    p = plan.deploy(facts(LIVE_A), cand(B), Options())
    staged = R(srv(A, 100), srv(B, 0))
    assert carried(step(p, "stage").do) == [("WriteRoutes", staged)]
    assert carried(step(p, "stage").undo) == [("WriteRoutes", LIVE_A)]  # without the candidate
    switch = step(p, "switch")
    assert carried(switch.do) == [("Switch", R(srv(B, 100), srv(A, 0, drain=True)))]
    assert switch.do == (actions.Switch(R(srv(B, 100), srv(A, 0, drain=True)), B),)
    # the undo: the staged routes, the live release at its weight, then checked to answer,
    # and the candidate's requests in flight finished before the start's undo removes it
    assert carried(switch.undo) == [("WriteRoutes", staged)]
    assert switch.undo[1:] == (actions.Verify("app", A), actions.Drain("app", B, undo=True))


def test_a_warm_previous_release_leaves_the_pool_at_the_switch_and_comes_back_on_undo() -> None:
    p = plan.deploy(facts(LIVE_B_WARM_A), cand(C), Options())
    staged = R(srv(B, 100), srv(A, 0, drain=True), srv(C, 0))
    assert carried(step(p, "stage").do) == [("WriteRoutes", staged)]
    assert carried(step(p, "stage").undo) == [("WriteRoutes", LIVE_B_WARM_A)]
    assert carried(step(p, "switch").do) == [("Switch", R(srv(C, 100), srv(B, 0, drain=True)))]
    assert carried(step(p, "switch").undo) == [("WriteRoutes", staged)]
    assert step(p, "retire").do == (actions.Retire("app", frozenset({B, C})),)


def test_first_deploy_switch_has_nothing_to_verify_back_and_the_frontend_is_undone() -> None:
    new = dataclasses.replace(facts(NOTHING), frontend_current=False)
    p = plan.deploy(new, cand(B), Options())
    assert p.keys[:2] == ("pull", "frontend")
    assert step(p, "frontend").undo == (actions.RestoreFrontend("app"),)
    assert carried(step(p, "switch").do) == [("Switch", R(srv(B, 100)))]
    assert step(p, "switch").undo == (actions.WriteRoutes(R(srv(B, 0)), f"{B} back at weight 0"),)


def test_a_frontend_the_proxy_holds_already_is_left_alone_and_a_changed_one_restored() -> None:
    assert "frontend" not in plan.deploy(facts(LIVE_A), cand(B), Options()).keys
    changed = dataclasses.replace(facts(LIVE_A), frontend_current=False)
    p = plan.deploy(changed, cand(B), Options())
    assert step(p, "frontend").undo == (actions.RestoreFrontend("app"),)


@pytest.mark.parametrize(
    ("current", "weight", "weighted"),
    [
        (LIVE_A, 10, R(srv(A, 90), srv(B, 10))),
        (LIVE_A, 25, R(srv(A, 75), srv(B, 25))),
        (LIVE_A, 50, R(srv(A, 50), srv(B, 50))),
        (LIVE_A_WARM_D, 25, R(srv(A, 75), srv(D, 0, drain=True), srv(B, 25))),
    ],
)
def test_canary_weights_and_their_undo(
    current: routes.Routes, weight: int, weighted: routes.Routes
) -> None:
    p = plan.deploy(facts(current), cand(B), CANARY)
    s = step(p, f"canary-{weight}")
    assert carried(s.do) == [("CanaryStep", weighted)]
    (canary,) = s.do
    assert isinstance(canary, actions.CanaryStep)
    assert (canary.live, canary.weight, canary.interval) == (A, weight, 5.0)
    assert carried(s.undo) == [("WriteRoutes", routes.stage(current, B))]  # all back on A


def test_match_routes_checks_and_undo() -> None:
    p = plan.deploy(facts(LIVE_A), cand(B), Options(match=MATCH))
    s = step(p, "match")
    assert carried(s.do) == [("WriteRoutes", MATCHED)]
    assert s.do[1:] == (
        actions.WaitUp(cand(B), "app-match"),
        actions.Verify("app", B, (("X-Canary", "1"),)),  # matched requests on B
        actions.Verify("app", A),  # every other one still on A
    )
    assert carried(s.undo) == [("WriteRoutes", R(srv(A, 100), srv(B, 0)))]


def test_free_slot_takes_the_stale_candidate_out_and_its_undo_puts_it_back() -> None:
    p = plan.deploy(facts(LIVE_A_STALE_B, running={A}), cand(B), Options())
    s = step(p, "free-slot")
    assert s.do == (actions.FreeSlot(LIVE_A, "app-" + B),)
    assert carried(s.undo) == [("WriteRoutes", LIVE_A_STALE_B)]
    assert carried(step(p, "stage").undo) == [("WriteRoutes", LIVE_A)]


def test_clear_keeps_the_pool_and_the_candidate() -> None:
    p = plan.deploy(facts(LIVE_A_WARM_D, present={A, C, D}), cand(B), Options())
    assert step(p, "clear").do == (actions.RemoveReleases("app", frozenset({A, B, D})),)


def test_start_health_and_undo_of_the_candidate() -> None:
    c = cand(B)
    p = plan.deploy(facts(LIVE_A), c, Options(health_timeout=7))
    assert step(p, "start").do == (actions.Start(c),)
    assert step(p, "start").undo == (actions.Remove("app", B, 5),)
    assert step(p, "healthy").do == (actions.WaitHealthy(c, 7),)
    default = plan.deploy(facts(LIVE_A), c, Options())
    assert step(default, "healthy").do == (actions.WaitHealthy(c, 45),)  # the manifest's


def test_hooks_bake_and_retain_carry_their_values() -> None:
    c = cand(B, HOOKED)
    p = plan.deploy(facts(LIVE_A), c, Options(bake=12.0))
    assert step(p, "pre-hook").do == (actions.Hook(c, "pre-deploy", "migrate"),)
    assert step(p, "post-hook").do == (actions.Hook(c, "post-deploy", "warm"),)
    assert step(p, "bake").do == (actions.Bake(c, A, 12.0, Options().thresholds),)
    assert step(p, "drain").do == (actions.Drain("app", A),)
    assert step(p, "retain").do == (actions.Retain("app", 5, B),)


def test_rollback_warm_switches_back_and_its_undo_restores_the_routes() -> None:
    p = plan.rollback(facts(LIVE_B_WARM_A), cand(A))
    assert carried(step(p, "switch").do) == [("Switch", R(srv(A, 100), srv(B, 0, drain=True)))]
    assert carried(step(p, "switch").undo) == [("WriteRoutes", LIVE_B_WARM_A)]
    assert step(p, "switch").undo[1:] == (
        actions.Verify("app", B),
        actions.Drain("app", A, undo=True),
    )
    assert step(p, "drain").do == (actions.Drain("app", B),)


def test_rollback_cold_starts_by_digest_and_stages_beside_the_live_release() -> None:
    c = cand(A)
    p = plan.rollback(facts(LIVE_B_WARM_A, running={B}), c)
    assert step(p, "pull").do == (actions.Pull((c.image,)),)
    assert step(p, "free-slot").do == (actions.FreeSlot(R(srv(B, 100)), "app-" + A),)
    assert carried(step(p, "stage").do) == [("WriteRoutes", R(srv(B, 100), srv(A, 0)))]
    assert carried(step(p, "switch").do) == [("Switch", R(srv(A, 100), srv(B, 0, drain=True)))]
    assert carried(step(p, "switch").undo) == [("WriteRoutes", R(srv(B, 100), srv(A, 0)))]


def test_promote_drops_the_match_rule_and_its_undo_restores_it() -> None:
    p = plan.promote(facts(MATCHED), cand(B), Options())
    switched = R(srv(B, 100), srv(A, 0, drain=True))
    assert carried(step(p, "switch").do) == [("Switch", switched)]
    assert carried(step(p, "switch").undo) == [("WriteRoutes", MATCHED)]
    assert step(p, "switch").undo[1:] == (
        actions.Verify("app", A),
        actions.Drain("app", B, undo=True),
    )


def test_abort_takes_the_rule_out_first_then_removes() -> None:
    p = plan.abort(facts(MATCHED), "app")
    assert carried(step(p, "unmatch").do) == [("WriteRoutes", LIVE_A)]
    assert carried(step(p, "unmatch").undo) == [("WriteRoutes", MATCHED)]
    assert step(p, "remove").do == (actions.Remove("app", B, 25),)


def test_a_changed_health_check_is_tried_on_the_live_release_before_the_proxy_takes_it() -> None:
    changed = dataclasses.replace(facts(LIVE_A), frontend_current=False)
    p = plan.deploy(changed, cand(B), Options())
    assert step(p, "frontend").do == (actions.LiveAnswers(cand(B), A), actions.Frontend(cand(B)))
    first = dataclasses.replace(facts(NOTHING), frontend_current=False)
    assert step(plan.deploy(first, cand(B), Options()), "frontend").do == (
        actions.Frontend(cand(B)),
    )


def test_a_known_integration_test_image_is_pulled_with_the_candidate() -> None:
    tested = dataclasses.replace(cand(B), test_image="registry/cdlab/app-test@sha256:" + "c" * 64)
    for p in (plan.deploy(facts(LIVE_A), tested, Options()), plan.prepare(facts(LIVE_A), tested)):
        assert step(p, "pull").do == (actions.Pull((tested.image, tested.test_image or "")),)
    assert step(plan.deploy(facts(LIVE_A), cand(B), Options()), "pull").do == (
        actions.Pull((cand(B).image,)),
    )


def test_the_scratch_check_keeps_the_live_release_working_and_forced_says_so() -> None:
    live = dataclasses.replace(facts(LIVE_A), live=cand(A))
    check = step(plan.deploy(live, cand(B, MIGRATING), Options()), "schema-check").do[0]
    assert check == actions.SchemaCheck(cand(B, MIGRATING), cand(A), False)
    forced = plan.deploy(live, cand(B, MIGRATING), Options(force=True))
    assert step(forced, "schema-check").do[0] == actions.SchemaCheck(
        cand(B, MIGRATING), cand(A), True
    )
    first = plan.deploy(facts(NOTHING), cand(B, MIGRATING), Options())
    assert step(first, "schema-check").do[0] == actions.SchemaCheck(cand(B, MIGRATING), None)


def test_on_a_swarm_the_start_and_the_proxy_slots_get_one_replica_count() -> None:
    c = cand(B)
    swarm = dataclasses.replace(facts(LIVE_A), replicas=3)
    p = plan.deploy(swarm, c, Options())
    assert step(p, "start").do == (actions.Start(c, 3),)
    staged = carried(step(p, "stage").do)[0][1]
    assert routes.replicas_of(staged, B) == 3
    # a warm release runs as it was started: the routes' count, not the facts'
    warm = dataclasses.replace(
        facts(R(srv(B, 100), dataclasses.replace(srv(A, 0, drain=True), replicas=2))),
        replicas=3,
    )
    back = plan.rollback(warm, cand(A))
    assert routes.replicas_of(carried(step(back, "switch").do)[0][1], A) == 2
    # a release in the routes but gone (a cold rollback) is started anew: the facts' count
    cold = plan.rollback(dataclasses.replace(warm, running=frozenset({B})), cand(A))
    assert step(cold, "start").do == (actions.Start(cand(A), 3),)
    assert routes.replicas_of(carried(step(cold, "stage").do)[0][1], A) == 3
