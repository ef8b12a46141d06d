"""The supervisor's pure decisions: which processes to start, replace and stop (fleet.plan),
where a Runtime API command goes and how answers merge (router), the slots a replacing process
starts from (slots.seed)."""

from __future__ import annotations

import pytest
from cdlab_proxy import fleet, router, slots
from cdlab_proxy.document import Frontend

APP = Frontend("app", 8000, 8000)
QUOTES = Frontend("quotes", 8001, 9000, "/ready")
R = fleet.Running


def steps(*items: tuple[str, str, str]) -> list[tuple[str, str, str]]:
    return list(items)


@pytest.mark.parametrize(
    ("wanted", "running", "invalid", "expected"),
    [
        # in shape: nothing
        ({"app": APP}, {"app": R(APP, True)}, (), []),
        # a new document: its process starts, the other one is untouched
        (
            {"app": APP, "quotes": QUOTES},
            {"app": R(APP, True)},
            (),
            [("start", "quotes", "a new frontend document")],
        ),
        # a changed document: that process only is replaced, the reason in words
        (
            {"app": APP, "quotes": Frontend("quotes", 8001, 9000, "/health")},
            {"app": R(APP, True), "quotes": R(QUOTES, True)},
            (),
            [("replace", "quotes", "health path /ready -> /health")],
        ),
        # a deleted document: its process stops
        (
            {"app": APP},
            {"app": R(APP, True), "quotes": R(QUOTES, True)},
            (),
            [("stop", "quotes", "its frontend document was deleted")],
        ),
        # a process that ended is started again
        (
            {"app": APP},
            {"app": R(APP, False, "exit code 1")},
            (),
            [("start", "app", "its HAProxy had stopped (exit code 1)")],
        ),
        # an unreadable document leaves its process as it is
        ({}, {"app": R(APP, True)}, {"app"}, []),
        # a new service on a port another one holds is refused
        (
            {"app": APP, "other": Frontend("other", 8000, 80)},
            {"app": R(APP, True)},
            (),
            [("refuse", "other", "public port 8000 is app's")],
        ),
        # two new ones on one port: the first by name wins
        (
            {"b": Frontend("b", 8003, 80), "a": Frontend("a", 8003, 80)},
            {},
            (),
            [("start", "a", "a new frontend document"), ("refuse", "b", "public port 8003 is a's")],
        ),
        # a move to a port another one holds is refused; the running process keeps its port
        (
            {
                "app": APP,
                "quotes": Frontend("quotes", 8000, 9000, "/ready"),
                "new": Frontend("new", 8001, 1),
            },
            {"app": R(APP, True), "quotes": R(QUOTES, True)},
            (),
            [
                ("refuse", "new", "public port 8001 is quotes's"),
                ("refuse", "quotes", "public port 8000 is app's"),
            ],
        ),
        # a move frees the old port for a newcomer; the stop and the move come first
        (
            {"quotes": Frontend("quotes", 8002, 9000, "/ready"), "new": Frontend("new", 8001, 1)},
            {"app": R(APP, True), "quotes": R(QUOTES, True)},
            (),
            [
                ("stop", "app", "its frontend document was deleted"),
                ("replace", "quotes", "public port 8001 -> 8002"),
                ("start", "new", "a new frontend document"),
            ],
        ),
        # the port of a deleted service is free at once
        (
            {"new": Frontend("new", 8000, 1)},
            {"app": R(APP, True)},
            (),
            [
                ("stop", "app", "its frontend document was deleted"),
                ("start", "new", "a new frontend document"),
            ],
        ),
    ],
)
def test_fleet_plan(
    wanted: dict[str, Frontend],
    running: dict[str, fleet.Running],
    invalid: set[str],
    expected: list[tuple[str, str, str]],
) -> None:
    got = fleet.plan(wanted, running, invalid)
    assert [(s.action, s.service, s.reason) for s in got] == expected
    for step in got:
        if step.action in ("start", "replace"):
            assert step.frontend == wanted[step.service]


