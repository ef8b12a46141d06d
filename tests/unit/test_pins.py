"""Pinned releases: kept whatever ``retain`` says; each owner lifts only its own pin; bad input
refused with what is expected."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest

from lab.errors import LabError
from lab.ports.etcd import Fence
from lab.proof import restore
from lab.release import history, pins, records, routes
from tests.unit.fake_ports import FakeEtcd

A, B, C, D, E = (f"{i:x}" * 12 for i in range(10, 15))


RUN = "suite-0123456789ab"


def test_a_release_pinned_by_two_owners_stays_pinned_until_both_lift_it() -> None:
    etcd = FakeEtcd()
    pins.pin(etcd, "app", A)
    pins.pin(etcd, "app", A, RUN)
    pins.pin(etcd, "quotes", B)
    assert pins.pinned(etcd, "app") == {A} and pins.pinned(etcd, "quotes") == {B}
    assert pins.owners(etcd, "app", A) == [RUN, "user"]
    pins.unpin(etcd, "app", A, RUN)
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
        ("app", A, "suite", "cannot pin"),
        ("app-", A, "user", "not a service name"),
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
        f"{pins.PREFIX}app/{A}/{RUN}",
        f"{pins.PREFIX}app/{B}",  # no owner
        f"{pins.PREFIX}app/{C}/",  # an empty owner
        f"{pins.PREFIX}app/{D}/somebody",
        f"{pins.PREFIX}app/zz/user",
        f"{pins.PREFIX}app-two/{C}/user",
    ]
    assert pins.parse(keys, "app") == {A: [RUN, "user"]}


def test_retention_keeps_a_pinned_release_beyond_retain_and_only_if_in_the_registry() -> None:
    live = routes.Routes("app", (routes.Server(E, f"app-{E}", 100),))
    kept, pruned = routes.retention([A, B, C, D, E], [A, B, C, D, E], live, 2, pinned={A, "f" * 12})
    assert kept == [E, D, A] and pruned == [B, C]


def test_the_releases_table_says_who_pins_a_release_still_in_the_registry() -> None:
    def rec(rel: str) -> records.Record:
        return records.Record(
            "deploy", "app", rel, None, "", "bluegreen", "me", f"t-{rel}", 1.0, "succeeded"
        )

    live = routes.Routes("app", (routes.Server(C, f"app-{C}", 100),))
    got = history.rows([rec(A), rec(B), rec(C)], live, {A, C}, {A: ["user"], B: ["user"], C: [RUN]})
    assert [(r.release, r.status, r.pinned) for r in got] == [
        (C, "live", (RUN,)),
        (B, "pruned", ()),  # gone from the registry: its pin keeps nothing
        (A, "retained", ("user",)),
    ]
    assert history.render_releases(got).splitlines()[0].split()[-1] == "PINNED"


def test_a_pinned_release_never_made_live_is_listed_last_as_retained() -> None:
    """Pushed by a run that failed (or a canary that aborted) and then pinned: retention keeps
    it, so the table shows it, after every release that was made live; a pin of a release gone
    from the registry shows nothing."""
    made = records.Record("deploy", "app", A, None, "", "bluegreen", "me", "t-a", 1.0, "succeeded")
    failed = records.Record("deploy", "app", B, A, "", "bluegreen", "me", "t-b", 1.0, "failed")
    live = routes.Routes("app", (routes.Server(A, f"app-{A}", 100),))
    got = history.rows([made, failed], live, {A, B}, {B: ["user"], D: ["user"]})
    assert [(r.release, r.status, r.last_made_live, r.by, r.pinned) for r in got] == [
        (A, "live", "t-a", "me", ()),
        (B, "retained", "-", "-", ("user",)),
    ]


class LeasedEtcd(FakeEtcd):
    """FakeEtcd with leases: a key created with one is listed in ``leased``."""

    def __init__(self) -> None:
        super().__init__()
        self.leased: dict[str, str] = {}
        self.granted: list[int] = []

    def grant(self, ttl: int) -> str:
        self.granted.append(ttl)
        return str(len(self.granted))

    def create(self, key: str, value: bytes, lease: str | None = None) -> Fence | bytes:
        if lease:
            self.leased[key] = lease
        return super().create(key, value, lease)


def test_a_run_pins_what_it_puts_back_on_a_lease_and_lifts_only_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    etcd = LeasedEtcd()
    lab = SimpleNamespace(etcd=etcd, config=None)
    monkeypatch.setattr(restore, "live_releases", lambda _lab: {"app": A, "quotes": B})
    monkeypatch.setattr(restore.devloop, "clone_head", lambda _config: "")
    pins.pin(etcd, "app", A)  # the user's
    other = restore.hold(lab)  # type: ignore[arg-type]  # another run beside this one
    held = restore.hold(lab)  # type: ignore[arg-type]
    assert held.live == {"app": A, "quotes": B}
    assert set(held.keys) <= set(etcd.leased) and etcd.granted == [restore.PIN_HOURS * 3600] * 2
    restore.let_go(lab, held)  # type: ignore[arg-type]
    assert pins.owners(etcd, "app", A) == sorted(["user", other.keys[0].rsplit("/", 1)[1]])
    assert pins.pinned(etcd, "quotes") == {B}  # the other run's pin stays
    restore.let_go(lab, other)  # type: ignore[arg-type]
    assert pins.pinned(etcd, "quotes") == set() and pins.owners(etcd, "app", A) == ["user"]


def test_the_releases_json_is_a_list_newest_first_with_nulls_for_what_is_unknown() -> None:
    made = records.Record("deploy", "app", A, None, "", "bluegreen", "me", "t-a", 1.0, "succeeded")
    live = routes.Routes("app", (routes.Server(A, f"app-{A}", 100),))
    got = history.rows([made], live, {A, B}, {B: ["user"]})
    assert json.loads(history.releases_json(got)) == [
        {"release": A, "status": "live", "last_made_live": "t-a", "by": "me", "pinned": []},
        {
            "release": B,
            "status": "retained",
            "last_made_live": None,
            "by": None,
            "pinned": ["user"],
        },
    ]
    secret = "q2W_e3R-t4Y5u6I7o8P9"
    told = dataclasses.replace(made, error=f"refused with password {secret}")
    as_json = json.loads(records.as_json(told, [secret], switch_to_all_ms=12.5))
    assert as_json["release"] == A and as_json["switch_to_all_ms"] == 12.5
    assert secret not in json.dumps(as_json)  # redacted like every record that leaves the lab
