"""A release of N replicas at the proxy (``cdlab_proxy.slots``, pure): K slots named
``tasks.<host>`` per release, each seeded with an address none of the others holds, a leaving
release freeing them all, and weights per slot that keep every release's share."""

from __future__ import annotations

import itertools

import pytest
from cdlab_proxy import document, runtime, slots

from tests.unit.proxy_fakes import APP, MAINT, UP, FakeProcess, apply, fresh

D = document.Server


def test_a_release_of_three_replicas_takes_three_slots_of_its_tasks_name() -> None:
    got = slots.plan(APP, fresh(4), [D("x", "app-x", 100, replicas=3)])
    assert got == [
        cmd
        for r in ("r1", "r2", "r3")
        for cmd in (
            f"set server app/{r} fqdn tasks.app-x",
            f"set server app/{r} weight 256",
            f"set server app/{r} state ready",
        )
    ]


def test_used_slots_take_distinct_addresses_at_once_and_then_the_plan_is_empty() -> None:
    old = [slots.Slot(f"r{i}", f"app-old{i}", 0, MAINT, 0, f"10.0.0.{i}") for i in (1, 2, 3)]
    want = [D("x", "app-x", 100, replicas=3)]
    ips = {"tasks.app-x": ("10.0.1.7", "10.0.1.8", "10.0.1.9")}
    got = slots.plan(APP, old, want, ips)
    assert [c for c in got if " addr " in c] == [
        "set server app/r1 addr 10.0.1.7",
        "set server app/r2 addr 10.0.1.8",
        "set server app/r3 addr 10.0.1.9",
    ]
    assert slots.plan(APP, apply(old, got), want, ips) == []


def test_an_address_a_kept_slot_holds_is_not_given_again() -> None:
    """Replicas raised from 2 to 3: the third slot gets the one address nobody has."""
    have = [
        slots.Slot("r1", "tasks.app-x", 256, UP, 2, "10.0.1.8"),
        slots.Slot("r2", "tasks.app-x", 256, UP, 2, "10.0.1.7"),
        slots.Slot("r3", "app-old", 0, MAINT, 0, "10.0.0.3"),
    ]
    got = slots.plan(
        APP,
        have,
        [D("x", "app-x", 100, replicas=3)],
        {"tasks.app-x": ("10.0.1.7", "10.0.1.8", "10.0.1.9")},
    )
    assert got == [
        "set server app/r3 fqdn tasks.app-x",
        "set server app/r3 addr 10.0.1.9",
        "set server app/r3 weight 256",
        "set server app/r3 state ready",
    ]


def test_with_no_address_to_give_a_replica_waits_for_dns_in_a_slot_that_never_had_one() -> None:
    used = slots.Slot("r1", "app-old", 0, MAINT, 0, "10.0.0.3")
    got = slots.plan(APP, [used, *fresh(1, 2)], [D("x", "app-x", 100, replicas=1)], {})
    assert got == [
        "set server app/r2 fqdn tasks.app-x",
        "set server app/r2 weight 256",
        "set server app/r2 state ready",
    ]


def test_a_replica_never_serves_at_its_slots_previous_address() -> None:
    """Only used slots are free and DNS has no address left: the slot takes the name but stays
    in maintenance (a plain container's would be made ready, as it always was); once an
    address is known it takes it and serves."""
    used = slots.Slot("r1", "app-old", 0, MAINT, 0, "10.0.0.3")
    want = [D("x", "app-x", 100, replicas=1)]
    first = slots.plan(APP, [used], want, {})
    assert first == ["set server app/r1 fqdn tasks.app-x", "set server app/r1 weight 256"]
    held = apply([used], first)
    assert slots.plan(APP, held, want, {}) == []
    assert slots.plan(APP, held, want, {"tasks.app-x": ("10.0.1.7",)}) == [
        "set server app/r1 addr 10.0.1.7",
        "set server app/r1 state ready",
    ]
    plain = slots.plan(APP, [used], [D("x", "app-x", 100)], {})
    assert plain[-1] == "set server app/r1 state ready"


def test_a_leaving_release_frees_all_its_slots_and_fewer_replicas_free_the_extra() -> None:
    have = [slots.Slot(f"r{i}", "tasks.app-x", 256, UP, 2, f"10.0.1.{i}") for i in (1, 2, 3)]
    gone = slots.plan(APP, have, [])
    assert gone == [f"set server app/r{i} state maint" for i in (1, 2, 3)]
    fewer = slots.plan(APP, have, [D("x", "app-x", 100, replicas=2)])
    assert fewer == ["set server app/r3 state maint"]