OWNED = router.owners({"app": "/run/app.map", "quotes": "/run/quotes.map"})
RUNNING = ["app", "quotes"]


@pytest.mark.parametrize(
    ("command", "services", "answer"),
    [
        ("set server app/r1 state ready", ("app",), ""),
        ("set server app-match/r2 fqdn app-x", ("app",), ""),
        ("get weight quotes/r1", ("quotes",), ""),
        ("show servers state quotes-match", ("quotes",), ""),
        ("show servers state", ("app", "quotes"), ""),
        ("show stat", ("app", "quotes"), ""),
        ("show info", ("app", "quotes"), ""),
        ("show map /run/quotes.map", ("quotes",), ""),
        ("add map /run/app.map (^|x)k 1", ("app",), ""),
        ("del map /run/app.map k", ("app",), ""),
        ("set maxconn frontend quotes 10", ("quotes",), ""),
        ("disable frontend app", ("app",), ""),
        ("set maxconn server quotes/r1 5", ("quotes",), ""),
        ("help", ("app",), ""),
        ("set maxconn global 100", ("app", "quotes"), ""),
        ("set server nosuch/r1 state ready", (), "No such backend.\n\n"),
    ],
)
def test_router_dispatch(command: str, services: tuple[str, ...], answer: str) -> None:
    route = router.dispatch(command, OWNED, RUNNING)
    assert (route.services, route.answer, route.status) == (services, answer, False)


def test_a_command_naming_no_process_goes_to_all_and_status_is_the_routers() -> None:
    assert router.dispatch("show cdlab", OWNED, RUNNING).status
    everyone = router.dispatch("clear counters all", OWNED, RUNNING)
    assert everyone.services == ("app", "quotes") and not everyone.answer
    assert router.dispatch("show stat -1 4 -1", OWNED, RUNNING).services == ("app", "quotes")
    assert router.dispatch("show stat", {}, []).services == ()


def test_several_commands_on_a_line_are_split_as_haproxy_does() -> None:
    assert router.split("show stat; show info\n") == ["show stat", "show info"]
    assert router.split(r"add map /m a\;b 1") == [r"add map /m a\;b 1"]
    assert router.split("  \n") == []


STATE_HEADER = "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_fqdn srv_port"


@pytest.mark.parametrize(
    ("answers", "merged"),
    [
        # show servers state: the version and the header once, every process's rows
        (
            [
                f"1\n{STATE_HEADER}\n3 app 1 r1 - 0 - 8000\n\n",
                f"1\n{STATE_HEADER}\n3 quotes 1 r1 - 0 - 9000\n\n",
            ],
            f"1\n{STATE_HEADER}\n3 app 1 r1 - 0 - 8000\n3 quotes 1 r1 - 0 - 9000\n\n",
        ),
        # show stat (CSV): one header
        (
            ["# pxname,svname\napp,FRONTEND\napp,r1\n\n", "# pxname,svname\nquotes,FRONTEND\n\n"],
            "# pxname,svname\napp,FRONTEND\napp,r1\nquotes,FRONTEND\n\n",
        ),
        # show info: no header; one block after the other
        (
            ["Name: HAProxy\nPid: 1\n\n", "Name: HAProxy\nPid: 2\n\n"],
            "Name: HAProxy\nPid: 1\n\nName: HAProxy\nPid: 2\n\n",
        ),
        # the same answer from every process, once
        (["No such frontend.\n\n", "No such frontend.\n\n"], "No such frontend.\n\n"),
        # one process, no processes
        (["# name\napp\n\n"], "# name\napp\n\n"),
        ([], "\n"),
    ],
)
def test_router_merge(answers: list[str], merged: str) -> None:
    assert router.merge(answers) == merged


