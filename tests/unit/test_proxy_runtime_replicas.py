"""The lab's client of the proxy's Runtime API with a release of replicas (``lab.ports.proxy``):
waiting for every replica's slot, for all of them to leave, and their connections summed; a
plain container's single slot as before; a node's addresses drained in every backend."""

from __future__ import annotations

import pytest

from lab.ports.proxy import ProxyError, Runtime, sum_sessions

HEADER = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_fqdn srv_port"
)
UP, DOWN, MAINT, DRAIN = (2, 0x40), (0, 0x40), (0, 0x41), (2, 0x48)
STAT = (
    "# pxname,svname,qcur,qmax,scur,smax\n"
    "app,FRONTEND,,,9,9\napp,r1,0,0,2,5\napp,r2,0,0,3,5\napp,r3,0,0,4,4\napp,r4,0,0,1,1\n\n"
)


def state(*slots: tuple[str, str, str, tuple[int, int]], backend: str = "app") -> str:
    """``show servers state`` of ``backend``: (slot, address, fqdn, (op state, admin))."""
    rows = "".join(
        f"3 {backend} {i} {name} {addr or '-'} {op} {admin} 256 1 {fqdn} 8000\n"
        for i, (name, addr, fqdn, (op, admin)) in enumerate(slots, 1)
    )
    return f"1\n{HEADER}\n{rows}\n"


class FakeRuntime(Runtime):
    """The Runtime API answering ``show servers state`` and ``show stat`` each from a list
    (then its last answer)."""

    def __init__(self, states: list[str], stats: list[str] | None = None) -> None:
        super().__init__("10.0.0.1", timeout=0.1)
        self.states, self.stats = states, stats or [STAT]
        self.asked = 0

    def send(self, command: str) -> str:
        if command == "show stat":
            return self.stats.pop(0) if len(self.stats) > 1 else self.stats[0]
        assert command == "show servers state"
        self.asked += 1
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


TASKS = "tasks.app-x"
THREE = ("10.0.1.7", "10.0.1.8", "10.0.1.9")


def test_wait_up_returns_once_every_replicas_address_has_an_up_slot() -> None:
    rt = FakeRuntime(
        [
            state(("r1", "10.0.1.7", TASKS, UP), ("r2", "", TASKS, MAINT)),
            state(("r1", "10.0.1.7", TASKS, UP), ("r2", "10.0.1.8", TASKS, UP)),
            state(*(("r1", a, TASKS, UP) for a in THREE)),
        ]
    )
    rt.wait_up("app", "app-x", timeout=5, addrs=THREE)
    assert rt.asked == 3


@pytest.mark.parametrize(
    "slots",
    [
        [("r1", "10.0.1.7", TASKS, UP), ("r2", "10.0.1.8", TASKS, UP), ("r3", "", TASKS, MAINT)],
        [
            ("r1", "10.0.1.7", TASKS, UP),
            ("r2", "10.0.1.8", TASKS, UP),
            ("r3", "10.0.1.9", TASKS, DOWN),
        ],
        # two slots at one address: the third replica has none
        [
            ("r1", "10.0.1.7", TASKS, UP),
            ("r2", "10.0.1.8", TASKS, UP),
            ("r3", "10.0.1.8", TASKS, UP),
        ],
        # the third replica's address UP, but in the slot of another release
        [
            ("r1", "10.0.1.7", TASKS, UP),
            ("r2", "10.0.1.8", TASKS, UP),
            ("r3", "10.0.1.9", "app-y", UP),
        ],
    ],
)
def test_wait_up_times_out_naming_the_replica_not_up(
    slots: list[tuple[str, str, str, tuple[int, int]]],
) -> None:
    with pytest.raises(ProxyError) as err:
        FakeRuntime([state(*slots)]).wait_up("app", "app-x", timeout=0.3, addrs=THREE)
    assert "not UP yet: 10.0.1.9" in str(err.value) and "slot r1: op_state=2" in str(err.value)


