"""Plans: pure functions from frozen facts to the named steps of a run, each with its undo.

Undo runs in the reverse order of the steps done, the failing step's own undo included (every
undo is safe to run when its step did only part of its work). Steps marked ``after_commit``
run once the release is live and baked (an abort: once its release is off traffic): their
failure, or a signal during them, is a warning, never an undo.

    deploy:   pull, [clear], [frontend], [schema-check, migrate], [pre-hook], [free-slot], start,
              healthy, stage, [tests],
              proxy-up, [canary-N...], switch, [drain], [bake], [post-hook], retire, [retain]
    match:    ... proxy-up, match                  (then promote or abort, by hand)
    rollback: [schema | schema-down], switch, [drain], retire     (warm target)
              [schema | schema-down], pull, [free-slot], start, healthy, stage, proxy-up,
              switch, [drain], retire
    promote:  switch, [drain], [bake], [post-hook], retire, [retain]
    abort:    unmatch, remove
"""

from __future__ import annotations

from lab.release import routes, schema
from lab.release.actions import (
    Bake,
    CanaryStep,
    Drain,
    FreeSlot,
    Frontend,
    Hook,
    IntegrationTests,
    LiveAnswers,
    Migrate,
    Pull,
    Remove,
    RemoveReleases,
    RestoreFrontend,
    Retain,
    Retire,
    SchemaCheck,
    SchemaDown,
    SchemaGate,
    Start,
    Switch,
    Verify,
    WaitHealthy,
    WaitUp,
    WriteRoutes,
)
from lab.release.model import Action, Candidate, Facts, Options, Plan, Step

MATCH_SUFFIX = "-match"  # the proxy's backend for matched requests (services/proxy)


def deploy(facts: Facts, c: Candidate, o: Options) -> Plan:
    """Make ``c`` live (blue/green, canary) or the release of matched requests (``o.match``)."""
    current, name = facts.routes, c.service.name
    live = current.live
    kind = "match" if o.match else "deploy"
    if live == c.release and c.release in facts.running and not o.match:
        return Plan(kind, name, c.release, live, (), note="already live")
    pool = frozenset({s.release for s in current.servers} | {c.release})
    steps = [Step("pull", f"pull {c.release} onto prod", (_pull(c),))]
    if facts.present - pool:
        steps.append(
            Step(
                "clear",
                "remove releases out of the pool (left by a failed run)",
                (RemoveReleases(name, pool),),
            )
        )
    if not facts.frontend_current:  # a new service, or its manifest changed port or health
        steps.append(
            Step(
                "frontend",
                f"frontend of {name} on the proxy (manifest at {c.release})",
                ((LiveAnswers(c, live),) if live else ()) + (Frontend(c),),
                (RestoreFrontend(name),),
            )
        )
    if c.service.migration is not None and not o.match:
        steps += _migrate(facts, c, o)
    if c.service.pre_deploy:
        steps.append(
            Step(
                "pre-hook",
                "pre-deploy hook (before the release starts)",
                (Hook(c, "pre-deploy", c.service.pre_deploy),),
            )
        )
    base = _without(current, c.release)
    n = _replicas(facts, c.release)
    staged = routes.stage(base, c.release, n)
    if c.release in facts.running and c.release in {s.release for s in current.servers}:
        # warm (drained, running, tested when it was first deployed): pooled again as it is,
        # never restarted (a failure must not lose the instant-rollback target)
        steps += [
            Step(
                "stage",
                f"{c.release} (warm) in the pool at weight 0",
                (WriteRoutes(staged),),
                (WriteRoutes(current),),
            ),
            Step("proxy-up", "proxy health-checks the candidate (weight 0)", (WaitUp(c, name),)),
        ]
    else:
        steps += _start(facts, c, o)
    if o.match:
        match = o.match
        matched = routes.matched(base, match, n)
        checks: list[Action] = [
            WriteRoutes(matched, f"requests with {match.rule} to {c.release}"),
            WaitUp(c, name + MATCH_SUFFIX),
            Verify(name, c.release, tuple(match.headers.items())),
        ]
        if live:
            checks.append(Verify(name, live))
        steps.append(
            Step(
                "match",
                f"matched traffic ({match.rule}) to {c.release}",
                tuple(checks),
                (WriteRoutes(staged),),
            )
        )
        return Plan(kind, name, c.release, live, tuple(steps))
    if live and o.strategy == "canary":
        for weight in (w for w in o.steps if w < 100):
            step = CanaryStep(
                c, routes.canary(staged, c.release, weight), live, weight, o.interval, o.thresholds
            )
            steps.append(
                Step(
                    f"canary-{weight}",
                    f"canary {weight}%: judge after {o.interval:.0f} s",
                    (step,),
                    (
                        WriteRoutes(staged, f"every request back on {live}"),
                        Drain(name, c.release, undo=True),
                    ),
                )
            )
    steps += _go_live(staged, c, o, live)
    return Plan(kind, name, c.release, live, tuple(steps))


