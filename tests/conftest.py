"""Fixtures for tests against the running lab.

When the lab does not answer, these tests skip with the reason, except under CI (``CI=true``) or
``CDLAB_REQUIRE_LAB=1``, where they fail: a skipped suite in CI is a failed promise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
import testinfra

from lab import config
from lab.build import git
from lab.config import Host, LabConfig
from lab.errors import LabError
from lab.estate import lifecycle
from lab.estate.state import State
from lab.ports import engines


def invoke(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``invoke ARGS`` as a user runs it, from this checkout, with its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=Path(__file__).resolve().parents[1],
        text=True,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


REQUIRE = os.environ.get("CI") == "true" or os.environ.get("CDLAB_REQUIRE_LAB") == "1"


@pytest.fixture(scope="session")
def lab_config() -> LabConfig:
    return config.load()


@pytest.fixture(scope="session")
def lab(lab_config: LabConfig) -> State:
    """The running lab's state; skips (or fails under CI) when the lab is not up."""
    state = State(lab_config)
    try:
        if not state.password_file.exists():
            raise LabError(f"no lab state in {state.dir}")
        for host in lab_config.engine_hosts:
            engines.wait_ready(state, host, timeout=10)
        lifecycle.wait_registry(state, timeout=10)
    except LabError as exc:
        reason = f"the lab is not up ({str(exc).splitlines()[0]}); run './cdlab up'"
        if REQUIRE:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return state


@pytest.fixture(scope="session")
def testinfra_host(lab: State) -> Callable[[str], Any]:
    """testinfra host for a lab host, through the workstation's engine (docker backend)."""
    cache: dict[str, Any] = {}

    def get(name: str) -> Any:
        if name not in cache:
            container = lab.config.container_name(lab.config.host(name))
            cache[name] = testinfra.get_host(f"docker://{container}")
        return cache[name]

    return get


