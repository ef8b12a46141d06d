"""The drained-addresses document (``/cdlab/drained/<key>``): read and refused as the other
documents are; while it exists every slot at its addresses drains, whatever its release, and
serves again once it is gone (``slots.plan``, ``runtime.apply_routes``, the supervisor)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cdlab_proxy import document, runtime, slots
from cdlab_proxy.config import Settings
from cdlab_proxy.supervisor import Supervisor

from tests.unit.proxy_fakes import APP, MAINT, UP, FakeProcess, apply

D = document.Server
GOOD = {"addrs": ["10.100.201.7", "10.100.201.9"], "why": "restart of prod-2"}


def test_a_drained_addresses_document_reads_back() -> None:
    got = document.parse_drained(GOOD, "prod-2")
    assert got == document.Drained("prod-2", ("10.100.201.7", "10.100.201.9"), "restart of prod-2")
    assert document.drained_doc(got) == GOOD
    assert document.parse_drained({"addrs": []}, "x") == document.Drained("x", ())


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (["10.0.0.1"], "drained[prod-2]"),
        ({"why": "x"}, "drained[prod-2].addrs"),
        ({"addrs": "10.0.0.1"}, "drained[prod-2].addrs"),
        ({"addrs": ["10.0.0"]}, "drained[prod-2].addrs"),
        ({"addrs": ["010.0.0.1"]}, "drained[prod-2].addrs"),
        ({"addrs": ["::1"]}, "drained[prod-2].addrs"),
        ({"addrs": ["10.0.0.1 "]}, "drained[prod-2].addrs"),
        ({"addrs": [167772161]}, "drained[prod-2].addrs"),
        ({"addrs": [], "why": "a\nb"}, "drained[prod-2].why"),
        ({"addrs": [], "why": "x" * 201}, "drained[prod-2].why"),
        ({"addrs": [], "why": None}, "drained[prod-2].why"),
    ],
)
def test_bad_drained_documents_name_the_field(doc: Any, field: str) -> None:
    with pytest.raises(document.DocumentError) as err:
        document.parse_drained(doc, "prod-2")
    assert err.value.field == field and err.value.expected


THREE = [slots.Slot(f"r{i}", "tasks.app-x", 256, UP, 2, f"10.0.1.{i}") for i in (1, 2, 3)]
WANT = [D("x", "app-x", 100, replicas=3)]


def test_the_slots_at_drained_addresses_drain_and_serve_again_once_undrained() -> None:
    cmds = slots.plan(APP, THREE, WANT, drained={"10.0.1.2", "10.9.9.9"})
    assert cmds == ["set server app/r2 state drain"]
    drained = apply(THREE, cmds)
    assert slots.plan(APP, drained, WANT, drained={"10.0.1.2"}) == []
    assert slots.plan(APP, drained, WANT) == ["set server app/r2 state ready"]


def test_a_draining_release_stays_drained_when_its_addresses_are_undrained() -> None:
    warm = [D("x", "app-x", 0, drain=True, replicas=3)]
    draining = apply(THREE, slots.plan(APP, THREE, warm, drained={"10.0.1.2"}))
    assert all(s.draining for s in draining)
    assert slots.plan(APP, draining, warm) == []


def test_a_new_slot_takes_an_address_that_is_not_drained_first() -> None:
    used = [slots.Slot(f"r{i}", f"app-old{i}", 0, MAINT, 0, f"10.0.0.{i}") for i in (1, 2)]
    ips = {"tasks.app-x": ("10.0.1.7", "10.0.1.8")}
    want = [D("x", "app-x", 100, replicas=2)]
    got = slots.plan(APP, used, want, ips, drained={"10.0.1.7"})
    assert [c for c in got if " addr " in c or " state " in c] == [
        "set server app/r1 addr 10.0.1.8",
        "set server app/r1 state ready",
        "set server app/r2 addr 10.0.1.7",
        "set server app/r2 state drain",
    ]


def test_apply_routes_drains_the_slots_and_says_which_addresses() -> None:
    proc, said = FakeProcess(), []
    wanted = slots.Wanted((D("x", "app-x", 100, replicas=2),), (), ())

    def apply_routes(drained: frozenset[str]) -> int:
        return runtime.apply_routes(
            proc,  # type: ignore[arg-type]
            APP,
            wanted,
            "/run/app.map",
            lambda names: {},
            said.append,
            "/run/app.releases",
            drained,
        )

    apply_routes(frozenset())
    proc.resolve({"tasks.app-x": ["10.0.1.7", "10.0.1.8"]})
    assert apply_routes(frozenset({"10.0.1.8"})) == 1
    assert proc.sent[-1] == "set server app/r2 state drain"
    assert said[-1] == "app: applied 1 change(s) -> x=100 x2; drained: 10.0.1.8"
    assert apply_routes(frozenset()) == 1 and proc.sent[-1] == "set server app/r2 state ready"


class Store:
    def __init__(self, docs: dict[str, object]) -> None:
        self.docs = {k: json.dumps(v).encode() for k, v in docs.items()}

    def get_prefix(self, prefix: str) -> dict[str, bytes]:
        return {k: v for k, v in self.docs.items() if k.startswith(prefix)}


def test_the_supervisor_drains_every_documents_addresses_and_says_a_bad_one_once() -> None:
    said: list[str] = []
    store = Store(
        {
            "/cdlab/drained/prod-2": GOOD,
            "/cdlab/drained/prod-3": {"addrs": ["10.100.201.11"]},
            "/cdlab/drained/bad": {"addrs": ["nope"]},
            "/cdlab/routes/app": {"service": "app", "servers": []},
        }
    )
    sup = Supervisor(Settings(run_dir="/run/p"), store, say=said.append)
    assert sup._drained() == {"10.100.201.7", "10.100.201.9", "10.100.201.11"}
    assert sup._drained() == {"10.100.201.7", "10.100.201.9", "10.100.201.11"}
    assert len(said) == 1 and said[0].startswith("drained addresses 'bad' ignored: bad value for")