def rollback(
    facts: Facts,
    c: Candidate,
    known: schema.Known | None = None,
    refusal: str = "",
    down: SchemaDown | None = None,
) -> Plan:
    """All traffic back on ``c`` (a release deployed before); started again from the registry,
    by digest, when its containers are gone. No tests, hooks or bake: it served before. With
    what the records ``known`` of the schema, a first step says whether ``c`` works with the
    database's version (``refusal``: why not, and the run stops there); or, with ``down``
    (``--migrate-down``), the database is first migrated down to what ``c`` needs, once a
    scratch copy showed it safe."""
    current, name = facts.routes, c.service.name
    warm = c.release in facts.running and c.release in {s.release for s in current.servers}
    steps: list[Step] = []
    if down is not None:
        steps.append(
            Step(
                "schema-down",
                f"migrate the database down to {schema.shown(down.to)} (scratch check first)",
                (down,),
            )
        )
    elif known is not None and known.now is not None:
        steps.append(
            Step(
                "schema",
                f"schema: {c.release} works with the database at {schema.shown(known.now)}",
                (SchemaGate(c.release, known, refusal),),
            )
        )
    if not warm:
        steps.append(Step("pull", f"pull {c.release} onto prod", (_pull(c),)))
        steps += _start(facts, c, Options(), tests=False)
    n = _replicas(facts, c.release)
    staged = routes.stage(_without(current, c.release), c.release, n) if not warm else current
    go = _go_live(staged, c, Options(bake=0, retain=False), current.live, hooks=False)
    return Plan("rollback", name, c.release, current.live, tuple(steps + go))


def promote(facts: Facts, c: Candidate, o: Options) -> Plan:
    """The release on matched traffic becomes live for every request."""
    current = facts.routes
    return Plan(
        "deploy",
        c.service.name,
        c.release,
        current.live,
        tuple(_go_live(current, c, o, current.live)),
    )


def abort(facts: Facts, service: str) -> Plan:
    """The release on matched traffic is taken out (the rule first), stopped and removed."""
    current = facts.routes
    assert current.match is not None
    release = current.match.release
    steps = (
        Step(
            "unmatch",
            f"{release} off matched traffic: every request on {current.live}",
            (WriteRoutes(routes.without(current, release)),),
            (WriteRoutes(current),),
        ),
        # once off traffic it is out of the pool: a failed removal warns (the next deploy
        # clears it) and never routes matched requests back to a release being removed
        Step(
            "remove",
            f"stop and remove {service}-{release}",
            (Remove(service, release, 25),),
            after_commit=True,
        ),
    )
    return Plan("abort", service, release, current.live, steps)


def _migrate(facts: Facts, c: Candidate, o: Options) -> list[Step]:
    """Prod's database migrated for ``c`` before it starts, once a scratch copy showed the live
    release (the warm rollback target) still works on it. No undo: a migration that succeeded
    was shown safe for the live release, one that failed changed nothing."""
    live = facts.live if facts.live is not None and facts.live.release != c.release else None
    who = f"{live.release} tested" if live else "nothing live to test"
    return [
        Step(
            "schema-check",
            f"scratch check: a copy of the database migrated by {c.release}, {who} on it",
            (SchemaCheck(c, live, o.force),),
        ),
        Step("migrate", f"migrate the database for {c.release}", (Migrate(c),)),
    ]


def _pull(c: Candidate) -> Pull:
    """The candidate's image, and its integration-test image when it is known already (one
    built meanwhile is pulled by its build): by digest, with the registry's credentials."""
    return Pull((c.image, c.test_image) if c.test_image else (c.image,))


