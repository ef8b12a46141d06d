"""Any service deploys the way the demo app does (quotes: its own port, health path, tests and
hooks, no database), and a commit pushed from dev to cd is live with no further command."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests

from lab.build import git
from lab.estate.state import State
from lab.ports import engines
from lab.progress import Progress
from lab.release import api as release
from lab.release import devloop, history, pipeline, records
from lab.stack import services
from tests.conftest import commit_in_clone, session

pytestmark = pytest.mark.xdist_group("prod")
QUOTES = "http://127.0.0.1:8001"  # quotes' frontend (public_port in its service.toml)


def served(url: str, path: str = "/version") -> requests.Response:
    return session().get(url + path, timeout=5)


@pytest.fixture(scope="module")
def quotes_change(lab: State, tmp_path_factory: pytest.TempPathFactory) -> Iterator[State]:
    clone = commit_in_clone(
        lab.config.root,
        tmp_path_factory.mktemp("quotes") / "clone",
        "services/quotes/quotes/service.py",
        lambda text: text.replace('"Done means released.",', '"Done means released!",'),
        "quotes: a one-line change",
    )
    yield lab.at(clone)


def test_a_second_service_deploys_and_rolls_back_the_same_way(
    lab: State, quotes_change: State
) -> None:
    before = release.current_routes(lab, "quotes").live
    new = git.short(git.commit(quotes_change.config.root))
    app_before = served("http://127.0.0.1:8000").headers["X-Release"]

    rec = pipeline.deploy(quotes_change, Progress(out=None), "quotes", "HEAD")

    assert (rec.result, rec.release, rec.previous) == ("succeeded", new, before)
    answer = served(QUOTES)
    assert answer.headers["X-Release"] == new and answer.json()["release"] == new
    assert "Done means released!" in served(QUOTES, "/quotes").json()["quotes"]
    details = {s["key"]: s["detail"] for s in rec.stages}
    assert f"pre-deploy hook of quotes {new}: ok" in details["pre-hook"]
    assert "6 passed, 0 failed" in details["tests"]
    assert f"post-deploy hook of quotes {new}: ok" in details["post-hook"]
    # the service's own environment ([env] in its manifest)
    assert served(QUOTES, "/").json()["greeting"] == "Deploy small, deploy often."
    assert served("http://127.0.0.1:8000").headers["X-Release"] == app_before  # untouched

    back, seconds = pipeline.rollback(lab, Progress(out=None), "quotes")
    assert back.release == before and served(QUOTES).headers["X-Release"] == before
    assert seconds <= 1.0


def test_the_dev_clone_pushes_to_cd(lab: State) -> None:
    out = subprocess.run(
        [
            "docker",
            "exec",
            lab.config.container_name(lab.config.host("dev")),
            "git",
            "-C",
            devloop.CLONE,
            "remote",
            "get-url",
            "cd",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == devloop.remote_url(lab.config)


OWN_LAB_RAN = "the pushed commit: its own lab/ ran on cd"


def test_a_commit_pushed_from_dev_is_live_without_another_command(lab: State) -> None:
    dev = lab.config.container_name(lab.config.host("dev"))
    # the dev clone at this checkout's commit (earlier runs of this test left commits in it)
    script = f"cd {devloop.CLONE} && git fetch -q /vagrant HEAD && git reset -q --hard FETCH_HEAD"
    assert engines.local().containers.get(dev).exec_run(["sh", "-c", script]).exit_code == 0
    page = f"{devloop.CLONE}/services/app/app/web.py"
    stamp = f"pushed from dev {len(history.deployed(lab, 'app'))}"
    subprocess.run(
        [
            "docker",
            "exec",
            dev,
            "sed",
            "-i",
            f"s|<title>[^<]*</title>|<title>{stamp}</title>|",
            page,
        ],
        check=True,
    )
    # the commit's own lab/ must never run on cd (cd runs its installed copy): this one would
    # fail the run at once
    on_dev(
        lab, f"sed -i '1i raise SystemExit(\"{OWN_LAB_RAN}\")' {devloop.CLONE}/lab/release/ci.py"
    )
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "dev.push", "--message", stamp],
        cwd=lab.config.root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    head = subprocess.run(
        ["docker", "exec", dev, "git", "-C", devloop.CLONE, "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # the deploy's stages came back to the pusher through git ("remote: ...")
    assert re.search(r"remote: ==> \[\d+/\d+\] switch: all traffic to", result.stdout)
    assert "cdlab-result: succeeded" in result.stdout and OWN_LAB_RAN not in result.stdout
    assert served("http://127.0.0.1:8000").headers["X-Release"] == head
    assert stamp in served("http://127.0.0.1:8000", "/").text
    # the run is in the shared history, with who triggered it, and in a record on cd
    rec = [
        r for r in records.history(lab.runs, "app", release.route_store(lab)) if r.release == head
    ][-1]
    assert rec.trigger.startswith("git push to cd") and rec.result == "succeeded"
    cd = lab.config.container_name(lab.config.host("cd"))
    files = subprocess.run(
        ["docker", "exec", cd, "sh", "-c", "ls /var/lib/cdlab/state/runs"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"-app-{head}.json" in files


def on_dev(lab: State, script: str) -> None:
    dev = lab.config.container_name(lab.config.host("dev"))
    subprocess.run(["docker", "exec", dev, "sh", "-c", script], check=True)


def test_a_push_of_a_broken_commit_leaves_the_live_release(lab: State) -> None:
    live = served("http://127.0.0.1:8000").headers["X-Release"]
    tests_file = f"{devloop.CLONE}/services/app/tests/unit/test_broken_on_purpose.py"
    on_dev(lab, f"printf 'def test_broken():\\n    assert 1 == 2\\n' > {tests_file}")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "invoke", "dev.push", "--message", "a failing unit test"],
            cwd=lab.config.root,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 1
        assert "cdlab-result: failed" in result.stdout
        assert "assert 1 == 2" in result.stdout  # the failing test's output reached the pusher
        assert "the deploy of app failed; production keeps the live release of app" in result.stderr
        assert served("http://127.0.0.1:8000").headers["X-Release"] == live
    finally:  # the dev clone back to a good state for the next push
        on_dev(lab, f"cd {devloop.CLONE} && git rm -q {tests_file} && git commit -qm 'undo'")


def test_manifests_in_the_repository_are_valid(lab: State) -> None:
    assert [s.name for s in services.load_all(lab.config.root)] == ["app", "pypiserver", "quotes"]
