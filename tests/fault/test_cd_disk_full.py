"""cd's disk full during a build, under load: a clear error (what is full, how to free it), the
run recorded as failed, nothing changed on prod or in the registry, 0 failed requests; once
space is freed the same commit deploys.

How the disk is filled, and why so. cd's engine keeps its images and build cache in a volume on
this machine's own disk: filling it would fill the workstation's disk and every lab on it. What
the runner on cd writes itself (its build logs, the runs it records, the credentials its hook
copies for each push) lives in ``/var/lib/cdlab/state``: the test mounts a tmpfs there (cd runs
with CAP_SYS_ADMIN), sized a little over what the folder holds and seeded with it (but earlier
build logs), and when the build stage starts it fills what is left; the kernel then answers the
runner's next write with ENOSPC, as a full disk does. The engine's side of a full disk (a build
step or a layer that cannot be written) gives the error text the builder's hint reads
(``lab.errors.disk_full_hint``, unit-tested).

The push is the one cd's hook runs (the same checkout, installed runner and credentials), moved
to main by the test (``conftest.commit_to_cd_side``, ``conftest.cd_hook``) so that it can be
watched line by line.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time
import uuid

import pytest

from lab.estate.images import REPOSITORY
from lab.estate.state import State
from lab.ports.lab import Lab
from lab.proof import load, loadreport
from lab.release import api as release
from lab.release import records
from tests import conftest
from tests.conftest import FaultRow
from tests.fault.test_fault_matrix import candidates_left

pytestmark = pytest.mark.xdist_group("prod")
RATE = 100
STATE = "/var/lib/cdlab/state"  # the runner's folder on cd
WEB = "services/app/app/web.py"
HINT = "is full"
FS = "cdlab-disk-full"  # the tmpfs's name in /proc/mounts
# The tmpfs filled to its last byte (dd stops at ENOSPC), only when it is there (never cd's own
# disk, which is this machine's), bounded.
FILL = (
    f"grep -q '^{FS} {STATE} ' /proc/mounts && "
    f"{{ dd if=/dev/zero of={STATE}/.ballast bs=64k count=16384 2>/dev/null; sync; true; }}"
)


FILLED = "cdlab-test: cd's disk filled"


class HookRun:
    """cd's post-receive hook for ``new``, started in the background; its output line by
    line. When a line holds ``fill_at``, the tmpfs is filled right there, on cd, by the shell
    that reads the hook's output (milliseconds after the stage began, long before a build
    ends), and ``FILLED`` follows that line."""

    def __init__(self, lab: State, new: str, fill_at: str) -> None:
        container = lab.config.container_name(lab.config.host("cd"))
        script = f"""{conftest.cd_hook(new)} 2>&1 | while IFS= read -r line; do
    printf '%s\\n' "$line"
    case "$line" in *"{fill_at}"*) {FILL} && echo "{FILLED}" ;; esac
done"""
        self.proc = subprocess.Popen(
            ["docker", "exec", container, "sh", "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    return False
                continue
            self.output.append(line)
            if text in line:
                return True
        return False

    def end(self, timeout: float = 600) -> str:
        self.proc.wait(timeout=timeout)
        time.sleep(0.2)  # the reader's last lines
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return "".join(self.output)


def _syscall(call: str) -> str:
    """A shell line making the libc ``call`` (the host image has no mount(8)); a failure exits
    non-zero with the errno's text."""
    return (
        'python3 -c "import ctypes, os, sys; libc = ctypes.CDLL(None, use_errno=True); '
        f'sys.exit(0 if libc.{call} == 0 else os.strerror(ctypes.get_errno()))"'
    )


def _free(lab: State) -> None:
    conftest.on_host(lab, "cd", f"rm -f {STATE}/.ballast")


def _end_the_hook(lab: State) -> None:
    """The hook's runner on cd ended, if it still runs (a test that stopped midway)."""
    conftest.on_host(
        lab,
        "cd",
        "for p in /proc/[0-9]*; do grep -qs lab.release.ci $p/cmdline && kill ${p#/proc/}; "
        "done; true",
        check=False,
    )


def _unmount(lab: State) -> None:
    __tracebackhide__ = True
    unmount = _syscall(f"umount2(b'{STATE}', 2)")  # MNT_DETACH: even while a file is open
    conftest.on_host(lab, "cd", f"grep -q '^{FS} ' /proc/mounts && {unmount}", check=False)
    left = conftest.on_host(lab, "cd", f"grep '^{FS} ' /proc/mounts || true")
    assert not left.strip(), f"the tmpfs is still over cd's {STATE}: {left}"


