"""The proxy supervisor's pure parts: config rendering, state parsing, Runtime API planning."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cdlab_proxy import config, document, slots

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


def found() -> list[slots.Slot]:
    return slots.parse_servers_state(STATE, APP)


def test_parse_reads_only_the_backend_and_hides_the_placeholder() -> None:
    got = found()
    assert [(s.name, s.fqdn, s.weight) for s in got] == [
        ("r1", "app-aaa", 100),
        ("r2", "app-bbb", 0),
        ("r3", "", 1),
    ]
    r1, r2, r3 = got
    assert not r1.in_maintenance and not r1.draining  # 0x44: configured-disabled + CLI fqdn
    assert r2.draining and not r2.in_maintenance  # 0x4c: + forced drain
    assert r3.in_maintenance  # 0x05: disabled in the config, never used


D = document.Server


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
    assert slots.plan(APP, found(), desired) == commands


def test_a_slot_that_changes_hands_takes_the_new_address_before_it_serves() -> None:
    """r2 still points at bbb (running, UP): it must not keep bbb's address."""
    two = [s for s in found() if s.name != "r3"]
    got = slots.plan(
        APP, two, [D("aaa", "app-aaa", 100), D("ccc", "app-ccc", 100)], {"app-ccc": "172.19.0.9"}
    )
    assert got == [
        "set server app/r2 state maint",
        "set server app/r2 fqdn app-ccc",
        "set server app/r2 addr 172.19.0.9",
        "set server app/r2 weight 100",
        "set server app/r2 state ready",
    ]


def test_plan_prefers_idle_slots_with_an_address() -> None:
    """A never-used slot has no address until DNS answers (up to 2 s), and HAProxy refuses
    ``addr`` on it: a used one takes the new address at once."""
    fresh = slots.Slot("r1", "", 1, 0x05, 0)
    used = slots.Slot("r2", "app-old", 0, 0x01, 0, "172.19.0.4")
    busy = slots.Slot("r3", "app-live", 100, 0x00, 2, "172.19.0.5")
    got = slots.plan(APP, [fresh, used, busy], [D("live", "app-live", 100), D("new", "app-new", 0)])
    assert got[0] == "set server app/r2 fqdn app-new"


def test_a_never_addressed_slot_is_not_given_an_address_haproxy_would_refuse() -> None:
    fresh = slots.Slot("r1", "", 1, 0x25, 0)
    got = slots.plan(APP, [fresh], [D("new", "app-new", 0)], {"app-new": "172.19.0.9"})
    assert got == [
        "set server app/r1 fqdn app-new",
        "set server app/r1 weight 0",
        "set server app/r1 state ready",
    ]


def test_plan_refuses_more_releases_than_slots() -> None:
    desired = [D(str(i), f"app-{i}", 1) for i in range(4)]
    with pytest.raises(ValueError, match="more than 3 releases"):
        slots.plan(APP, found(), desired)


FILES = config.Files.of(config.Settings(run_dir="/run/x"), APP, 3)


def render(front: document.Frontend, **settings: Any) -> str:
    return config.render_config(front, config.Settings(run_dir="/run/x", **settings), FILES)


def test_render_config_never_needs_a_reload_and_checks_health() -> None:
    cfg = render(document.Frontend("api", 8001, 9000, "/ready"), slots=4)
    assert "frontend api\n    bind :8001\n" in cfg
    assert "server-template r 1-4 cdlab-unassigned.invalid:9000 disabled" in cfg
    assert "option httpchk GET /ready" in cfg and "http-check expect status 200" in cfg
    assert "stats socket /run/x/app.3.sock mode 600 level admin expose-fd listeners" in cfg
    assert "server-state-file /run/x/app.3.state" in cfg
    assert "load-server-state-from-file global" in cfg and "init-addr last,none" in cfg
    assert "nameserver dns 127.0.0.11:53" in cfg
    assert "9999" not in cfg and "8404" not in cfg  # the supervisor's ports, not HAProxy's


def test_tests_move_the_ports_and_the_dns_server() -> None:
    cfg = render(
        document.Frontend(APP, 8000, 8000), bind="127.0.0.1", port_shift=30000, nameserver="x:53"
    )
    assert "bind 127.0.0.1:38000" in cfg and "nameserver dns x:53" in cfg


def test_a_release_gets_at_most_max_connections_and_the_rest_queue_in_the_proxy() -> None:
    """The excess waits in the proxy's queue (bounded by its timeout), not in the release."""
    cfg = render(document.Frontend(APP, 8000, 8000, "/health", 32), slots=4)
    assert "resolve-prefer ipv4 maxconn 32" in cfg and "timeout queue 5s" in cfg
    assert cfg.count(" maxconn 32") == 2  # the service's backend and its A/B backend
    assert "timeout check 2s" in cfg and "fall 3" in cfg  # slow is not dead
    assert "maxconn 32" not in render(document.Frontend(APP, 8000, 8000))


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
@pytest.mark.parametrize(
    "front",
    [document.Frontend(APP, 8000, 8000), document.Frontend("quotes", 8008, 9000, "/ready?x=1", 50)],
)
def test_haproxy_accepts_the_rendered_config(front: document.Frontend, tmp_path: Path) -> None:
    settings = config.Settings(run_dir=str(tmp_path))
    files = config.Files.of(settings, front.name, 1)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(config.render_config(front, settings, files))
    Path(files.state).write_text("")
    Path(config.map_file(settings, front.name)).write_text("")
    Path(config.release_map(settings, front.name)).write_text("")
    out = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Configuration file is valid" in out.stdout + out.stderr


