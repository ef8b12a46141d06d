"""Prod's stack from the outside: the app through the proxy, Graphite, immutability, faults."""

from __future__ import annotations

import dataclasses
import re
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lab.build import git
from lab.build.builder import Builder, ImageSpec
from lab.errors import ImageBuildError
from lab.estate.state import State
from lab.ports import engines
from lab.progress import Progress
from lab.release import api as release
from lab.stack import project as stack
from lab.stack import services
from tests.conftest import commit_in_clone, session

# Which release is live matters to these tests: they share the group of every test that changes it.
pytestmark = pytest.mark.xdist_group("prod")

APP = "http://127.0.0.1:8000"
GRAPHITE = "http://127.0.0.1:8082"


@pytest.fixture(scope="module")
def live(lab: State) -> str:
    """The release the proxy serves (what lab.up deployed)."""
    current = release.current_routes(lab, "app").live
    assert current, "no live release of 'app' in the route store"
    return current


def test_the_current_commit_answers_through_the_proxy(lab: State, live: str) -> None:
    resp = session().get(APP + "/version", timeout=5)
    assert resp.status_code == 200
    assert resp.headers["X-Release"] == live == git.short(git.commit(lab.config.root))
    body = resp.json()
    assert body["release"] == live
    repo = f"{lab.config.registry_addr}/cdlab/app@sha256:"
    assert body["image"].startswith(repo), "prod must run the image pinned by digest"
    assert body["image"].split("@")[1] == lab.registry_client().digest("cdlab/app", live)


def test_a_registration_through_the_proxy_reads_back(live: str) -> None:
    s = session()
    email = f"e2e-{uuid.uuid4().hex[:10]}@example.org"
    created = s.post(APP + "/api/users", json={"name": "E2E", "email": email}, timeout=5)
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["release"] == live
    again = s.get(f"{APP}/api/users/{user['id']}", timeout=5)
    assert again.status_code == 200 and again.json()["email"] == email
    assert (
        s.post(APP + "/api/users", json={"name": "x", "email": "bad"}, timeout=5).status_code == 400
    )


def test_the_page_renders_through_the_proxy() -> None:
    resp = session().get(APP + "/", timeout=5)
    assert resp.status_code == 200 and "<h1>Users</h1>" in resp.text


def test_metrics_of_the_live_release_reach_graphite_within_10_seconds(live: str) -> None:
    s = session()
    for _ in range(30):
        s.get(APP + "/version", timeout=5)
    target = f"sumSeries(cdlab.app.{live}.*.requests.2xx)"
    deadline, seen = time.monotonic() + 10, 0.0
    while time.monotonic() < deadline and seen < 30:
        doc = s.get(
            f"{GRAPHITE}/render",
            params={"target": target, "from": "-60s", "format": "json"},
            timeout=5,
        ).json()
        seen = sum(v for v, _ in doc[0]["datapoints"] if v) if doc else 0.0
        time.sleep(0.5)
    assert seen >= 30, f"Graphite saw {seen} of 30 requests of {live} within 10 s"
    png = s.get(f"{GRAPHITE}/render", params={"target": target, "from": "-5min"}, timeout=10)
    assert png.headers["Content-Type"] == "image/png" and len(png.content) > 1000


@pytest.mark.parametrize("port", [9999, 2379, 8404])
def test_runtime_api_etcd_and_stats_are_not_published_on_the_workstation(port: int) -> None:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_workstation_ports_bind_loopback_only(lab: State) -> None:
    prod = engines.local().containers.get(lab.config.container_name(lab.config.host("prod")))
    bindings = prod.attrs["HostConfig"]["PortBindings"]
    assert {b["HostIp"] for v in bindings.values() for b in v} == {"127.0.0.1"}
    published = {int(b["HostPort"]) for v in bindings.values() for b in v}
    assert published == {*range(8000, 8010), 8082}  # the services' frontends, graphite-web


