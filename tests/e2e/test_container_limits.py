"""Every container cdlab starts for a service is hardened and bounded on prod's engine, and the
bounds hold: the live releases carry their manifest's ``[limits]`` (a release made live before
the limits existed must be deployed again), and a one-off container of the live release's image
(as a hook or a migration runs) is read-only, non-root, and stopped by its memory and pids
limits from inside, whatever it tries.
"""

from __future__ import annotations

from typing import Any

import pytest

from lab.estate.state import State
from lab.ports import engines
from lab.release import api as release
from lab.stack import services
from lab.stack.limits import Limits
from tests.conftest import running_container

pytestmark = pytest.mark.xdist_group("prod")  # reads the live releases while none is replaced

INSIDE = (
    "m=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || "
    "cat /sys/fs/cgroup/memory/memory.limit_in_bytes); "
    "p=$(cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max); "
    'echo "memory=$m pids=$p uid=$(id -u)"; '
    "if touch /cdlab-probe 2>/dev/null; then echo root=writable; else echo root=read-only; fi"
)
# more processes than the pids limit allows (each a sleep), counted until the kernel refuses
FORKS = """python3 -c '
import subprocess
started = []
try:
    for _ in range(600):
        started.append(subprocess.Popen(["sleep", "5"]))
except OSError as exc:
    print("refused after", len(started), exc.errno)
else:
    print("started", len(started))
'"""
# more memory than the limit, each page written (a zeroed allocation may not be)
HOG = 'python3 -c \'b = b"x" * (400 * 1024 * 1024); print("allocated", len(b))\''


def live_container(client: Any, service: str, lab: State) -> Any:
    """The live release's container on prod (on a swarm, one of its replicas: a task's)."""
    live = release.current_routes(lab, service).live
    assert live, f"no live release of {service}"
    return running_container(client, service, live)


def swap_of(container: Any) -> int:
    """The memory with swap ``container`` must have: its memory (no swap); a Swarm task's,
    Docker's default for a limit without a swap limit, twice the memory (a service cannot carry
    one: ``swarmspec.INSTEAD``, docs/manifest.md)."""
    task = "com.docker.swarm.task.id" in container.labels
    return int(container.attrs["HostConfig"]["Memory"]) * (2 if task else 1)


def no_new_privileges(container: Any) -> bool:
    """Whether the container's processes run with no_new_privs: its own option, or (a Swarm
    task) the node's ``dockerd --no-new-privileges``, read from the kernel inside it."""
    if container.attrs["HostConfig"]["SecurityOpt"] == ["no-new-privileges:true"]:
        return True
    code, out = container.exec_run(["grep", "NoNewPrivs", "/proc/1/status"])
    return bool(code == 0 and out.decode().split() == ["NoNewPrivs:", "1"])


@pytest.mark.parametrize("service", ["app", "quotes"])
def test_live_releases_run_hardened_and_bounded_by_their_manifest(lab: State, service: str) -> None:
    limits = services.load(lab.config.root, service).limits
    with engines.connect(lab, lab.config.host("prod")) as prod:
        container = live_container(prod, service, lab)
        cfg = container.attrs["HostConfig"]
        assert no_new_privileges(container), f"{container.name} may gain privileges"
    assert cfg["Memory"] == limits.memory, (
        f"{container.name} has memory limit {cfg['Memory']} (0: none): made live before "
        "[limits] existed? Deploy it again ('invoke deploy')"
    )
    assert cfg["MemorySwap"] == swap_of(container)
    assert cfg["PidsLimit"] == limits.pids
    assert cfg["NanoCpus"] == round(limits.cpus * 1e9)
    assert cfg["ReadonlyRootfs"] and cfg["CapDrop"] == ["ALL"]


@pytest.fixture(scope="module")
def live_image(lab: State) -> str:
    with engines.connect(lab, lab.config.host("prod")) as prod:
        return str(live_container(prod, "app", lab).attrs["Config"]["Image"])


def run(lab: State, image: str, command: str) -> tuple[int, str]:
    with engines.connect(lab, lab.config.host("prod"), timeout=330) as prod:
        return release.one_off(prod, image, command, {}, "limits-probe")


def test_a_one_off_is_read_only_non_root_and_bounded_from_inside(
    lab: State, live_image: str
) -> None:
    code, out = run(lab, live_image, INSIDE)
    default = Limits()
    assert code == 0, out
    assert f"memory={default.memory} pids={default.pids} uid=10001" in out, out
    assert "root=read-only" in out


def test_a_one_off_cannot_start_more_processes_than_its_pids_limit(
    lab: State, live_image: str
) -> None:
    code, out = run(lab, live_image, FORKS)
    assert "refused after" in out, f"exit {code}: {out}"
    started = int(out.split("refused after", 1)[1].split()[0])
    assert 0 < started < Limits().pids


def test_a_one_off_is_killed_past_its_memory_limit_and_says_why(
    lab: State, live_image: str
) -> None:
    code, out = run(lab, live_image, HOG)
    assert code == 137 and "allocated" not in out, f"exit {code}: {out}"
    assert "out of memory (its limit: 256m, no swap)" in out


def test_every_container_on_prod_is_bounded_the_stack_too(lab: State) -> None:
    """Not only releases: the stack's own containers (proxy, etcd, database, metrics, logs) have
    memory (no swap) and process bounds, so a runaway one cannot starve prod."""
    with engines.connect(lab, lab.config.host("prod")) as prod:
        running = [
            c
            for c in prod.containers.list()
            if c.labels.get("com.docker.compose.project") == "cdlab-stack"
            or "cdlab.service" in c.labels
        ]
        unbounded = {
            c.name: (c.attrs["HostConfig"]["Memory"], c.attrs["HostConfig"]["PidsLimit"])
            for c in running
            if not c.attrs["HostConfig"]["Memory"]
            or c.attrs["HostConfig"]["MemorySwap"] != swap_of(c)
            or not (c.attrs["HostConfig"]["PidsLimit"] or 0) > 0
        }
    assert any(c.name.startswith("cdlab-stack_") for c in running)
    assert unbounded == {}, f"containers without memory/pids bounds (memory, pids): {unbounded}"