def test_route_records_round_trip_between_lab_and_proxy() -> None:
    from lab.release import routes

    r = routes.switch_to(routes.stage(routes.Routes(APP, ()), "aaa"), "aaa")
    r = routes.switch_to(routes.stage(r, "bbb"), "bbb")
    assert r.live == "bbb"
    wanted = slots.wanted(document.parse_routes(json.loads(json.dumps(r.to_doc())), APP))
    assert wanted.servers == (D("bbb", "app-bbb", 100), D("aaa", "app-aaa", 0, drain=True))
    assert (wanted.matched, wanted.patterns) == ((), ())
    assert routes.from_doc(r.to_doc(), APP) == r


def _python_regex(pattern: str) -> re.Pattern[str]:
    """HAProxy's (PCRE2) POSIX classes, spelled for Python's re."""
    for posix, python in {
        "[:cntrl:]": "\\x00-\\x1f\\x7f",
        "[:blank:]": " \\t",
        "[:alnum:]": "A-Za-z0-9",
    }.items():
        pattern = pattern.replace(posix, python)
    return re.compile(pattern)


def headers(*lines: str) -> str:
    """``req.hdrs`` as HAProxy renders it: ``name: value\\r\\n`` each, then an empty line."""
    return "".join(f"{line}\r\n" for line in lines) + "\r\n"


@pytest.mark.parametrize(
    ("kind", "name", "value", "block", "found"),
    [
        ("header", "X-Canary", "1", headers("host: a", "x-canary: 1"), True),
        ("header", "X-Canary", "1", headers("X-CANARY:1", "accept: */*"), True),
        ("header", "X-Canary", "1", headers("x-canary: 12"), False),
        ("header", "X-Canary", "1", headers("x-canary: 0", "x-other: 1"), False),
        ("header", "X-Canary", "1", headers("my-x-canary: 1"), False),
        ("header", "X-Canary", "1", headers("user-agent: x-canary: 1"), False),
        ("header", "X-Version", "v2.1", headers("x-version: v2x1"), False),
        ("cookie", "canary", "yes", headers("cookie: canary=yes"), True),
        ("cookie", "canary", "yes", headers("cookie: a=1; canary=yes; b=2"), True),
        ("cookie", "canary", "yes", headers("cookie: a=1; canary=yes"), True),
        ("cookie", "canary", "yes", headers("cookie: mycanary=yes"), False),
        ("cookie", "canary", "yes", headers("cookie: canary=yes2"), False),
        ("cookie", "canary", "yes", headers("x-cookie: canary=yes"), False),
        ("cookie", "canary", "yes", headers("canary: yes"), False),
    ],
)
def test_match_patterns_find_exactly_the_header_or_cookie(
    kind: str, name: str, value: str, block: str, found: bool
) -> None:
    pattern = slots.match_pattern(kind, name, value)
    assert not set(pattern) & set(" \\;#"), "one Runtime API argument, no escaping"
    assert bool(_python_regex(pattern).search(block)) is found


def test_a_match_rule_travels_from_the_route_record_to_the_proxy() -> None:
    from lab.release import routes

    live = routes.switch_to(routes.stage(routes.Routes(APP, ()), "a" * 12), "a" * 12)
    rule = routes.parse_match("header:X-Canary=1", "b" * 12)
    r = routes.matched(live, rule)
    assert r.live == "a" * 12 and r.match == rule
    assert routes.from_doc(json.loads(json.dumps(r.to_doc())), APP) == r
    wanted = slots.wanted(document.parse_routes(r.to_doc(), APP))
    assert wanted.matched == (D("b" * 12, "app-" + "b" * 12, 100),)
    assert wanted.patterns == (slots.match_pattern("header", "X-Canary", "1"),)
    assert D("b" * 12, "app-" + "b" * 12, 0) in wanted.servers  # staged, health-checked
    # promote (a switch) and abort both leave no rule behind
    assert routes.switch_to(r, "b" * 12).match is None
    assert routes.without(r, "b" * 12) == live


@pytest.mark.parametrize(
    "text",
    ["X-Canary=1", "header:X-Canary", "query:a=1", "header:a b=1", "cookie:c=1;2", "header:=1"],
)
def test_bad_match_rules_are_refused_with_the_expected_form(text: str) -> None:
    from lab.errors import ConfigError
    from lab.release import routes

    with pytest.raises(ConfigError, match="header:NAME=VALUE or cookie:NAME=VALUE"):
        routes.parse_match(text)


