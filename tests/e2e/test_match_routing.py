"""A/B routing on the lab: ``deploy --match`` puts a release on the requests that carry a header
or a cookie only, through the real proxy, until ``promote`` or ``abort``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import requests

from lab.build import git
from lab.errors import ConfigError
from lab.estate.state import State
from lab.ports import engines
from lab.progress import Progress
from lab.release import api as release
from lab.release import history, pipeline, records
from lab.stack import project as stack
from tests.conftest import commit_in_clone, session

pytestmark = pytest.mark.xdist_group("prod")
APP = "http://127.0.0.1:8000"


def releases_seen(headers: dict[str, str] | None = None, count: int = 20) -> list[str]:
    s = session()
    return [
        s.get(APP + "/version", headers=headers or {}, timeout=5).headers.get("X-Release", "")
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def candidate(lab: State, tmp_path_factory: pytest.TempPathFactory) -> Iterator[State]:
    clone = commit_in_clone(
        lab.config.root,
        tmp_path_factory.mktemp("ab") / "clone",
        "services/app/app/web.py",
        lambda text: text.replace("<title>cdlab · users</title>", "<title>B side</title>"),
        "B side of an A/B test",
    )
    yield lab.at(clone)
    live = release.current_routes(lab, "app")
    if live.match:  # a failed test must not leave the next one a matched candidate
        pipeline.decide(lab, Progress(out=None), "app", "abort")


def test_matched_requests_reach_the_candidate_until_it_is_promoted(
    lab: State, candidate: State, light_load: list[tuple[float, int, str]]
) -> None:
    a = release.current_routes(lab, "app").live
    b = git.short(git.commit(candidate.config.root))
    assert a and a != b

    rec = pipeline.deploy(candidate, Progress(out=None), "app", match="header:X-Canary=1")
    assert (rec.result, rec.kind, rec.strategy, rec.release) == ("succeeded", "match", "match", b)
    assert set(releases_seen({"X-Canary": "1"})) == {b}
    assert set(releases_seen({"x-canary": "1"})) == {b}, "header names are case-insensitive"
    assert set(releases_seen()) == {a}
    assert set(releases_seen({"X-Canary": "0"})) == {a}
    assert set(releases_seen({"Cookie": "X-Canary=1"})) == {a}
    rows = {r.release: r.status for r in history.releases(lab, "app")}
    assert (rows[a], rows[b]) == ("live", "matched (header:X-Canary=1)")
    assert history.deployed(lab, "app")[-1] != b, "a matched release was not made live"

    with pytest.raises(release.ReleaseError, match="Decide on it first: 'invoke promote"):
        pipeline.deploy(lab, Progress(out=None), "app")
    assert set(releases_seen({"X-Canary": "1"})) == {b}, "the refusal changed nothing"

    assert "promoted" in pipeline.decide(lab, Progress(out=None), "app", "promote")
    assert set(releases_seen()) == {b}
    assert set(releases_seen({"X-Canary": "1"})) == {b}
    assert release.current_routes(lab, "app").match is None
    assert history.deployed(lab, "app")[-1] == b
    assert all(status == 200 for _, status, _ in light_load), "unmatched users saw an error"

    pipeline.rollback(lab, Progress(out=None), "app", to=a)
    assert set(releases_seen()) == {a}


def test_an_aborted_cookie_candidate_is_removed_and_users_never_notice(
    lab: State, candidate: State, light_load: list[tuple[float, int, str]]
) -> None:
    a = release.current_routes(lab, "app").live
    b = git.short(git.commit(candidate.config.root))
    pipeline.deploy(candidate, Progress(out=None), "app", match="cookie:variant=b")
    assert set(releases_seen({"Cookie": "session=1; variant=b; theme=dark"})) == {b}
    assert set(releases_seen({"Cookie": "variant=bb"})) == {a}
    assert set(releases_seen({"variant": "b"})) == {a}

    assert "aborted" in pipeline.decide(lab, Progress(out=None), "app", "abort")
    assert set(releases_seen({"Cookie": "variant=b"})) == {a}
    current = release.current_routes(lab, "app")
    assert current.match is None and b not in {s.release for s in current.servers}
    with engines.connect(lab, lab.config.host("prod")) as prod:
        assert not prod.containers.list(all=True, filters={"label": f"cdlab.release={b}"})
    assert light_load and all((status, r) == (200, a) for _, status, r in light_load), (
        "requests without the cookie must never leave the live release"
    )


@pytest.mark.parametrize("rule", ["X-Canary=1", "header:X Canary=1", "query:a=1"])
def test_a_bad_match_rule_is_refused_before_anything_runs(lab: State, rule: str) -> None:
    before = release.current_routes(lab, "app")
    with pytest.raises(ConfigError, match="header:NAME=VALUE or cookie:NAME=VALUE"):
        pipeline.deploy(lab, Progress(out=None), "app", match=rule)
    assert release.current_routes(lab, "app") == before


def test_a_running_canary_is_promoted_by_hand(lab: State, candidate: State) -> None:
    a = release.current_routes(lab, "app").live
    b = git.short(git.commit(candidate.config.root))
    done: list[object] = []

    def run() -> None:
        try:
            done.append(
                pipeline.deploy(
                    candidate, Progress(out=None), "app", "HEAD", "canary", (10, 100), 120
                )
            )
        except Exception as exc:  # reported by the assertion below
            done.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    worker.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and b not in releases_seen(count=40):
        time.sleep(0.2)  # until the 10 % step serves
    assert "asked the running canary" in pipeline.decide(lab, Progress(out=None), "app", "promote")
    worker.join(60)
    assert done and isinstance(done[0], records.Record), done
    assert time.monotonic() - started < 60, "the 120 s step was cut short"
    assert set(releases_seen()) == {b}
    pipeline.rollback(lab, Progress(out=None), "app", to=a)


def test_deciding_with_nothing_to_decide_is_refused(lab: State) -> None:
    with pytest.raises(ConfigError, match=r"a release on matched traffic .* or a running canary"):
        pipeline.decide(lab, Progress(out=None), "app", "abort")


def test_a_killed_proxy_comes_back_with_the_match_rule(lab: State, candidate: State) -> None:
    """The rule lives in etcd, not in HAProxy: the restarted proxy's supervisor reapplies it."""
    a = release.current_routes(lab, "app").live
    b = git.short(git.commit(candidate.config.root))
    pipeline.deploy(candidate, Progress(out=None), "app", match="header:X-Group=beta")
    with engines.connect(lab, lab.config.host("prod")) as prod:
        prod.containers.get(f"{stack.PROJECT}_proxy_1").kill()
    deadline = time.monotonic() + 30
    seen: list[str] = []
    while time.monotonic() < deadline:
        try:
            seen = releases_seen({"X-Group": "beta"}, count=5)
            if set(seen) == {b}:
                break
        except requests.RequestException:
            pass
        time.sleep(0.3)
    assert set(seen) == {b}, f"matched requests after the restart: {seen}"
    assert set(releases_seen()) == {a}
    pipeline.decide(lab, Progress(out=None), "app", "abort")