def test_app_containers_are_immutable_non_root_and_unprivileged(
    testinfra_host: Callable[[str], Any], live: str
) -> None:
    prod = testinfra_host("prod")
    # the release's own containers (the image label cdlab.release is on test containers too)
    ids = prod.check_output(
        f"docker ps -q --filter label=cdlab.service=app --filter label=cdlab.release={live}"
    ).split()
    assert ids, "no container of the live release on prod"
    for cid in ids:
        fmt = (
            "{{.HostConfig.ReadonlyRootfs}} {{.Config.User}} {{.HostConfig.CapDrop}} "
            "{{.HostConfig.SecurityOpt}}"
        )
        readonly, user, capdrop, secopt = prod.check_output(
            f"docker inspect --format '{fmt}' {cid}"
        ).split(" ", 3)
        assert readonly == "true" and user == "10001:10001"
        assert "ALL" in capdrop
        # its own option, or (a Swarm task) its node's dockerd --no-new-privileges: the kernel's
        # flag on its process says either
        assert "no-new-privileges" in secopt or not secopt.strip("[]")
        status = prod.check_output(f"docker exec {cid} grep NoNewPrivs /proc/1/status")
        assert status.split() == ["NoNewPrivs:", "1"]
        assert prod.check_output(f"docker exec {cid} id -u") == "10001"
        assert prod.run(f"docker exec {cid} touch /srv/app/x").rc != 0
        assert prod.run(f"docker exec {cid} touch /tmp/x").rc == 0  # tmpfs


def test_every_stack_service_has_a_healthcheck_and_a_restart_policy(
    lab: State, testinfra_host: Callable[[str], Any]
) -> None:
    stack.wait_healthy(lab, timeout=30)  # a service restarted by an earlier test may be starting
    prod = testinfra_host("prod")
    ids = prod.check_output(
        f"docker ps -q --filter label=com.docker.compose.project={stack.PROJECT}"
    ).split()
    assert len(ids) == len(stack.SERVICES)  # etcd, db, carbon, graphite-web, proxy, logs
    for cid in ids:
        out = prod.check_output(
            f"docker inspect --format "
            f"'{{{{.HostConfig.RestartPolicy.Name}}}} "
            f"{{{{.State.Health.Status}}}}' {cid}"
        )
        assert out == "always healthy"


def test_a_killed_proxy_comes_back_on_the_same_release_from_etcd(
    lab: State, live: str, light_load: list[tuple[float, int, str]]
) -> None:
    time.sleep(1)
    with engines.connect(lab, lab.config.host("prod")) as prod:
        proxy = prod.containers.list(
            filters={
                "label": [
                    f"com.docker.compose.project={stack.PROJECT}",
                    "com.docker.compose.service=proxy",
                ]
            }
        )[0]
        killed = time.monotonic()
        proxy.kill()
    deadline = killed + 10
    while time.monotonic() < deadline:
        recent = [r for r in light_load if r[0] > killed]
        if len(recent) >= 10 and all(r[1] == 200 and r[2] == live for r in recent[-10:]):
            break
        time.sleep(0.1)
    after = [r for r in light_load if r[0] > killed]
    back = next(t for t, status, rel in after if status == 200)
    assert all(rel == live for _, status, rel in after if status == 200)
    assert back - killed < 10, f"the proxy was back only after {back - killed:.1f} s"
    assert [r[1] for r in after[-10:]] == [200] * 10
    print(f"\nproxy killed: outage {back - killed:.2f} s, back on {live}")


def test_a_release_that_never_gets_healthy_is_reported_and_never_routed(
    lab: State, live: str, light_load: list[tuple[float, int, str]]
) -> None:
    app = services.load(lab.config.root, "app")
    broken = dataclasses.replace(app, healthcheck="echo never healthy; exit 1")
    current = lab.registry_client().digest("cdlab/app", live)
    pinned = f"{lab.config.registry_addr}/cdlab/app@{current}"
    candidate = release.Candidate(broken, f"unhealthy{uuid.uuid4().hex[:6]}", pinned, None)
    with pytest.raises(release.ReleaseError) as err:
        release.deploy_built(
            lab, candidate, Progress(out=None), release.Options(health_timeout=6, bake=0)
        )
    message = str(err.value)
    assert "did not become healthy within 6 s" in message
    assert "last health answer: health check exit 1: never healthy" in message
    assert "Undone: start" in message  # the candidate stopped and removed
    assert release.current_routes(lab, "app").live == live
    with engines.connect(lab, lab.config.host("prod")) as prod:
        assert release.release_containers(prod, "app", candidate.release) == []
    odd = [(round(t, 2), s, r) for t, s, r in light_load if (s, r) != (200, live)]
    assert light_load and not odd, f"answers not from the live release: {odd[:10]}"


