"""Fenced route writes: a run's writes of routes and frontends carry the deploy lock's create
revision (``lab.release.lock``, ``Etcd.put(..., fence)``), so a run whose lock is gone or taken
by another cannot write them, whether or not it noticed the loss. The lab's etcd client runs
against an etcd store in memory (``tests.integration.fakes.EtcdStore``)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from lab.errors import FencedOut, LabError
from lab.ports import frontends
from lab.ports.etcd import Etcd, Fence
from lab.release import apply, lock, plan, routes
from lab.release.model import Options
from lab.release.prod import ProdPorts
from tests.integration.fakes import EtcdStore, memory_etcd
from tests.unit.fake_ports import FakePorts, Tracking
from tests.unit.release_data import LIVE_A_WARM_D, SERVICE, A, B, D, R, cand, facts, srv

ROUTES = routes.PREFIX + "app"
OTHER = lock.Holder("ada@ws", 42, "2026-12-01T21:00:00+00:00", "deploy app cccccccccccc")


def stored(etcd: Etcd) -> routes.Routes:
    return routes.from_doc(etcd.get_json(ROUTES), "app")


def revisions(store: EtcdStore, key: str) -> tuple[int, int, int]:
    kv = store.kvs.get(key.encode())
    return (kv.create_revision, kv.mod_revision, kv.version) if kv else (0, 0, 0)


# The store keeps etcd's revisions: what the fence compares


def test_a_key_keeps_its_create_revision_until_it_is_deleted() -> None:
    etcd, store = memory_etcd()
    seen = []
    for step in (
        lambda: etcd.put("/k", b"1"),
        lambda: etcd.put("/k", b"2"),
        lambda: etcd.put("/other", b"x"),
        lambda: etcd.delete("/k"),
        lambda: etcd.delete("/k"),  # nothing to delete: the store's revision stays
        lambda: etcd.put("/k", b"3"),
    ):
        step()
        seen.append((store.revision, revisions(store, "/k")))
    assert seen == [
        (2, (2, 2, 1)),
        (3, (2, 3, 2)),
        (4, (2, 3, 2)),
        (5, (0, 0, 0)),
        (5, (0, 0, 0)),
        (6, (6, 6, 1)),
    ]


def test_a_fenced_write_goes_through_only_while_its_key_holds_that_revision() -> None:
    etcd, store = memory_etcd()
    etcd.put("/lock", b"me")
    fence = Fence("/lock", store.create_revision("/lock"))
    etcd.put("/lock", b"me, renewed")  # a change of value keeps the create revision
    etcd.put_json("/data", {"n": 1}, fence)
    etcd.delete("/lock")
    etcd.put("/lock", b"me")  # the same value again, created anew: another revision
    with pytest.raises(FencedOut) as err:
        etcd.put_json("/data", {"n": 2}, fence)
    with pytest.raises(FencedOut):
        etcd.delete("/data", fence)
    assert etcd.get_json("/data") == {"n": 1}
    assert (err.value.key, err.value.found) == ("/data", b"me")


# The lock's fence


def test_the_lock_yields_its_create_revision_as_its_fence() -> None:
    etcd, store = memory_etcd()
    with lock.held(etcd, "deploy app bbbbbbbbbbbb") as me:
        assert me.fence == Fence(lock.KEY, store.create_revision(lock.KEY))
        assert lock.current(etcd) == dataclasses.replace(me, fence=None)
        assert etcd.lease(lock.KEY) is not None
    assert lock.current(etcd) is None and store.leases == {}


def test_the_fence_survives_the_leases_renewals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lock, "TTL", 0.2)
    etcd, store = memory_etcd()
    lost: list[bool] = []
    with lock.held(etcd, "deploy app bbbbbbbbbbbb", lambda: lost.append(True)) as me:
        wait_until(lambda: store.asked.count("/v3/lease/keepalive") >= 4, "four renewals")
        etcd.put_json(ROUTES, R(srv(B, 100)).to_doc(), me.fence)
    assert me.fence is not None and stored(etcd) == R(srv(B, 100)) and lost == []


def wait_until(done: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    __tracebackhide__ = True
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        threading.Event().wait(0.01)


# How a run loses its lock (``lost``) without noticing it: the keeper's callback is not the
# fence's business; a paused process or a thread out of the main one never hears it


def expired(etcd: Etcd, store: EtcdStore) -> None:
    lease = etcd.lease(lock.KEY)
    assert lease is not None
    store.expire(lease)


def released_by_hand(etcd: Etcd, store: EtcdStore) -> None:
    lock.release(etcd)  # what 'invoke lock.release' does


def taken_by_another(etcd: Etcd, store: EtcdStore) -> None:
    expired(etcd, store)
    assert isinstance(etcd.create(lock.KEY, OTHER.to_json(), etcd.grant(20)), Fence)


def taken_again_alike(etcd: Etcd, store: EtcdStore) -> None:
    """Deleted, then created with the very value it had: only its revision tells them apart."""
    value = etcd.get(lock.KEY)
    assert value is not None
    expired(etcd, store)
    etcd.create(lock.KEY, value, etcd.grant(20))


LOSSES = [expired, released_by_hand, taken_by_another, taken_again_alike]


@pytest.mark.parametrize("lose", LOSSES, ids=[f.__name__ for f in LOSSES])
def test_writes_outside_a_run_stay_plain(lose: Callable[[Etcd, EtcdStore], None]) -> None:
    etcd, store = memory_etcd()
    with lock.held(etcd, "deploy app bbbbbbbbbbbb"):
        lose(etcd, store)
        etcd.put_json(ROUTES, R(srv(A, 100)).to_doc())  # e.g. a control's own switch
    assert stored(etcd) == R(srv(A, 100))


# A run under the lock: ``apply`` with ports whose route writes carry the fence, as ProdPorts's


@dataclass
class FencedPorts(FakePorts):
    """``FakePorts`` whose route writes go to a route store with the run's fence; ``lose``
    runs once, as the first route write of step ``lose_at`` begins."""

    store: Etcd | None = None
    fence: Fence | None = None
    lose_at: str = ""
    lose: Callable[[], None] | None = None

    def write_routes(self, new: routes.Routes) -> None:
        with self._call("write_routes"):
            if self.lose is not None and self.step == self.lose_at:
                self.lose, lose = None, self.lose
                lose()
            assert self.store is not None
            self.store.put_json(new.key, new.to_doc(), self.fence)
            self.routes[new.service] = new


BLUEGREEN = plan.deploy(facts(LIVE_A_WARM_D), cand(B), Options())


def run(
    lose_at: str = "", lose: Callable[[Etcd, EtcdStore], None] = expired
) -> tuple[apply.Outcome, FencedPorts, Etcd, dict[str, Any]]:
    """The blue/green deploy of B under the lock, from A live (D warm); with ``lose_at``, the
    lock lost as that step writes routes. ``at_loss``: the stored routes then."""
    etcd, store = memory_etcd()
    etcd.put_json(ROUTES, LIVE_A_WARM_D.to_doc())
    at_loss: dict[str, Any] = {}

    def loss() -> None:
        at_loss["routes"], at_loss["revisions"] = stored(etcd), revisions(store, ROUTES)
        lose(etcd, store)

    with lock.held(etcd, "deploy app bbbbbbbbbbbb") as me:
        ports = FencedPorts(
            containers={A: True, D: True},
            routes={"app": LIVE_A_WARM_D},
            frontends={"app": 8001},
            store=etcd,
            fence=me.fence,
            lose_at=lose_at,
            lose=loss if lose_at else None,
        )
        outcome = apply.apply(BLUEGREEN, ports, Tracking(out=None, ports=ports))
    at_loss["revisions_after"] = revisions(store, ROUTES)
    return outcome, ports, etcd, at_loss


def test_a_run_that_holds_its_lock_writes_its_routes() -> None:
    outcome, ports, etcd, _ = run()
    assert (outcome.result, outcome.error) == ("succeeded", None)
    assert stored(etcd) == R(srv(B, 100), srv(A, 0, drain=True)) == ports.routes["app"]


@pytest.mark.parametrize("lose", LOSSES, ids=[f.__name__ for f in LOSSES])
@pytest.mark.parametrize(
    ("at", "not_undone"), [("stage", "stage, start"), ("switch", "switch, stage, start")]
)
def test_a_run_that_lost_its_lock_has_its_next_route_write_refused(
    lose: Callable[[Etcd, EtcdStore], None], at: str, not_undone: str
) -> None:
    outcome, ports, etcd, at_loss = run(at, lose)
    err = outcome.error
    assert (outcome.result, outcome.stage) == ("failed", at)
    assert isinstance(err, FencedOut) and (err.key, err.lock_key) == (ROUTES, lock.KEY)
    # the routes as they were when the lock was lost: not one write since, the undo's neither
    assert stored(etcd) == at_loss["routes"]
    assert at_loss["revisions_after"] == at_loss["revisions"]
    # the undo stopped at its first refused write: nothing the routes may send traffic to
    # (the candidate, staged or not) was removed after it
    assert outcome.undone == () and ports.containers == {A: True, B: True, D: True}
    assert len(outcome.undo_errors) == 1
    assert outcome.undo_errors[0].endswith(f"The undo stopped there; not undone: {not_undone}.")
    text = str(err)
    assert f"nothing was written to {ROUTES}" in text and "'invoke lock.status'" in text
    assert f"Failed at step '{at}'" in text and "\nUndone: nothing. Some undo failed (" in text
    if lose is taken_by_another:
        assert err.found == OTHER.to_json() and "another run holds it now: ada@ws (pid 42)" in text
    elif lose is not taken_again_alike:
        assert err.found is None and "the lock is gone: its lease expired" in text


# ProdPorts: the run's fence on every write of routes and frontends


@dataclass
class StubLab:
    etcd: Etcd
    runtime: Any = None

    def __post_init__(self) -> None:
        self.runtime = self  # the proxy's answer: every frontend is up at once

    def wait_frontend(self, doc: Any, timeout: float = 0) -> None:
        """Up."""


def test_prod_ports_fence_their_writes_of_routes_and_frontends() -> None:
    etcd, store = memory_etcd()
    with lock.held(etcd, "deploy app bbbbbbbbbbbb") as me:
        ports = ProdPorts(StubLab(etcd), SERVICE, lambda text: None, fence=me.fence)  # type: ignore[arg-type]
        ports.write_routes(R(srv(B, 100)))
        assert ports.write_frontend(cand(B)) is True  # a new service: its document published
        published = etcd.get_json(frontends.prefix() + "app")
        taken_by_another(etcd, store)
        with pytest.raises(FencedOut):
            ports.write_routes(R(srv(A, 100)))
        with pytest.raises(FencedOut):
            ports.restore_frontend("app")  # its undo: the document would go
    assert stored(etcd) == R(srv(B, 100))
    assert etcd.get_json(frontends.prefix() + "app") == published


# The error


@pytest.mark.parametrize(
    ("found", "says"),
    [
        (None, "the lock is gone: its lease expired (no renewal reached etcd in time) or "),
        (OTHER.to_json(), f"another run holds it now: ada@ws (pid 42) since {OTHER.since}: "),
        (b"not a holder", "another run holds it now: not a holder."),
    ],
)
def test_a_refused_write_says_what_was_refused_why_and_what_next(
    found: bytes | None, says: str
) -> None:
    err = FencedOut(f"write {ROUTES}", ROUTES, lock.KEY, 41, found)
    text = str(err)
    assert isinstance(err, LabError)
    assert text.startswith(
        f"could not write {ROUTES}: this run no longer holds the lock it took ({lock.KEY}, "
        "created at revision 41); "
    )
    assert says in text and f"nothing was written to {ROUTES}." in text
    assert text.splitlines()[-1].startswith("Next step: 'invoke lock.status' shows who holds")