def _without(current: routes.Routes, release: str) -> routes.Routes:
    servers = tuple(s for s in current.servers if s.release != release)
    return routes.Routes(current.service, servers, current.match)


def _start(facts: Facts, c: Candidate, o: Options, tests: bool = True) -> list[Step]:
    """Start ``c`` beside the live release, healthy, checked by the proxy at weight 0 (and
    integration-tested meanwhile when it has tests and ``tests``)."""
    current, name = facts.routes, c.service.name
    steps: list[Step] = []
    if c.release in {s.release for s in current.servers}:
        steps.append(
            Step(
                "free-slot",
                f"{c.release} out of the pool until it is tested again (its containers are gone)",
                (FreeSlot(_without(current, c.release), c.host),),
                (WriteRoutes(current),),
            )
        )
    base = _without(current, c.release)
    steps += [
        Step(
            "start",
            f"start {c.project} on prod beside {current.live or 'nothing'}",
            (Start(c, facts.replicas),),
            (Remove(name, c.release, 5),),
        ),
        Step(
            "healthy",
            f"wait until {c.project} is healthy",
            (WaitHealthy(c, o.health_timeout or c.service.health_timeout),),
        ),
        Step(
            "stage",
            f"{c.release} in the pool at weight 0 (checked by the proxy, receiving nothing)",
            (WriteRoutes(routes.stage(base, c.release, facts.replicas)),),
            (WriteRoutes(base),),
        ),
    ]
    if tests and (c.test_image or c.service.test_command or o.background_tests):
        steps.append(
            Step(
                "tests",
                "integration tests against the candidate's own address",
                (IntegrationTests(c),),
            )
        )
    steps.append(
        Step("proxy-up", "proxy health-checks the candidate (weight 0)", (WaitUp(c, name),))
    )
    return steps


def _go_live(
    staged: routes.Routes, c: Candidate, o: Options, live: str | None, hooks: bool = True
) -> list[Step]:
    name = c.service.name
    switched = routes.switch_to(staged, c.release)
    why = f"every request back on {live}" if live else f"{c.release} back at weight 0"
    back: tuple[Action, ...] = (WriteRoutes(staged, why),)
    if live and live != c.release:
        # the requests it took finish before its removal (the undo of start) cuts them off
        back += (Verify(name, live), Drain(name, c.release, undo=True))
    steps = [
        Step("switch", f"switch: all traffic to {c.release}", (Switch(switched, c.release),), back)
    ]
    if live and live != c.release:
        steps.append(
            Step("drain", f"drain {live} (until its connections reach 0)", (Drain(name, live),))
        )
        if o.bake > 0:
            steps.append(
                Step(
                    "bake",
                    f"bake {o.bake:.0f} s: {c.release} watched, {live} kept warm",
                    (Bake(c, live, o.bake, o.thresholds),),
                )
            )
    if hooks and c.service.post_deploy:
        steps.append(
            Step(
                "post-hook",
                "post-deploy hook (the release is live)",
                (Hook(c, "post-deploy", c.service.post_deploy),),
            )
        )
    keep = frozenset(s.release for s in switched.servers)
    steps.append(
        Step("retire", "retire releases out of the pool", (Retire(name, keep),), after_commit=True)
    )
    if o.retain:
        steps.append(
            Step(
                "retain",
                f"retain {c.service.retain} releases of {name}",
                (Retain(name, c.service.retain, c.release),),
                after_commit=True,
            )
        )
    return steps


def prepare(facts: Facts, c: Candidate) -> Plan:
    """``c`` started beside the live release and pooled at weight 0, nothing switched (what a
    negative control of the bench starts before switching its own way)."""
    steps = [Step("pull", f"pull {c.release} onto prod", (_pull(c),))]
    steps += _start(facts, c, Options())
    return Plan("prepare", c.service.name, c.release, facts.routes.live, tuple(steps))


def _replicas(facts: Facts, release: str) -> int:
    """How ``release`` runs, for the proxy's slots: warm (running, in the pool), as the routes
    have it (it runs as it was started: 0 for a plain container); else as a new start makes it
    (``Facts.replicas``, which ``Start`` is given too; 0: a plain container)."""
    warm = release in facts.running and release in {s.release for s in facts.routes.servers}
    return routes.replicas_of(facts.routes, release) if warm else facts.replicas
