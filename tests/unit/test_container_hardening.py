"""Every container cdlab starts for a service (a release, a hook, a migration, its integration
tests, a scratch release) runs hardened and bounded by one function, ``containers.hardening``:
a read-only root, no capability, ``no-new-privileges``, and the manifest's ``[limits]``
(memory with no swap, pids, CPUs). The arguments are checked here as the engine would get them
(a fake client records them); no engine is needed."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from lab import config
from lab.errors import ReleaseError
from lab.estate.state import State
from lab.release import containers, scratch
from lab.release.model import Candidate
from lab.stack.limits import MIB, Limits
from lab.stack.services import Migration, Service

ROOT = Path(__file__).resolve().parents[2]
BOUNDED = Limits(512 * MIB, 100, 1.5)
SERVICE = dataclasses.replace(
    Service("app", "services/app", 8000, test_command="python3 -m app.selftest"),
    database=True,
    pre_deploy="python3 -m app.migrate",
    migration=Migration("alembic upgrade head", "alembic current", "alembic heads"),
    limits=BOUNDED,
)
IMAGE = "10.100.200.200:5000/cdlab/app@sha256:" + "a" * 64
CANDIDATE = Candidate(SERVICE, "3f9c2e1a0b1c", IMAGE, None)
HARDENED = {
    "read_only": True,
    "tmpfs": {"/tmp": "size=16m"},
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges:true"],
    "mem_limit": 512 * MIB,
    "memswap_limit": 512 * MIB,
    "pids_limit": 100,
    "nano_cpus": 1_500_000_000,
    "user": "10001:10001",
}


@pytest.fixture
def state(tmp_path: Path) -> State:
    topology = json.loads(config.TOPOLOGY.read_text())
    return State(config.parse_topology(topology, ROOT, tmp_path))


class FakeContainer:
    def __init__(self, kwargs: dict[str, Any], oom: bool = False, output: bytes = b"") -> None:
        self.kwargs = kwargs
        self.attrs: dict[str, Any] = {
            "State": {"Status": "running", "OOMKilled": oom, "ExitCode": 137 if oom else 0}
        }
        self.output = output
        self.removed = False

    def wait(self, timeout: float) -> dict[str, int]:
        return {"StatusCode": int(self.attrs["State"]["ExitCode"])}

    def logs(self, tail: int | None = None) -> bytes:
        return self.output

    def reload(self) -> None:
        pass

    def exec_run(self, cmd: list[str], demux: bool = False) -> tuple[int, bytes]:
        return 0, b"ok"

    def remove(self, force: bool = False) -> None:
        self.removed = True


class FakeContainers:
    """``client.containers``: records each ``run``'s arguments."""

    def __init__(self, oom: bool = False, output: bytes = b"=== 3 passed in 0.1s ===") -> None:
        self.runs: list[dict[str, Any]] = []
        self.oom, self.output = oom, output

    def run(self, **kwargs: Any) -> FakeContainer:
        self.runs.append(kwargs)
        return FakeContainer(kwargs, self.oom, self.output)

    def list(self, **kwargs: Any) -> list[FakeContainer]:
        return []


class FakeClient:
    def __init__(self, **kwargs: Any) -> None:
        self.containers = FakeContainers(**kwargs)


def hardened(kwargs: dict[str, Any], user: str | None = "10001:10001") -> dict[str, Any]:
    """The hardening arguments among ``kwargs`` (and the user, when one is set)."""
    keys = set(HARDENED) - {"user"}
    found = {k: v for k, v in kwargs.items() if k in keys}
    if user is not None:
        found["user"] = kwargs.get("user")
    else:
        assert "user" not in kwargs or kwargs["user"] is None
    return found


def test_the_hardening_of_every_container_is_one_pure_function() -> None:
    assert containers.hardening(BOUNDED) == HARDENED
    default = containers.hardening(Limits())
    assert (default["mem_limit"], default["memswap_limit"], default["pids_limit"]) == (
        256 * MIB,
        256 * MIB,
        256,
    )
    assert "nano_cpus" not in default  # no CPU cap unless the manifest sets one
    assert "user" not in containers.hardening(Limits(), user=None)  # the image's own USER
    assert containers.hardening(BOUNDED) is not containers.hardening(BOUNDED)  # a fresh dict


def test_swap_is_never_more_than_the_memory_limit() -> None:
    for size in (16 * MIB, 256 * MIB, 8 * 1024 * MIB):
        spec = containers.hardening(Limits(memory=size))
        assert spec["memswap_limit"] == spec["mem_limit"] == size


def test_a_release_runs_hardened_and_bounded_by_its_manifest(state: State) -> None:
    spec = containers.container_spec(state, CANDIDATE)
    assert hardened(spec) == HARDENED
    assert spec["restart_policy"] == {"Name": "always"} and spec["name"] == "app-3f9c2e1a0b1c"