def test_two_slots_at_one_address_are_parted_when_a_spare_one_is_known() -> None:
    """HAProxy keeps an address a slot holds while DNS answers it, even when another slot of
    that name holds it too (the address left over then has no slot): the second moves."""
    have = [slots.Slot(f"r{i}", "tasks.app-x", 256, UP, 2, "10.0.1.7") for i in (1, 2)]
    want = [D("x", "app-x", 100, replicas=2)]
    got = slots.plan(APP, have, want, {"tasks.app-x": ("10.0.1.7", "10.0.1.8")})
    assert got == ["set server app/r2 addr 10.0.1.8"]
    assert slots.plan(APP, have, want, {"tasks.app-x": ("10.0.1.7",)}) == []


def test_more_slots_than_the_backend_has_are_refused_with_the_counts() -> None:
    want = [D("a", "app-a", 100, replicas=3), D("b", "app-b", 0, replicas=2)]
    with pytest.raises(ValueError) as err:
        slots.plan(APP, fresh(4), want)
    assert str(err.value) == (
        "backend app: more than 4 releases and replicas routed: the routes need 5 slots "
        "(app-a: 3, app-b: 2), the backend has 4"
    )


def test_a_plain_container_takes_the_first_of_its_addresses_as_before() -> None:
    used = slots.Slot("r1", "app-old", 0, MAINT, 0, "10.0.0.3")
    want = [D("x", "app-x", 100)]
    one = slots.plan(APP, [used], want, {"app-x": "10.0.1.7"})
    assert slots.plan(APP, [used], want, {"app-x": ("10.0.1.7",)}) == one
    assert "set server app/r1 addr 10.0.1.7" in one and "fqdn app-x" in one[0]


def test_the_matched_candidate_runs_as_its_server_in_the_pool() -> None:
    rule = document.Match("header", "X-Canary", "1", "b" * 12, "app-" + "b" * 12)
    pool = (D("a" * 12, "app-" + "a" * 12, 100, replicas=3), D("b" * 12, rule.host, 0, replicas=2))
    wanted = slots.wanted(document.Routes(APP, pool, rule))
    assert wanted.matched == (D("b" * 12, rule.host, 100, replicas=2),)
    got = slots.plan("app-match", fresh(slots.MATCH_SLOTS), wanted.matched)
    assert sum(" fqdn tasks.app-" in c for c in got) == 2


def test_the_slot_counts_hold_three_releases_of_the_most_replicas() -> None:
    most = document.MAX_REPLICAS
    assert (slots.SLOTS, slots.MATCH_SLOTS) == (3 * most, most) == (24, 8)
    three = [D(r, f"app-{r}", w, replicas=most) for r, w in (("a", 90), ("b", 0), ("c", 10))]
    assert len(slots.plan(APP, fresh(slots.SLOTS), three)) == 3 * 3 * most


# -- weights -------------------------------------------------------------------------------


def test_plain_containers_keep_their_weights() -> None:
    servers = [D("a", "app-a", 90), D("b", "app-b", 10), D("c", "app-c", 0, drain=True)]
    assert slots.slot_weights(servers) == {"app-a": 90, "app-b": 10, "app-c": 0}
    assert slots.slot_weights([]) == {}


def test_weights_with_replicas_put_the_largest_at_256_and_keep_some_for_any_weight() -> None:
    got = slots.slot_weights(
        [D("a", "app-a", 99, replicas=1), D("b", "app-b", 1, replicas=8), D("c", "app-c", 0)]
    )
    assert got == {"app-a": 256, "app-b": 1, "app-c": 0}
    assert slots.slot_weights([D("a", "app-a", 0, replicas=3)]) == {"app-a": 0}


def share(servers: list[document.Server], host: str) -> float:
    """``host``'s share of the traffic, in points, with every slot of every release UP."""
    weights = slots.slot_weights(servers)
    total = sum(weights[s.host] * slots.count(s) for s in servers)
    mine = next(s for s in servers if s.host == host)
    return 100 * weights[host] * slots.count(mine) / total


