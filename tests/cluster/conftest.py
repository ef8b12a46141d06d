"""The cluster suite's own lab: prod a 3-node swarm, beside the default lab (its own name,
subnet and workstation ports). Brought up once for the suite and destroyed after it; every test
here, and the ``lab`` fixture, act on it (the session's environment names its topology).

``CDLAB_CLUSTER_STATE_DIR`` names a cluster lab already up (its folder holds its
``topology.json``): the suite uses it and leaves it up (a developer's loop)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import config, testing

ROOT = Path(__file__).resolve().parents[2]
NAME = "cdlab-cluster"
TIMINGS: dict[str, float] = {}


def topology() -> dict[str, Any]:
    """The default topology made a cluster lab: its own name, subnet and ports, prod the
    manager of two workers (the default's, or added on new addresses)."""
    data: dict[str, Any] = json.loads(config.TOPOLOGY.read_text())
    data["name"] = data["network"]["name"] = NAME
    data["network"]["subnet"] = "10.100.210.0/24"
    data["network"]["gateway"] = "10.100.210.1"
    for h in data["hosts"]:
        h["address"] = "10.100.210." + h["address"].rsplit(".", 1)[1]
        h["publish"] = [config.shifted(p, 1000) for p in h["publish"]]  # app on 9000
        if h["name"] == "prod":
            h["swarm"] = "manager"
    named = {h["name"] for h in data["hosts"]}
    for n, last in ((2, 204), (3, 205)):
        if f"prod-{n}" in named:  # the default topology's own workers, renumbered above
            continue
        data["hosts"].append(
            {
                "name": f"prod-{n}",
                "address": f"10.100.210.{last}",
                "role": "engine",
                "project_mount": False,
                "swarm": "worker",
            }
        )
    return data


class Cluster:
    def __init__(self, state: Path, own: bool) -> None:
        self.state, self.own = state, own
        self.env = {"CDLAB_TOPOLOGY": str(state / "topology.json"), "CDLAB_STATE_DIR": str(state)}
        self.name = json.loads((state / "topology.json").read_text())["name"]

    def cdlab(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        invoke = str(ROOT / ".venv" / "bin" / "invoke")
        return testing.run_on_lab([invoke, *args], self.env, timeout)

    def host(self, name: str) -> str:
        """The host container's name on the workstation's engine."""
        return f"{self.name}-{name}"


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.fixture(scope="session", autouse=True)
def cluster() -> Iterator[Cluster]:
    """The cluster lab, up; the session's environment names it (so ``lab`` is it)."""
    assert not os.environ.get("CDLAB_LAB")
    given = os.environ.get("CDLAB_CLUSTER_STATE_DIR")
    if given:
        lab = Cluster(Path(given).resolve(), own=False)
    else:
        state = ROOT / ".lab" / "cluster-test"
        state.mkdir(parents=True, exist_ok=True)
        (state / "topology.json").write_text(json.dumps(topology(), indent=2) + "\n")
        lab = Cluster(state, own=True)
    saved = {k: os.environ.get(k) for k in lab.env}
    os.environ.update(lab.env)
    t0 = time.monotonic()
    out = ok(lab.cdlab("lab.up"))
    TIMINGS["up"] = time.monotonic() - t0
    assert "prod's swarm (3 nodes)" in out, out[-2000:]
    try:
        yield lab
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if lab.own:
            t0 = time.monotonic()
            gone = lab.cdlab("lab.destroy")
            TIMINGS["destroy"] = time.monotonic() - t0
            assert gone.returncode == 0, gone.stderr[-2000:]
        report = ROOT / "reports" / "cluster.txt"
        report.parent.mkdir(exist_ok=True)
        report.write_text("".join(f"{k}: {v:.1f} s\n" for k, v in TIMINGS.items()))
