"""A release of N replicas in the route records (``lab.release.routes``): staged with its
replicas, and every transition carries each server it keeps with its own; the records travel
to the proxy's document and back with them, and a one-node record is written as before."""

from __future__ import annotations

import json

import pytest
from cdlab_proxy import document

from lab.release import routes
from tests.unit.release_data import MATCH, A, B, C, R


def srv(release: str, weight: int, drain: bool = False, replicas: int = 0) -> routes.Server:
    return routes.Server(release, routes.host_name("app", release), weight, drain, replicas)


LIVE3 = R(srv(A, 100, replicas=3))


def test_stage_sets_the_candidates_replicas_and_keeps_the_others() -> None:
    staged = routes.stage(LIVE3, B, replicas=2)
    assert staged.servers == (srv(A, 100, replicas=3), srv(B, 0, replicas=2))
    assert routes.stage(LIVE3, B).servers[-1] == srv(B, 0)  # a plain container by default
    assert routes.stage(staged, B, 4).servers == (srv(A, 100, replicas=3), srv(B, 0, replicas=4))


def test_switch_carries_the_new_live_and_the_warm_release_with_their_replicas() -> None:
    staged = routes.stage(R(srv(C, 0, True, 1), srv(A, 100, replicas=3)), B, replicas=2)
    assert routes.switch_to(staged, B).servers == (srv(B, 100, replicas=2), srv(A, 0, True, 3))
    assert routes.switch_to(staged, B, keep_previous=False).servers == (srv(B, 100, replicas=2),)
    # a rollback to the warm release: it comes back as it runs
    back = routes.switch_to(routes.switch_to(staged, B), A)
    assert back.servers == (srv(A, 100, replicas=3), srv(B, 0, True, 2))


@pytest.mark.parametrize("weight", [10, 25, 50])
def test_a_canary_step_keeps_every_servers_replicas(weight: int) -> None:
    staged = routes.stage(R(srv(A, 100, replicas=3), srv(C, 0, True, 5)), B, replicas=2)
    got = routes.canary(staged, B, weight)
    assert got.servers == (
        srv(A, 100 - weight, replicas=3),
        srv(C, 0, True, 5),
        srv(B, weight, replicas=2),
    )
    assert routes.canary(got, B, 100 - weight).servers[-1] == srv(B, 100 - weight, replicas=2)


def test_a_matched_candidate_is_staged_with_its_replicas_and_an_abort_keeps_the_rest() -> None:
    ab = routes.matched(LIVE3, MATCH, replicas=4)
    assert ab.servers == (srv(A, 100, replicas=3), srv(B, 0, replicas=4)) and ab.match == MATCH
    assert routes.without(ab, B) == LIVE3
    assert routes.matched(LIVE3, MATCH).servers[-1] == srv(B, 0)


def test_replicas_travel_to_the_proxys_document_and_back() -> None:
    r = routes.matched(R(srv(A, 100, replicas=3), srv(C, 0, True)), MATCH, replicas=8)
    doc = json.loads(json.dumps(r.to_doc()))
    assert [s.get("replicas") for s in doc["servers"]] == [3, None, 8]
    assert routes.from_doc(doc, "app") == r
    wire = document.parse_routes(doc, "app")
    assert [document.fqdn(s) for s in wire.servers] == [
        f"tasks.app-{A}",
        f"app-{C}",
        f"tasks.app-{B}",
    ]


def test_a_one_node_record_is_the_document_it_always_was() -> None:
    r = routes.switch_to(routes.stage(R(srv(A, 100)), B), B)
    assert r.to_doc() == {
        "service": "app",
        "servers": [
            {"release": B, "host": f"app-{B}", "weight": 100, "drain": False},
            {"release": A, "host": f"app-{A}", "weight": 0, "drain": True},
        ],
    }
    assert routes.from_doc(r.to_doc(), "app").servers == (srv(B, 100), srv(A, 0, True))
