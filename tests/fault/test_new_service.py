"""A commit that adds a service, deployed from another branch while 300 req/s go to ``app``:
its frontend appears on the proxy without a request to ``app`` failing, and the stack's
stateful parts (postgres, etcd) and the proxy's container are not recreated or restarted."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from lab.build import git
from lab.estate.state import State
from lab.ports import engines
from lab.progress import Progress
from lab.proof import load, loadreport
from lab.release import api as release
from lab.release import pipeline
from lab.stack import project as stack
from tests.conftest import remove_service

pytestmark = pytest.mark.xdist_group("prod")
RATE = 300
NAME, PORT = "hello", 8003  # 8002 is pypiserver's
STATEFUL = ("db", "etcd", "proxy")


def started(lab: State) -> dict[str, str]:
    """When each stateful stack container started (a recreation or restart changes it)."""
    with engines.connect(lab, lab.config.host("prod")) as prod:
        return {
            name: prod.containers.get(f"{stack.PROJECT}_{name}_1").attrs["State"]["StartedAt"]
            for name in STATEFUL
        }


@pytest.fixture
def branch_with_a_new_service(lab: State, tmp_path: Path) -> Iterator[State]:
    """A clone on another branch whose one commit adds ``services/hello`` (the quotes service
    under another name and public port); the service is removed from prod afterwards."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--shared", str(lab.config.root), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", "-b", "new-service"], check=True)
    shutil.copytree(clone / "services/quotes", clone / f"services/{NAME}")
    manifest = clone / f"services/{NAME}/service.toml"
    text = manifest.read_text().replace('name = "quotes"', f'name = "{NAME}"')
    manifest.write_text(text.replace("public_port = 8001", f"public_port = {PORT}"))
    subprocess.run(["git", "-C", str(clone), "add", "-A"], check=True)
    git.commit_all(clone, f"add the {NAME} service", author="cdlab-tests")
    yield lab.at(clone)
    remove_service(lab, NAME)


def test_a_new_service_from_another_branch_drops_nothing_and_recreates_nothing(
    lab: State, branch_with_a_new_service: State
) -> None:
    before = started(lab)
    app_live = release.current_routes(lab, "app").live
    with load.running(rate=RATE, name="new-service") as traffic:
        time.sleep(2)
        traffic.mark(f"deploy {NAME} (a new service) from another branch")
        rec = pipeline.deploy(branch_with_a_new_service, Progress(out=None), NAME, "HEAD", bake=0)
        time.sleep(2)
        traffic.mark("end")
    loadreport.write(traffic, load.REPORTS, {"fault": "a new service deployed"})
    assert rec.result == "succeeded" and "frontend" in [s["key"] for s in rec.stages]
    answer = requests.get(f"http://127.0.0.1:{PORT}/ready", timeout=5)
    assert answer.status_code == 200 and answer.headers["X-Release"] == rec.release
    s = traffic.summary()
    assert traffic.problems() == [], traffic.problems()  # the oracle saw every request
    assert traffic.rate_problem() is None, traffic.rate_problem()
    assert s["failed"] == 0, f"{s['failed']} requests to app failed: {s['errors']}"
    assert {r.release for r in traffic.requests if r.ok} == {app_live}
    assert started(lab) == before, "a stateful stack container was recreated or restarted"