@pytest.mark.parametrize("step", [10, 25, 50])
def test_every_canary_step_keeps_its_share_within_one_and_a_half_points(step: int) -> None:
    """Live and candidate of 0 (a plain container) to 8 replicas each, with a warm release of
    any replicas at weight 0 beside them."""
    worst = 0.0
    for live, cand, warm in itertools.product(range(9), range(9), (0, 8)):
        if not (live or cand):
            continue
        servers = [
            D("a", "app-a", 100 - step, replicas=live),
            D("w", "app-w", 0, drain=True, replicas=warm),
            D("b", "app-b", step, replicas=cand),
        ]
        weights = slots.slot_weights(servers)
        assert max(weights.values()) == document.MAX_WEIGHT and weights["app-w"] == 0
        worst = max(worst, abs(share(servers, "app-b") - step))
    assert worst <= 1.5, f"the candidate's share is off by {worst:.2f} points at {step} %"


# -- the supervisor's side ------------------------------------------------------------------


def test_the_supervisor_looks_up_a_tasks_name_only_while_it_lacks_slots() -> None:
    proc, asked, said = FakeProcess(), [], []

    def lookup(names: list[str]) -> dict[str, tuple[str, ...]]:
        asked.append(names)
        return {n: ("10.0.1.7", "10.0.1.8") for n in names}

    wanted = slots.Wanted((D("x", "app-x", 100, replicas=2),), (), ())
    args = (APP, wanted, "/run/app.map", lookup, said.append, "/run/app.releases")
    assert runtime.apply_routes(proc, *args) > 0  # type: ignore[arg-type]
    assert asked == [["tasks.app-x"]]
    maps = [c for c in proc.sent if c.startswith("set map /run/app.releases")]
    assert maps == ["set map /run/app.releases app/r1 x", "set map /run/app.releases app/r2 x"]
    assert said[-1] == "app: applied 8 change(s) -> x=100 x2"
    assert runtime.apply_routes(proc, *args) == 0  # type: ignore[arg-type]
    assert asked[-1] == ["tasks.app-x"]  # its slots still wait for DNS
    proc.resolve({"tasks.app-x": ["10.0.1.7", "10.0.1.8"]})
    assert runtime.apply_routes(proc, *args) == 0  # type: ignore[arg-type]
    assert asked[-1] == []  # in shape: no DNS lookup


def test_two_slots_on_one_address_are_parted_at_the_next_pass() -> None:
    """The plan gave a slot a spare address from state read a moment before, while HAProxy's
    resolver gave that address to another slot of the name: both serve one replica, the third
    gets nothing. The next pass (a resync) looks the name up again and moves one of them."""
    proc, asked, said = FakeProcess(), [], []
    ips = ("10.0.1.50", "10.0.1.51", "10.0.1.52")

    def lookup(names: list[str]) -> dict[str, tuple[str, ...]]:
        asked.append(names)
        return {n: ips for n in names}

    name = "tasks.app-x"
    proc.slots[APP] = [
        slots.Slot("r1", name, 1, UP, 2, "10.0.1.50"),
        slots.Slot("r2", name, 1, UP, 2, "10.0.1.50"),
        slots.Slot("r3", name, 1, UP, 2, "10.0.1.52"),
        *fresh(1, 4),
    ]
    wanted = slots.Wanted((D("x", "app-x", 100, replicas=3),), (), ())
    args = (APP, wanted, "/run/app.map", lookup, said.append, "")
    assert slots.short(proc.slots[APP], wanted.servers[0])
    assert runtime.apply_routes(proc, *args) > 0  # type: ignore[arg-type]
    assert asked[-1] == [name] and "set server app/r2 addr 10.0.1.51" in proc.sent
    assert sorted(s.addr for s in proc.slots[APP] if s.fqdn == name) == list(ips)
    assert not slots.short(proc.slots[APP], wanted.servers[0])
    assert runtime.apply_routes(proc, *args) == 0  # type: ignore[arg-type]
    assert asked[-1] == []  # in shape again: no lookup


def test_a_leaving_slot_waiting_for_dns_is_forced_into_maintenance() -> None:
    """Its address left DNS (a replica gone with its node; a container's name after HAProxy's
    ``hold nx``, 30 s), then its release left the routes: once the name answers again HAProxy
    makes it serve (seen with HAProxy 2.6: "UP/READY (resolves again)"), unless it is in
    maintenance by command."""
    waiting = slots.Slot("r1", "app-x", 100, 0x60, 0)  # DNS maintenance, name from the CLI
    assert waiting.in_maintenance and not waiting.forced_maintenance
    assert slots.plan(APP, [waiting], []) == ["set server app/r1 state maint"]
    assert slots.plan(APP, apply([waiting], ["set server app/r1 state maint"]), []) == []
