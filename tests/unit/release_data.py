"""Fixed data the release engine's unit tests plan from: one service, its releases and route
records built from short tables (shared by the plan and apply tests)."""

from __future__ import annotations

import dataclasses

from lab.release import routes
from lab.release.model import Candidate, Facts
from lab.stack.services import Migration, Service

SERVICE = Service("app", "services/app", 8000, public_port=8001, health_timeout=45)
HOOKED = dataclasses.replace(SERVICE, pre_deploy="migrate", post_deploy="warm")
TESTED = dataclasses.replace(SERVICE, test_command="python3 -m app.selftest")
MIGRATING = dataclasses.replace(
    SERVICE,
    database=True,
    migration=Migration("alembic upgrade head", "alembic current", "alembic heads"),
)

A, B, C, D = "aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc", "dddddddddddd"
MATCH = routes.Match("header", "X-Canary", "1", B)


def image(release: str) -> str:
    return f"10.100.200.200:5000/cdlab/app@sha256:{release * 5}"


def cand(release: str, service: Service = SERVICE) -> Candidate:
    return Candidate(service, release, image(release))


def srv(release: str, weight: int, drain: bool = False) -> routes.Server:
    return routes.Server(release, routes.host_name("app", release), weight, drain)


def R(*servers: routes.Server, match: routes.Match | None = None) -> routes.Routes:
    return routes.Routes("app", servers, match)


def facts(
    current: routes.Routes,
    running: set[str] | None = None,
    present: set[str] | None = None,
) -> Facts:
    """Facts of ``current``; by default every release in the pool runs (and is present)."""
    run = {s.release for s in current.servers} if running is None else running
    return Facts(current, frozenset(run), frozenset(run if present is None else present))


# The route records the tests start from
NOTHING = R()
LIVE_A = R(srv(A, 100))
LIVE_A_WARM_D = R(srv(A, 100), srv(D, 0, drain=True))
LIVE_B_WARM_A = R(srv(B, 100), srv(A, 0, drain=True))
LIVE_A_STALE_B = R(srv(A, 100), srv(B, 0))  # B in the pool, its containers gone
MATCHED = R(srv(A, 100), srv(B, 0), match=MATCH)
