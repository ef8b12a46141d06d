"""Three named labs up side by side with the default one, each passing a smoke deploy and
rollback through its own ports, then each destroyed without touching the others.

A quarter of an hour on a 2-core machine: run by name, `invoke test --suite multilab`, on a
machine whose default lab is up (it must still serve, unchanged, at the end)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import requests

from lab import config, testing

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("ml-a", "ml-b", "ml-c")


def cdlab(lab: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return testing.run_on_lab(
        [str(ROOT / "cdlab"), *args], {"CDLAB_LAB": lab} if lab else {}, timeout
    )


def served(port: int, address: str = "127.0.0.1") -> str:
    """The release that answers ``/version`` at ``address:port``, or why none did."""
    s = requests.Session()
    s.trust_env = False
    try:
        return s.get(f"http://{address}:{port}/version", timeout=5).headers.get("X-Release", "")
    except requests.RequestException as exc:
        return f"no answer ({type(exc).__name__})"


def memory_mib(lab_name: str) -> float:
    """What a lab's host containers use now (their cgroups hold every container they run)."""
    import docker

    local = docker.from_env()
    try:
        hosts = local.containers.list(filters={"label": f"cdlab.lab={lab_name}"})
        used = 0
        for c in hosts:
            mem = c.stats(stream=False)["memory_stats"]
            used += mem.get("usage", 0) - mem.get("stats", {}).get("inactive_file", 0)
        return used / 2**20
    finally:
        local.close()


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_three_named_labs_side_by_side_deploy_roll_back_and_go_alone() -> None:
    default = config.load(ROOT, {}).published(8000)
    before = served(default)
    assert len(before) == 12, f"the default lab must be up and serving first: {before}"
    ports = {n: config.load(ROOT, {"CDLAB_LAB": n}).published(8000) for n in NAMES}
    assert len({default, *ports.values()}) == 4
    timings: dict[str, dict[str, float]] = {}
    up: list[str] = []  # the labs that came up (and must keep answering until destroyed)
    try:
        for name in NAMES:
            t0 = time.monotonic()
            ok(cdlab(name, "up"))
            up.append(name)
            timings[name] = {"up": time.monotonic() - t0}
            live = served(ports[name])
            assert len(live) == 12, f"{name} does not serve on {ports[name]}: {live}"
            timings[name]["memory up MiB"] = memory_mib(f"cdlab-{name}")
        listed = ok(cdlab("", "lab.list"))
        for name in ("cdlab", *(f"cdlab-{n}" for n in NAMES)):
            assert f"\n{name} " in "\n" + listed, listed
        for name in NAMES:
            live = served(ports[name])
            t0 = time.monotonic()
            ok(cdlab(name, "deploy", "--ref", "HEAD~1"))
            other = served(ports[name])
            assert other != live and len(other) == 12, (live, other)
            ok(cdlab(name, "rollback"))
            assert served(ports[name]) == live
            timings[name]["deploy and rollback"] = time.monotonic() - t0
            timings[name]["memory after MiB"] = memory_mib(f"cdlab-{name}")
            assert served(default) == before  # the default lab never moved
    finally:
        for name in NAMES:
            t0 = time.monotonic()
            gone = cdlab(name, "lab.destroy")
            timings.setdefault(name, {})["destroy"] = time.monotonic() - t0
            others = [n for n in up if n > name]
            assert gone.returncode == 0, gone.stderr[-2000:]
            assert served(default) == before
            for o in others:  # the labs still up answer as before
                assert len(served(ports[o])) == 12, f"{o} stopped answering when {name} went"
    listed = ok(cdlab("", "lab.list"))
    assert not [n for n in NAMES if f"cdlab-{n}" in listed], listed
    report = ROOT / "reports" / "multilab.txt"
    report.parent.mkdir(exist_ok=True)
    report.write_text(
        "\n".join(
            f"{n}: "
            + ", ".join(
                f"{k[:-4]} {v:.0f} MiB" if k.endswith(" MiB") else f"{k} {v:.0f} s"
                for k, v in t.items()
            )
            for n, t in timings.items()
        )
        + "\n"
    )


@pytest.fixture(autouse=True)
def _default_lab_untouched() -> None:
    """Nothing here may run with a lab chosen in the environment (it names its labs itself)."""
    assert not os.environ.get("CDLAB_LAB")