def test_a_plain_containers_single_address_is_waited_for_as_before() -> None:
    plain = state(("r1", "10.0.0.5", "app-x", UP), ("r2", "10.0.0.6", "app-y", UP))
    FakeRuntime([plain]).wait_up("app", "app-x", timeout=1, addr="10.0.0.5")
    FakeRuntime([plain]).wait_up("app", "app-x", timeout=1)
    with pytest.raises(ProxyError) as err:
        FakeRuntime([plain]).wait_up("app", "app-x", timeout=0.3, addr="10.0.0.6")
    assert "(last: slot r1: op_state=2 admin=64 address=10.0.0.5)" in str(err.value)
    # one replica, one address: its slot is named after its tasks
    one = state(("r4", "10.0.1.7", TASKS, UP))
    FakeRuntime([one]).wait_up("app", "app-x", timeout=1, addr="10.0.1.7")


def test_wait_released_waits_for_every_replicas_slot() -> None:
    leaving = [("r1", "10.0.1.7", TASKS, MAINT), ("r2", "10.0.1.8", TASKS, UP)]
    rt = FakeRuntime([state(*leaving), state(*leaving[:1], ("r2", "10.0.1.8", TASKS, MAINT))])
    rt.wait_released("app", "app-x", timeout=5)
    assert rt.asked == 2
    with pytest.raises(ProxyError, match="slot r2 serves it"):
        FakeRuntime([state(*leaving)]).wait_released("app", "app-x", timeout=0.2)


def test_sessions_sum_every_slot_of_the_release_and_drained_waits_for_all() -> None:
    slots = state(
        ("r1", "10.0.1.7", TASKS, UP),
        ("r2", "10.0.1.8", TASKS, UP),
        ("r3", "10.0.0.5", "app-y", UP),
        ("r4", "10.0.1.9", TASKS, MAINT),
    )
    rt = FakeRuntime([slots])
    assert rt.sessions("app", "app-x") == 2 + 3 + 1
    assert rt.sessions("app", "app-y") == 4
    assert rt.sessions("app", "app-z") is None
    assert rt.wait_drained("app", "app-x", timeout=0.2).left == 6
    assert sum_sessions(STAT, "app", ["r1", "r9"]) == 2
    assert sum_sessions(STAT, "app", ["r9"]) is None


NODE = ("10.0.1.8", "10.0.0.5")  # a node's replicas: one of app's release x, one of quotes'


def two_services(app_r2: tuple[int, int], quotes_r1: tuple[int, int]) -> str:
    """Both services' slots, merged as the router answers (one header)."""
    app = state(("r1", "10.0.1.7", TASKS, UP), ("r2", "10.0.1.8", TASKS, app_r2))
    quotes = state(("r1", "10.0.0.5", "tasks.quotes-y", quotes_r1), backend="quotes")
    return app.rstrip("\n") + "\n" + quotes.split("\n", 2)[2]


def stat(app_r2: int, quotes_r1: int) -> str:
    return (
        "# pxname,svname,qcur,qmax,scur,smax\n"
        f"app,r1,0,0,7,9\napp,r2,0,0,{app_r2},9\nquotes,r1,0,0,{quotes_r1},9\n\n"
    )


def test_a_nodes_addresses_are_drained_once_every_slot_there_drains_and_is_idle() -> None:
    rt = FakeRuntime(
        [two_services(UP, UP), two_services(DRAIN, UP), two_services(DRAIN, DRAIN)],
        [stat(3, 1), stat(2, 1), stat(1, 0), stat(0, 0)],
    )
    got = rt.wait_addrs_drained(NODE, timeout=5)
    assert got.left == 0 and rt.asked == 4  # app/r1's 7 connections are elsewhere


def test_a_slot_still_taking_requests_at_the_bound_is_an_error_naming_it() -> None:
    rt = FakeRuntime([two_services(DRAIN, UP)], [stat(0, 0)])
    with pytest.raises(ProxyError) as err:
        rt.wait_addrs_drained(NODE, timeout=0.2)
    assert "did not drain the slots at 10.0.0.5, 10.0.1.8" in str(err.value)
    assert "quotes/r1 at 10.0.0.5 still take new requests" in str(err.value)


def test_connections_left_at_the_bound_are_the_answer_and_no_slot_there_none() -> None:
    rt = FakeRuntime([two_services(DRAIN, MAINT)], [stat(2, 1)])
    assert rt.wait_addrs_drained(NODE, timeout=0.2).left == 3
    assert FakeRuntime([two_services(UP, UP)]).wait_addrs_drained(("10.9.9.9",)).left == 0
