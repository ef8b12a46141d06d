"""``invoke lab.reset``: the lab back to its first state in under a minute, keeping images; run
twice, the second changes nothing; then every lesson's check says no on it, naming what is
missing. Production serves throughout."""

from __future__ import annotations

import re
import time

import pytest

from lab.build import git
from lab.estate.state import State
from lab.ports.lab import Lab
from lab.release import api as release
from lab.release import devloop, pins, records
from lab.stack import services
from tests.conftest import invoke, session

pytestmark = pytest.mark.xdist_group("prod")  # it empties databases and clears histories
APP = "http://127.0.0.1:8000"


def test_reset_puts_the_lab_back_to_its_first_state_and_every_check_says_no(lab: State) -> None:
    s = session()
    made = s.post(
        APP + "/api/users", json={"name": "Before Reset", "email": "reset@example.org"}, timeout=10
    )
    assert made.status_code in (201, 409)  # 409: a run before left it (then reset did not)
    first = git.short(git.commit(lab.config.root))
    started = time.monotonic()
    done = invoke("lab.reset", timeout=600)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert took < 60, f"lab.reset took {took:.0f} s"
    assert re.search(r"\[7/7\] the lessons' baseline", done.stderr), done.stderr
    with Lab.of(lab) as ports:
        for name in services.names(lab.config.root):
            current = release.current_routes(ports, name)
            assert [s.release for s in current.servers] == [first] and current.match is None
            tags = set(ports.registry.tags(f"cdlab/{name}"))
            assert tags <= {first} | pins.pinned(ports.etcd, name), (name, tags)
            hist = records.history(ports.runs, name, ports.etcd)
            assert [(r.kind, r.release) for r in hist][-1] == ("reset", first), name
            # before it, only the last record of a release a run pins (this suite's put-back
            # rolls back to what was live when it started)
            others = [r.release for r in hist[:-1]]
            assert set(others) <= pins.pinned(ports.etcd, name) - {first}, (name, others)
            assert len(others) == len(set(others)), (name, others)
    assert devloop.clone_head(lab.config) == git.commit(lab.config.root)
    assert s.get(APP + "/api/users", timeout=10).json()["users"] == []
    assert s.get(APP + "/version", timeout=10).headers["X-Release"] == first
    rows = invoke("releases", "--json", timeout=60)
    assert '"status": "live"' in rows.stdout and '"last_made_live": null' not in rows.stdout
    again = invoke("lab.reset", timeout=600)  # a second reset: nothing left to change
    assert again.returncode == 0 and "live already" in again.stderr, again.stderr
    for name in ("first-deploy", "broken-build", "bad-canary", "rollback-drill", "proxy-killed"):
        checked = invoke("lesson.check", name, timeout=60)
        assert checked.returncode == 1, checked.stdout + checked.stderr
        assert checked.stdout.startswith(f"{name}: no, not yet") and "missing:" in checked.stdout