def test_merged_servers_state_parses_like_one_haproxy() -> None:
    merged = router.merge(
        [
            f"1\n{STATE_HEADER}\n3 app 1 r1 10.0.0.2 2 app-a 8000\n\n",
            f"1\n{STATE_HEADER}\n3 quotes 1 r1 10.0.0.3 2 quotes-b 9000\n\n",
        ]
    )
    assert [s.fqdn for s in slots.parse_servers_state(merged, "quotes")] == ["quotes-b"]
    assert [s.addr for s in slots.parse_servers_state(merged, "app")] == ["10.0.0.2"]


def test_the_status_table_reads_back() -> None:
    rows = [
        router.Status("quotes", QUOTES, "refused", 12, "public port 8001 is app's"),
        router.Status("app", APP, "up", 11),
        router.Status("bad", None, "invalid", None, "bad value for 'frontends[bad]'"),
    ]
    text = router.status_table(rows)
    assert text.startswith(
        "# service public_port port health maxconn try_timeout state pid detail\n"
    )
    assert router.parse_status(text) == sorted(rows, key=lambda r: r.service)
    assert router.parse_status("Unknown command: 'show cdlab'\n\n") is None


def test_the_status_table_carries_a_frontends_try_timeout() -> None:
    slow = Frontend("quotes", 8001, 9000, "/ready", 0, 45)
    text = router.status_table([router.Status("quotes", slow, "up", 12)])
    assert text.splitlines()[1] == "quotes 8001 9000 /ready 0 45 up 12 -"
    assert router.parse_status(text) == [router.Status("quotes", slow, "up", 12)]


def test_a_status_table_of_the_previous_supervisor_reads_as_3_s_per_try() -> None:
    """Its layout had no try_timeout column: a lab newer than its proxy still reads it."""
    text = (
        "# service public_port port health maxconn state pid detail\n"
        "app 8000 8000 /health 0 up 11 -\n"
        "bad - - - - invalid - bad value for 'frontends[bad]'\n"
        "quotes 8001 9000 /ready 50 refused 12 public port 8001 is app's\n\n"
    )
    assert router.parse_status(text) == [
        router.Status("app", APP, "up", 11),
        router.Status("bad", None, "invalid", None, "bad value for 'frontends[bad]'"),
        router.Status(
            "quotes",
            Frontend("quotes", 8001, 9000, "/ready", 50, 3),
            "refused",
            12,
            "public port 8001 is app's",
        ),
    ]


FULL_HEADER = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health "
    "srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord "
    "srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port"
)


def test_a_replacing_process_starts_from_the_slots_of_the_one_before() -> None:
    """As HAProxy 2.6 dumps them: a slot serving app-aaa (its CLI flag lost in an earlier
    hand-over: admin 4), a never-used one; another service's backend is left out."""
    dump = (
        f"1\n{FULL_HEADER}\n"
        "3 app 1 r1 172.19.0.7 2 4 100 1 10 15 3 4 6 0 0 0 app-aaa 8000 - 0 0 - - 0\n"
        "3 app 2 r2 - 0 37 1 1 12 1 0 0 14 0 0 0 cdlab-unassigned.invalid 8000 - 0 0 - - 0\n"
        "4 other 1 r1 - 0 37 1 1 12 1 0 0 14 0 0 0 cdlab-unassigned.invalid 80 - 0 0 - - 0\n\n"
    )
    got = slots.seed(dump, ["app", "app-match"], 8080).splitlines()
    assert got[:2] == ["1", FULL_HEADER]
    r1, r2 = (line.split() for line in got[2:])
    assert len(got) == 4
    assert (r1[4], r1[6], r1[17], r1[18]) == ("172.19.0.7", "68", "app-aaa", "8080")
    assert (r2[6], r2[17], r2[18]) == ("37", "cdlab-unassigned.invalid", "8080")
    assert slots.seed("Unknown command\n", ["app"], 1) == ""
