"""Pinned releases: kept whatever ``retain`` says; each owner lifts only its own pin; bad input
refused with what is expected."""

from __future__ import annotations

import pytest

from lab.errors import LabError
from lab.release import history, pins, records, routes
from tests.unit.fake_ports import FakeEtcd

A, B, C, D, E = (f"{i:x}" * 12 for i in range(10, 15))


def test_a_release_pinned_by_two_owners_stays_pinned_until_both_lift_it() -> None:
    etcd = FakeEtcd()
    pins.pin(etcd, "app", A, "user")
    pins.pin(etcd, "app", A, "suite")
    pins.pin(etcd, "quotes", B, "user")
    assert pins.pinned(etcd, "app") == {A} and pins.pinned(etcd, "quotes") == {B}
    pins.unpin(etcd, "app", A, "suite")
    assert pins.pinned(etcd, "app") == {A}  # the user's pin holds
    pins.unpin(etcd, "app", A, "user")
    assert pins.pinned(etcd, "app") == set()


@pytest.mark.parametrize(
    ("service", "release", "owner", "says"),
    [
        ("App!", A, "user", "not a service name"),
        ("app", "HEAD", "user", "12 hex digits"),
        ("app", A.upper(), "user", "12 hex digits"),
        ("app", A, "root", "cannot pin"),
    ],
)
def test_a_bad_pin_is_refused_saying_what_is_expected(
    service: str, release: str, owner: str, says: str
) -> None:
    with pytest.raises(LabError, match=says):
        pins.key(service, release, owner)


def test_keys_of_another_shape_or_service_are_not_pins() -> None:
    keys = [
        f"{pins.PREFIX}app/{A}/user",
        f"{pins.PREFIX}app/{B}",  # no owner
        f"{pins.PREFIX}app/zz/user",
        f"{pins.PREFIX}app-two/{C}/user",
    ]
    assert pins.parse(keys, "app") == {A}


def test_retention_keeps_a_pinned_release_beyond_retain_and_only_if_in_the_registry() -> None:
    live = routes.Routes("app", (routes.Server(E, f"app-{E}", 100),))
    kept, pruned = routes.retention([A, B, C, D, E], [A, B, C, D, E], live, 2, pinned={A, "f" * 12})
    assert kept == [E, D, A] and pruned == [B, C]


def test_the_releases_table_says_pinned_for_a_pinned_release_still_in_the_registry() -> None:
    def rec(rel: str) -> records.Record:
        return records.Record(
            "deploy", "app", rel, None, "", "bluegreen", "me", f"t-{rel}", 1.0, "succeeded"
        )

    live = routes.Routes("app", (routes.Server(C, f"app-{C}", 100),))
    got = history.rows([rec(A), rec(B), rec(C)], live, {A, C}, {A, B})
    assert [(r.release, r.status) for r in got] == [
        (C, "live"),
        (B, "pruned"),
        (A, "retained, pinned"),
    ]
