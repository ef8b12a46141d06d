"""The proxy supervisor's pure parts: config rendering, state parsing, Runtime API planning."""

from __future__ import annotations

import json

import pytest

from lab.proxy import supervisor

sup = supervisor()
APP = "app"
# As HAProxy 2.6 prints it (columns trimmed to the ones that matter, header names them).
HEADER = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_fqdn srv_port"
)
STATE = (
    "1\n"
    + HEADER
    + """
3 app 1 r1 172.19.0.7 2 68 100 1 app-aaa 8000
3 app 2 r2 172.19.0.8 2 76 0 1 app-bbb 8000
3 app 3 r3 - 0 5 1 1 cdlab-unassigned.invalid 8000
4 other 1 r1 - 0 5 1 1 - 9000
"""
)


def slots() -> list:
    return sup.parse_servers_state(STATE, APP)


def test_parse_reads_only_the_backend_and_hides_the_placeholder() -> None:
    got = slots()
    assert [(s.name, s.fqdn, s.weight) for s in got] == [
        ("r1", "app-aaa", 100),
        ("r2", "app-bbb", 0),
        ("r3", "", 1),
    ]
    r1, r2, r3 = got
    assert not r1.in_maintenance and not r1.draining  # 0x44: configured-disabled + CLI fqdn
    assert r2.draining and not r2.in_maintenance  # 0x4c: + forced drain
    assert r3.in_maintenance  # 0x05: disabled in the config, never used


D = sup.Desired


@pytest.mark.parametrize(
    ("desired", "commands"),
    [
        # in shape: nothing to send
        ([D("aaa", "app-aaa", 100), D("bbb", "app-bbb", 0, drain=True)], []),
        # blue/green switch back: one weight each, drain flips
        (
            [D("bbb", "app-bbb", 100), D("aaa", "app-aaa", 0, drain=True)],
            [
                "set server app/r2 weight 100",
                "set server app/r2 state ready",
                "set server app/r1 weight 0",
                "set server app/r1 state drain",
            ],
        ),
        # a new candidate takes an idle slot at weight 0 (not the one still draining, which leaves)
        (
            [D("aaa", "app-aaa", 100), D("ccc", "app-ccc", 0)],
            [
                "set server app/r3 fqdn app-ccc",
                "set server app/r3 weight 0",
                "set server app/r3 state ready",
                "set server app/r2 state maint",
            ],
        ),
        # nothing desired: every used slot to maintenance
        ([], ["set server app/r1 state maint", "set server app/r2 state maint"]),
    ],
)
def test_plan(desired: list, commands: list[str]) -> None:
    assert sup.plan(APP, slots(), desired) == commands


def test_plan_refuses_more_releases_than_slots() -> None:
    desired = [D(str(i), f"app-{i}", 1) for i in range(4)]
    with pytest.raises(ValueError, match="more than 3 releases"):
        sup.plan(APP, slots(), desired)


def test_render_config_never_needs_a_reload_and_checks_health() -> None:
    cfg = sup.render_config(sup.parse_services("app:8000:8000,api:8001:9000"), slots=4)
    assert "server-template r 1-4 cdlab-unassigned.invalid:8000 disabled" in cfg
    assert "server-template r 1-4 cdlab-unassigned.invalid:9000 disabled" in cfg
    assert "option httpchk GET /health" in cfg and "http-check expect status 200" in cfg
    assert "stats socket ipv4@0.0.0.0:9999 level admin" in cfg
    assert "bind :8001" in cfg


@pytest.mark.parametrize("spec", ["app", "app:80", "app:x:80"])
def test_parse_services_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(ValueError, match="name:listen_port:service_port"):
        sup.parse_services(spec)


def test_route_records_round_trip_between_lab_and_proxy() -> None:
    from lab import routes

    r = routes.switch_to(routes.stage(routes.Routes(APP, ()), "aaa"), "aaa")
    r = routes.switch_to(routes.stage(r, "bbb"), "bbb")
    assert r.live == "bbb"
    desired = sup.parse_routes(json.dumps(r.to_doc()).encode(), APP)
    assert desired == [D("bbb", "app-bbb", 100), D("aaa", "app-aaa", 0, drain=True)]
    assert routes.from_doc(r.to_doc(), APP) == r


def test_parse_sessions_reads_scur_of_one_server() -> None:
    from lab.proxy import parse_sessions

    csv = (
        "# pxname,svname,qcur,qmax,scur,smax\n"
        "app,FRONTEND,,,7,9\napp,r1,0,0,3,5\napp,r2,0,0,0,2\nstats,BACKEND,0,0,0,0\n"
    )
    assert parse_sessions(csv, "app", "r1") == 3
    assert parse_sessions(csv, "app", "r2") == 0
    assert parse_sessions(csv, "app", "r9") is None
    assert parse_sessions("not csv", "app", "r1") is None