def test_a_health_check_the_live_release_does_not_answer_is_refused_before_the_proxy_uses_it(
    lab: State, live: str, light_load: list[tuple[float, int, str]]
) -> None:
    """A manifest that changes the proxy's health path: the proxy checks every release of a
    service the same way, so the live release must answer it first (expand, then contract)."""
    app = services.load(lab.config.root, "app")
    moved = dataclasses.replace(app, health="/no-such-health-endpoint")
    current = lab.registry_client().digest("cdlab/app", live)
    pinned = f"{lab.config.registry_addr}/cdlab/app@{current}"
    candidate = release.Candidate(moved, f"moved{uuid.uuid4().hex[:6]}", pinned, None)
    routes_before = release.route_store(lab).get_json("/cdlab/routes/app")
    with pytest.raises(release.ReleaseError) as err:
        release.deploy_built(lab, candidate, Progress(out=None), release.Options(bake=0))
    message = str(err.value)
    assert f"the live release {live} does not answer it" in message
    assert "expand, then contract" in message
    assert release.route_store(lab).get_json("/cdlab/routes/app") == routes_before
    with engines.connect(lab, lab.config.host("prod")) as prod:
        assert release.release_containers(prod, "app", candidate.release) == []
    odd = [(round(t, 2), s, r) for t, s, r in light_load if (s, r) != (200, live)]
    assert light_load and not odd, f"answers not from the live release: {odd[:10]}"


@pytest.mark.xdist_group("builds")  # with the module's "prod": its own group, on cd only
def test_an_image_whose_unit_tests_fail_is_not_built(lab: State, tmp_path: Path) -> None:
    clone = commit_in_clone(
        lab.config.root,
        tmp_path / "clone",
        "services/app/tests/unit/test_web.py",
        lambda text: (
            text + "\n\ndef test_deliberately_broken() -> None:\n"
            "    assert 1 + 1 == 3, 'arithmetic is broken on purpose'\n"
        ),
        "break a unit test",
    )
    sha = git.commit(clone)
    tag = f"broken-{git.short(sha)}"
    clone_state = lab.at(clone)
    with (
        engines.connect(lab, lab.config.builder, timeout=600) as cd,
        pytest.raises(ImageBuildError) as err,
    ):
        Builder(clone_state, cd).ensure(
            ImageSpec("app", "services/app", "Dockerfile", tag), sha, tag
        )
    assert "test_deliberately_broken" in str(err.value)
    assert "arithmetic is broken on purpose" in err.value.build_log
    assert lab.registry_client().digest("cdlab/app", tag) is None
    shutil.rmtree(clone)


def test_the_integration_test_image_runs_self_contained(lab: State, live: str) -> None:
    """No BASE_URL: the test image starts this release of the service inside and tests it."""
    digest = lab.registry_client().digest("cdlab/app-test", live)
    image = f"{lab.config.registry_addr}/cdlab/app-test@{digest}"
    with engines.connect(lab, lab.config.host("prod"), timeout=300) as prod:
        stack.pull(lab, "prod", [image])
        container = prod.containers.run(
            image, detach=True, network_disabled=True, labels={"cdlab.role": "integration-tests"}
        )
        try:
            result = container.wait(timeout=120)
            output = container.logs().decode(errors="replace")
        finally:
            container.remove(force=True)
    assert result["StatusCode"] == 0, output[-2000:]
    # every test of the file ran and passed (a count from the file, not a number to keep up)
    tests = (lab.config.root / "services" / "app" / "tests" / "api" / "test_api.py").read_text()
    wanted = len(re.findall(r"^def test_", tests, re.M))
    assert f"\n{wanted} passed in " in output, output[-2000:]