def test_cd_disk_full_during_a_build_fails_clearly_and_changes_nothing(
    lab: State, fault_row: FaultRow
) -> None:
    live = release.current_routes(lab, "app").live
    before = release.current_routes(lab, "app")
    tags_before = set(Lab.of(lab).registry.tags(f"{REPOSITORY}/app"))
    token = uuid.uuid4().hex[:8]
    new = conftest.commit_to_cd_side(
        lab, f"sed -i 's|<title>|<title>disk-{token} |' {WEB}", f"disk full on cd: {token}"
    )
    sha = new[:12]
    try:
        # a tmpfs over the runner's folder, seeded with what it holds but the logs of earlier
        # builds (rewriting one reuses its own space: a build must need new space to meet the
        # full disk), with 2 MiB to spare
        conftest.on_host(
            lab,
            "cd",
            f"""set -e
rm -rf /tmp/cdlab-state-seed
mkdir -p {STATE} /tmp/cdlab-state-seed
cp -a {STATE}/. /tmp/cdlab-state-seed/
rm -rf /tmp/cdlab-state-seed/logs
size=$(( $(du -sk /tmp/cdlab-state-seed | cut -f1) + 2048 ))
{_syscall(f"mount(b'{FS}', b'{STATE}', b'tmpfs', 0, b'size=%sk,mode=0700' % b'$size')")}
cp -a /tmp/cdlab-state-seed/. {STATE}/
rm -rf /tmp/cdlab-state-seed""",
        )
        with load.running(rate=RATE, name="fault-cd-disk-full") as traffic:
            time.sleep(2)
            traffic.mark(f"push {sha}")
            hook = HookRun(lab, new, f"==> image app:{sha} on cd")
            building = hook.wait_for(FILLED, 300)
            traffic.mark("cd's disk full")
            out = hook.end()
            time.sleep(2)
            traffic.mark("end")
        assert building, f"the build of {sha} never started, or cd was not filled:\n{out[-3000:]}"
        routes_after = release.current_routes(lab, "app")
        left = candidates_left(lab, sha)
        tags_after = set(Lab.of(lab).registry.tags(f"{REPOSITORY}/app"))
        # once space is freed, the same commit deploys (nothing half-done stands in the way)
        _free(lab)
        again = conftest.on_host(lab, "cd", conftest.cd_hook(new), check=False)
    finally:
        # what the runner wrote meanwhile goes with the tmpfs: its records are in etcd
        _end_the_hook(lab)
        _unmount(lab)
    fault_row(
        "cd's disk full during a build",
        "the runner's folder on cd (a tmpfs) filled when the build stage started, under load",
        len(traffic.failed),
        traffic.gap(),
        None,
        "the push fails naming the full disk and how to free it; nothing changes on prod or in "
        "the registry; 0 failed; the same commit deploys once space is freed",
    )
    loadreport.write(traffic, load.REPORTS, {"fault": "cd's disk full during a build"})
    print(f"\nthe push, cd's disk full:\n{out[-2500:]}")
    assert "cdlab-result: failed" in out, out[-3000:]
    said = [ln for ln in out.splitlines() if ln.startswith(f"cdlab: deploy of app {sha[:7]}")]
    # the deploy's own error: what was being written, and that the disk is full (next line)
    assert said and f"writing {STATE}/logs/" in out and HINT in out and "free space" in out, out[
        -3000:
    ]
    assert "Traceback" not in out, out[-3000:]
    # nothing changed: routes, prod's containers, the registry's releases of app
    assert routes_after == before
    assert left == []
    assert tags_after == tags_before
    failed = [
        r
        for r in records.history(lab.runs, "app", Lab.of(lab).etcd)
        if r.release == sha and r.kind == "deploy"
    ]
    # in the shared history: the run that met the full disk, then the retry
    assert [r.result for r in failed] == ["failed", "succeeded"], failed
    assert traffic.failed == [], f"{len(traffic.failed)} requests failed"
    assert traffic.problems() == [], traffic.problems()
    assert traffic.rate_problem() is None, traffic.rate_problem()
    assert all(r.release == live for r in traffic.requests if r.ok)
    # and the retry, space freed: the same commit goes live
    assert "cdlab-result: succeeded" in again, again[-3000:]
    assert release.current_routes(lab, "app").live == sha
