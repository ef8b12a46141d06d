"""Immutability and drift, checked on the hosts: prod runs exactly the image that was built and
tested (by digest), containers are never changed in place, no image carries a secret."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lab.estate.state import State
from lab.ports import engines
from lab.release import api as release
from lab.release import history, records
from tests.conftest import running_container

pytestmark = pytest.mark.xdist_group("prod")


@pytest.mark.parametrize("service", ["app", "quotes"])
def test_prod_runs_the_digest_that_was_built_tested_and_pushed(lab: State, service: str) -> None:
    live = release.current_routes(lab, service).live
    assert live
    registry_digest = lab.registry_client().digest(f"cdlab/{service}", live)
    made_live = [
        r
        for r in records.history(lab.runs, service, release.route_store(lab))
        if r.release == live and r.kind == "deploy" and r.result == "succeeded"
    ]
    with engines.connect(lab, lab.config.host("prod")) as prod:
        container = running_container(prod, service, live)
        image = container.attrs["Config"]["Image"]
        repo_digests = prod.images.get(container.attrs["Image"]).attrs["RepoDigests"]
    assert image.endswith(f"@{registry_digest}"), f"prod runs {image}"
    assert f"{lab.config.registry_addr}/cdlab/{service}@{registry_digest}" in repo_digests
    if made_live:  # the record names the digest the pipeline built, tested and deployed
        assert made_live[-1].image.endswith(registry_digest or "?")


@pytest.mark.parametrize("service", ["app", "quotes"])
def test_release_containers_are_not_changed_in_place(lab: State, service: str) -> None:
    live = release.current_routes(lab, service).live
    with engines.connect(lab, lab.config.host("prod")) as prod:
        container = running_container(prod, service, live or "?")
        assert prod.api.diff(container.id) in (None, [])  # read-only root; /tmp is a tmpfs
        cfg = container.attrs["HostConfig"]
        assert cfg["ReadonlyRootfs"] and cfg["CapDrop"] == ["ALL"]
        assert container.attrs["Config"]["User"] == "10001:10001"


def test_no_image_history_carries_a_secret(lab: State) -> None:
    secrets = [lab.password_file.read_text().strip(), lab.secret("db-password")]
    leaks = []
    with engines.connect(lab, lab.config.host("prod")) as prod:
        for image in prod.images.list():
            history = json.dumps(image.history()) + json.dumps(image.attrs["Config"])
            leaks += [f"{image.tags or image.id}" for s in secrets if s in history]
    assert leaks == []


def test_each_deploy_makes_new_containers(lab: State) -> None:
    """Releases are replaced, never updated: every deploy's container is created for it (on a
    swarm, every replica is a task of the release's own service)."""
    swarm = lab.config.swarm_manager is not None
    with engines.connect(lab, lab.config.host("prod")) as prod:
        found = prod.containers.list(
            all=True, filters={"label": ["cdlab.service=app", "cdlab.role=release"]}
        )
    by_release: dict[str, list[Any]] = {}
    for c in found:
        by_release.setdefault(c.labels["cdlab.release"], []).append(c)
    for rel, cs in by_release.items():
        assert swarm or len(cs) == 1, [c.name for c in cs]  # one container per release
        for c in cs:
            assert not swarm or c.name.startswith(f"app-{rel}."), c.name
            assert c.attrs["Config"]["Env"] and f"RELEASE={rel}" in c.attrs["Config"]["Env"]
    assert release.current_routes(lab, "app").live in by_release
    assert history.deployed(lab, "app")


def test_a_release_changed_by_hand_is_drift_until_it_is_as_the_pipeline_made_it(
    lab: State,
) -> None:
    """``docker update`` on the live release: ``invoke drift`` names the container and what
    changed, exits 1, and says nothing of the database password; put back, it exits 0."""
    from lab.release import drift
    from tests.conftest import invoke

    live = release.current_routes(lab, "app").live
    with engines.connect(lab, lab.config.host("prod")) as prod:
        container = running_container(prod, "app", str(live))
        memory = container.attrs["HostConfig"]["Memory"]
        container.update(mem_limit="300m", memswap_limit="300m")
        try:
            done = invoke("drift", "--service", "app")
        finally:
            container.update(mem_limit=memory, memswap_limit=memory)
    assert done.returncode == 1, done.stdout + done.stderr
    where = " on prod" if lab.config.swarm_manager is not None else ""  # a replica's node
    assert f"app {live} ({container.name}{where}): drift" in done.stdout
    assert "memory 300 MiB, the pipeline made it" in done.stdout
    assert not [s for s in lab.secret_values() if s in done.stdout + done.stderr]
    assert release.route_store(lab).get(drift.SEEN) is not None
    again = invoke("drift", "--service", "app")
    assert again.returncode == 0 and again.stdout.startswith("no drift"), again.stdout