def test_map_plan_adds_before_it_deletes_and_is_empty_when_in_shape() -> None:
    show = "0x55d1c0 (^|[[:cntrl:]])old 1\n"
    assert slots.parse_map(show) == ["(^|[[:cntrl:]])old"]
    assert slots.map_plan("/m", ["old"], ["new"]) == ["add map /m new 1", "del map /m old"]
    assert slots.map_plan("/m", ["k"], ["k"]) == []


def test_matched_requests_go_to_their_own_backend_only_while_it_is_up() -> None:
    cfg = render(document.Frontend(APP, 8000, 8000), slots=4)
    assert (
        "use_backend app-match if { nbsrv(app-match) gt 0 } "
        "{ req.hdrs,map_reg(/run/x/app.map) -m found }" in cfg
    )
    assert "backend app-match" in cfg and f"server-template r 1-{slots.MATCH_SLOTS} " in cfg


def test_parse_sessions_reads_scur_of_one_server() -> None:
    from lab.ports.proxy import parse_sessions

    csv = (
        "# pxname,svname,qcur,qmax,scur,smax\n"
        "app,FRONTEND,,,7,9\napp,r1,0,0,3,5\napp,r2,0,0,0,2\nstats,BACKEND,0,0,0,0\n"
    )
    assert parse_sessions(csv, "app", "r1") == 3
    assert parse_sessions(csv, "app", "r2") == 0
    assert parse_sessions(csv, "app", "r9") is None
    assert parse_sessions("not csv", "app", "r1") is None


def test_the_reload_control_is_a_reload_at_its_best() -> None:
    """The reload-based switch it is compared with hands its listening sockets over."""
    from lab.proof import controls

    cfg = controls.reload_config("app", "app-3f9c2e1a0b1c", 8000, "/health")
    assert "master-worker" in cfg and "expose-fd listeners" in cfg
    assert "server live app-3f9c2e1a0b1c:8000 check" in cfg and "bind :8000" in cfg
    assert "retry-on conn-failure empty-response" in cfg  # as cdlab's own proxy


def test_swarm_at_its_best_is_fronted_by_a_proxy_that_follows_its_tasks() -> None:
    """Swarm's start-first update behind an HAProxy whose servers are tasks.<service> in
    Docker's DNS, asked every second, with the same retries as the other controls."""
    from lab.proof import controls

    cfg = controls.swarm_front_config("app", "tasks.swarm-app", 8000, "/health")
    assert "server-template task 1-4 tasks.swarm-app:8000 check" in cfg
    assert "resolvers docker" in cfg and "nameserver dns 127.0.0.11:53" in cfg
    assert "timeout resolve 1s" in cfg and "init-addr none" in cfg
    assert cfg.index("resolvers docker") < cfg.index("defaults")  # its own section
    assert "retry-on conn-failure empty-response" in cfg and "option httpchk GET /health" in cfg


def test_a_release_back_from_maintenance_takes_its_new_address() -> None:
    """Taken out of the pool, then started again (a new container): its slot kept the name and
    the old address; it gets the new one before it serves again, and only when it changed."""
    out = slots.Slot("r2", "app-aaa", 0, 0x01, 0, "172.19.0.4")
    got = slots.plan(APP, [out], [D("aaa", "app-aaa", 0)], {"app-aaa": "172.19.0.7"})
    assert got == ["set server app/r2 addr 172.19.0.7", "set server app/r2 state ready"]
    same = slots.plan(APP, [out], [D("aaa", "app-aaa", 0)], {"app-aaa": "172.19.0.4"})
    assert same == ["set server app/r2 state ready"]
    unknown = slots.plan(APP, [out], [D("aaa", "app-aaa", 0)], {})  # DNS does not answer yet
    assert unknown == ["set server app/r2 state ready"]


def test_a_slot_waiting_for_dns_is_not_asked_again_to_be_ready() -> None:
    """After ``state ready`` a new slot keeps HAProxy's DNS maintenance bit (0x20) until its
    name resolves; only forced maintenance (0x01) needs a command."""
    waiting = slots.Slot("r1", "app-new", 0, 0x24, 0)
    assert slots.plan(APP, [waiting], [D("new", "app-new", 0)]) == []
    assert waiting.in_maintenance and not waiting.forced_maintenance
    assert slots.plan(APP, [waiting], [D("new", "app-new", 0, drain=True)]) == [
        "set server app/r1 state drain"
    ]


def test_the_proxy_names_the_release_and_logs_each_request_for_the_edge() -> None:
    """X-Release from the slot map on every answer (the proxy's own errors too), X-Service, and
    one line per request to the supervisor's socket; without the edge figures, no log."""
    cfg = render(document.Frontend(APP, 8000, 8000))
    assert "http-after-response set-var(txn.release) var(txn.slot),map(/run/x/app.releases)" in cfg
    assert "set-header X-Release %[var(txn.release)]" in cfg and "X-Service app" in cfg
    assert "log ring@edge local0 info" in cfg and 'log-format "cdlab-edge %f' in cfg
    assert "    server supervisor 127.0.0.1:5140" in cfg
    quiet = render(document.Frontend(APP, 8000, 8000), edge=False)
    assert "log-format" not in quiet and "X-Release" in quiet