def test_a_one_off_runs_hardened_and_bounded_as_a_release_does() -> None:
    spec = containers.one_off_spec(IMAGE, "alembic current", {"A": "1"}, "migrate", limits=BOUNDED)
    assert hardened(spec) == HARDENED
    assert spec["command"] == ["sh", "-c", "alembic current"] and "restart_policy" not in spec
    assert spec["labels"] == {"cdlab.role": "migrate"}
    default = containers.one_off_spec(IMAGE, None, {}, "bench", user=None)
    assert hardened(default, user=None) == {
        **{k: v for k, v in HARDENED.items() if k not in ("user", "nano_cpus")},
        "mem_limit": 256 * MIB,
        "memswap_limit": 256 * MIB,
        "pids_limit": 256,
    }
    assert default["command"] is None  # the image's own entry point


def test_hooks_run_hardened_and_bounded(state: State) -> None:
    client = FakeClient()
    assert containers.hook(state, client, CANDIDATE, "pre_deploy", "python3 -m app.migrate")
    (run,) = client.containers.runs
    assert hardened(run) == HARDENED and run["labels"]["cdlab.role"] == "pre_deploy"


def test_integration_tests_run_hardened_and_bounded_in_either_image(state: State) -> None:
    own, tests = FakeClient(), FakeClient()
    assert containers.integration_tests(state, own, CANDIDATE, None) == "3 passed in 0.1s"
    containers.integration_tests(state, tests, CANDIDATE, IMAGE + "-tests")
    (in_own,), (in_tests,) = own.containers.runs, tests.containers.runs
    assert hardened(in_own) == HARDENED and in_own["image"] == IMAGE
    # the test image runs as its own USER, hardened and bounded all the same
    assert hardened(in_tests, user=None) == {k: v for k, v in HARDENED.items() if k != "user"}


def test_migrations_and_the_scratch_release_run_hardened_and_bounded(state: State) -> None:
    client = FakeClient(output=b"abc123 (head)\n")
    scratch.run(state, client, CANDIDATE, "alembic current")
    with scratch.scratch_release(state, client, CANDIDATE, "cdlab_scratch") as host:
        assert host == "app-3f9c2e1a0b1c-schema-check"
    migrate, release = client.containers.runs
    assert hardened(migrate) == HARDENED and migrate["labels"]["cdlab.role"] == "migrate"
    assert hardened(release) == HARDENED and release["restart_policy"] == {"Name": "no"}


def test_an_out_of_memory_kill_says_so_with_the_limit_and_the_fix(state: State) -> None:
    st = {"Status": "exited", "ExitCode": 137, "OOMKilled": True}
    said = containers.ended(st, BOUNDED)
    assert said.startswith("exit code 137: killed, out of memory (its limit: 512m, no swap)")
    assert "[limits] table of its service.toml" in said
    assert containers.ended({**st, "OOMKilled": False}, BOUNDED) == "exit code 137"
    with pytest.raises(ReleaseError) as err:
        containers.hook(state, FakeClient(oom=True), CANDIDATE, "pre_deploy", "x")
    assert "exit 137" in str(err.value) and "out of memory (its limit: 512m" in str(err.value)


def test_no_module_builds_its_own_hardening() -> None:
    """Every ``containers.run`` of the lab takes its hardening from ``hardening`` (directly or
    through ``container_spec`` / ``one_off_spec``); only the proxy's image run as a control's
    HAProxy (a stack service's image, as the stack runs it) is left as the stack runs it."""
    exempt = {("lab/proof/controls.py", "_run_haproxy")}
    # where "cap_drop" may be written: ``hardening`` builds it, ``drift.made`` reads it back,
    # ``swarmspec.service_kwargs`` carries it from ``container_spec`` into a Swarm service
    allowed = ("lab/release/containers.py", "lab/release/drift.py", "lab/release/swarmspec.py")
    found = []
    for path in sorted((ROOT / "lab").rglob("*.py")):
        text = path.read_text()
        rel = str(path.relative_to(ROOT))
        assert '"cap_drop"' not in text or rel in allowed, rel
        for match in re.finditer(r"\.containers\.run\(", text):
            call = text[match.end() : match.end() + 600].split("\n    )")[0]
            func = re.findall(r"^def (\w+)", text[: match.start()], re.M)[-1]
            if (rel, func) in exempt:
                continue
            found.append((rel, func))
            ok = re.search(r"\*\*(spec|one_off_spec\(|container_spec\(|\w+\.hardening\()", call)
            assert ok, f"{rel}:{func} runs a container without containers.hardening"
    assert len(found) >= 4