@pytest.fixture
def engine(lab: State, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A mutual-TLS SDK client for the engine host named by ``request.param``."""
    host: Host = lab.config.host(request.param)
    with engines.connect(lab, host, timeout=120) as client:
        yield client


def session() -> requests.Session:
    """HTTP to the lab's own addresses: never through the machine's proxy."""
    s = requests.Session()
    s.trust_env = False
    return s


def commit_in_clone(
    root: Path, clone: Path, path: str, change: Callable[[str], str], message: str
) -> Path:
    """A clone of ``root`` at ``clone`` with one more commit: ``change`` applied to ``path``."""
    return clone_with(root, clone, {path: change}, message)


def clone_with(
    root: Path, clone: Path, changes: dict[str, Callable[[str], str]], message: str
) -> Path:
    """A clone of ``root`` at ``clone`` with one commit of ``changes`` (path -> edit; a missing
    file is edited from "")."""
    subprocess.run(["git", "clone", "-q", "--shared", str(root), str(clone)], check=True)
    edit_and_commit(clone, changes, message)
    return clone


def edit_and_commit(clone: Path, changes: dict[str, Callable[[str], str]], message: str) -> str:
    """Apply ``changes`` in ``clone`` and commit them; returns the new commit."""
    for path, change in changes.items():
        target = clone / path
        target.write_text(change(target.read_text() if target.exists() else ""))
    return git.commit_all(clone, message, author="cdlab-tests")


# an app commit's line that makes /version misbehave for real clients only (python-requests, as
# the light load and the judge's load use), while its integration tests pass
ON_VERSION_FOR_REAL_CLIENTS = (
    '        if path == "/version" and environ.get("HTTP_USER_AGENT", "").startswith(\n'
    '                "python-requests"):\n'
)


@pytest.fixture
def light_load() -> Iterator[list[tuple[float, int, str]]]:
    """GET /version every 20 ms in a thread (bounded: at most 30 s); (time, status, release)."""
    seen: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def loop() -> None:
        s = requests.Session()
        s.trust_env = False  # 127.0.0.1 only
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                r = s.get("http://127.0.0.1:8000/version", timeout=1)
                seen.append((time.monotonic(), r.status_code, r.headers.get("X-Release", "")))
            except requests.RequestException:
                seen.append((time.monotonic(), 0, ""))
            time.sleep(0.02)

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    yield seen
    stop.set()
    worker.join(5)


EVIDENCE = Path(__file__).resolve().parent.parent / "reports" / "evidence"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test that touched the lab keeps its evidence: prod's containers (inspect and the
    last lines of each log, redacted of secrets) in ``reports/evidence/<test>/``; load tests'
    request files stay in ``reports/load/``."""
    report = yield
    if call.when == "call":
        item.stash[_CALL] = report
    touched = "lab" in getattr(item, "fixturenames", ())
    if report.failed and call.when == "call" and touched:
        try:
            keep_evidence(item.name)
        except Exception as exc:  # evidence is best effort: never hide the test's own failure
            report.sections.append(("cdlab evidence", f"could not collect evidence: {exc}"))
    if report.failed and touched:
        redact_report(report, State(config.load()).secret_values())
    return report


_CALL = pytest.StashKey[pytest.TestReport]()  # a test's report of its call phase


# case, what was injected, failed requests, outage (s), registrations lost, what must hold
FaultRow = Callable[[str, str, int | None, float | None, int | None, str], None]


@pytest.fixture
def fault_row(request: pytest.FixtureRequest) -> Iterator[FaultRow]:
    """Records this test's row(s) of the fault matrix (``reports/faults.md``): call it with the
    case, what was injected, failed requests, the outage (s), registrations lost (None: not
    measured) and what must hold, once measured and before asserting. Each row is written at
    the test's end with its outcome (passed, failed or skipped); the run's page is rendered at the
    session's end (the root conftest)."""
    from lab.proof import faultreport

    rows: list[faultreport.Row] = []

    def record(
        case: str,
        injected: str,
        failed: int | None,
        outage_s: float | None,
        lost: int | None,
        verdict: str,
    ) -> None:
        outage = None if outage_s is None else round(outage_s, 3)
        rows.append(faultreport.Row(case, injected, failed, outage, lost, verdict))

    yield record
    call = request.node.stash.get(_CALL, None)
    outcome = call.outcome if call is not None else "?"  # passed, failed or skipped
    for row in rows:
        faultreport.append(replace(row, outcome=outcome, test=request.node.nodeid))


def redact_report(report: pytest.TestReport, secrets: tuple[str, ...]) -> None:
    """A failed lab test's report (its traceback, its captured output) redacted of the lab's
    secrets, as the terminal and ``reports/junit.xml`` show it: an assertion on a container's
    environment would otherwise print the database's password. A traceback with nothing to
    mask keeps its form."""
    from lab.proof.redact import redact

    text = report.longreprtext
    if redact(text, secrets) != text:
        report.longrepr = redact(text, secrets)
    report.sections = [(title, redact(body, secrets)) for title, body in report.sections]


def keep_evidence(test_name: str) -> Path:
    """prod's containers (inspect and the last lines of each log) in
    ``reports/evidence/<test>/``, redacted of the lab's secrets; on a prod that is a swarm,
    each worker's in a folder of its name there; the folder."""
    from lab.proof import evidence

    folder = EVIDENCE / evidence.folder_name(test_name)
    state = State(config.load())
    nodes = [h for h in state.config.hosts if h.swarm and h.name != "prod"]
    for host in [state.config.host("prod"), *nodes]:
        where = folder if host.name == "prod" else folder / host.name
        try:
            with engines.connect(state, host, timeout=60) as engine:
                found = engine.containers.list(all=True, ignore_removed=True)  # some go as we look
                evidence.keep(where, found, state.secret_values())
        except Exception as exc:  # a worker down (a node fault's test): the rest is kept
            if host.name == "prod":
                raise
            where.mkdir(parents=True, exist_ok=True)
            (where / "unreached.txt").write_text(f"{host.name}'s engine did not answer: {exc}\n")
    return folder


def running_container(client: Any, service: str, rel: str) -> Any:
    """A running container of release ``rel`` of ``service`` on ``client``'s engine: its one,
    or, on a prod that is a swarm, one of its replicas (a task's ``<service>-<rel>.<n>.<id>``)."""
    labels = [f"cdlab.service={service}", f"cdlab.release={rel}", "cdlab.role=release"]
    found = client.containers.list(filters={"label": labels})
    assert found, f"no running container of {service} {rel} on this engine"
    return sorted(found, key=lambda c: c.name)[0]


def remove_service(lab: State, name: str) -> None:
    """A service a test deployed from a clone, gone from prod: its routes, its frontend (the
    proxy stops its process) and its containers."""
    from lab.release import api as release

    release.remove_service(lab, name)


def on_host(
    lab: State, host: str, script: str, env: dict[str, str] | None = None, check: bool = True
) -> str:
    """``script`` run by sh in ``host``'s container; its output (stdout and stderr). With
    ``check``, a non-zero exit fails the test with the output's end."""
    __tracebackhide__ = True
    container = lab.config.container_name(lab.config.host(host))
    flags = [f"--env={k}={v}" for k, v in (env or {}).items()]
    done = subprocess.run(
        ["docker", "exec", *flags, container, "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = done.stdout + done.stderr
    if check:
        assert done.returncode == 0, f"on {host}: exit {done.returncode}:\n{out[-3000:]}"
    return out


CD_SIDE = "refs/heads/cdlab-side"  # a branch of cd's repository: stored, never deployed


def commit_to_cd_side(lab: State, edit: str, message: str) -> str:
    """A commit on dev (this checkout's commit, then the shell command ``edit`` run in a
    throwaway clone of it) pushed to a side branch of cd's repository (stored, not deployed)
    with dev's credentials; its sha. Dev's own clone, where a user edits, is not touched.
    ``cd_hook(new)`` then runs cd's own post-receive hook for it as a push to main would, with
    an environment the test chooses (a push over SSH carries none)."""
    from lab.release import devloop

    pushed = on_host(
        lab,
        "dev",
        f"""set -e
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q /vagrant "$work"
cd "$work"
git -c advice.detachedHead=false checkout -q {git.commit(lab.config.root)}
git config user.email test@cdlab.invalid
git config user.name 'cdlab test'
{edit}
git commit -qam '{message}'
git push -q --force "$(git -C {devloop.CLONE} remote get-url cd)" HEAD:{CD_SIDE} 2>&1
git rev-parse HEAD""",
    )
    return pushed.split()[-1]


def cd_hook(new: str) -> str:
    """The script that moves cd's main to ``new`` (pushed by ``commit_to_cd_side``) and runs
    the repository's post-receive hook for it, OLD being its parent (the checkout's commit)."""
    from lab.release import devloop

    return f"""set -e
cd {devloop.REPOSITORY}
git update-ref refs/heads/main {new}
git update-ref -d {CD_SIDE} 2>/dev/null || true
echo "$(git rev-parse {new}^) {new} refs/heads/main" | hooks/post-receive"""
