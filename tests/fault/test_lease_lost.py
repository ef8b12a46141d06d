"""A deploy that lost the deploy lock cannot write routes, under load (100 req/s through the
proxy, a fifth of it registrations).

The deploy runs in a thread of the test (as in ``test_control_plane_down``): the lock's keeper
cannot interrupt it there, any more than a process paused past its lease, so the run goes on
as if it held the lock; its fence is what stops it. It pauses as its switch begins (failpoint
``switch=sleep``); meanwhile the test revokes the lease of its lock with the operator's etcd
client (what a lease's expiry does: the key goes) and takes the lock itself, as the next
holder. When the pause ends, the switch's route write is refused.

What must hold: the deploy fails with the fencing error at its switch; the routes in etcd are
exactly as when the lock was lost (the live release unchanged); 0 failed requests, every one
answered by the live release; the fenced run leaves the next holder's lock alone. The next
holder then clears what the run left (its candidate, staged at weight 0 and running) with its
own fenced write, and lets go: the routes are as before the deploy, no candidate container is
left, the lock is free.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lab.errors import FencedOut
from lab.estate.state import State
from lab.progress import Progress
from lab.proof import load, loadreport
from lab.release import api as release
from lab.release import lock, pipeline
from tests.conftest import FaultRow
from tests.fault.test_control_plane_down import _a_new_commit, _lock_free, _wait
from tests.fault.test_fault_matrix import RATE, Background, StageStarts, candidates_left

pytestmark = pytest.mark.xdist_group("prod")
PAUSE = 10  # seconds the deploy waits as its switch begins: the lock changes hands meanwhile
SWITCH = "] switch: all traffic to"  # the switch stage's progress line


def test_a_deploy_that_lost_its_lock_cannot_write_routes(
    lab: State, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault_row: FaultRow
) -> None:
    change, sha = _a_new_commit(lab, tmp_path / "clone")
    etcd = release.route_store(lab)
    before = release.current_routes(lab, "app")
    live = before.live
    monkeypatch.setenv("CDLAB_FAILPOINTS", f"switch=sleep:{PAUSE}")
    switching = StageStarts("==> [")
    with load.running(rate=RATE, name="fault-lease-lost") as traffic:
        worker = Background(lambda: pipeline.deploy(change, Progress(out=switching), "app", "HEAD"))
        _wait("the switch starts", lambda: SWITCH in switching.getvalue(), 300)
        lease = etcd.lease(lock.KEY)
        assert lease is not None, "the deploy holds no lock as its switch begins"
        traffic.mark("the deploy's lease revoked")
        etcd.revoke(lease)
        at_loss = release.current_routes(lab, "app")
        with lock.held(etcd, "fault test: the lock's next holder") as other:
            traffic.mark("another holder took the lock")
            try:
                worker.join(PAUSE + 120)
                after = release.current_routes(lab, "app")
                still_held = lock.current(etcd)
            finally:
                # the next holder clears what the fenced run left: the routes first (its
                # write goes through: the lock is its own), then the candidate they dropped
                etcd.put_json(before.key, before.to_doc(), other.fence)
                release.remove(lab, "app", sha)
        time.sleep(2)
        traffic.mark("end")
    loadreport.write(traffic, load.REPORTS, {"fault": "the deploy's lease lost before its switch"})
    lost = load.readback(traffic)
    fault_row(
        "the lock's lease lost mid-deploy",
        "the deploy's lease revoked and the lock taken by another holder before its switch",
        len(traffic.failed),
        traffic.gap(),
        len(lost),
        "its route write refused (fenced out): routes, the lock's new holder untouched; 0 failed, "
        "0 lost",
    )
    assert not worker.is_alive(), f"the deploy did not end within {PAUSE + 120} s"
    assert worker.errors, "the deploy did not fail"
    err = worker.errors[0]
    assert isinstance(err, FencedOut), err
    text = str(err)
    assert err.key == before.key and f"nothing was written to {before.key}" in text
    assert "Failed at step 'switch'" in text, text
    assert after == at_loss and after.live == live, f"routes changed after the loss: {after}"
    assert still_held == other, f"the fenced run touched the next holder's lock: {still_held}"
    assert traffic.failed == [], f"{len(traffic.failed)} failed: {traffic.summary()['errors']}"
    assert {r.release for r in traffic.requests if r.ok} == {live}
    assert lost == []
    # the lab as before the deploy
    assert release.current_routes(lab, "app") == before
    _wait("the candidate removed", lambda: candidates_left(lab, sha) == [], 30)
    _wait("the deploy lock is free", lambda: _lock_free(lab), 30)
