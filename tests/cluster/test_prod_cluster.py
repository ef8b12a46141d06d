"""prod as a 3-node swarm, on a lab of its own beside the default one (its topology names a
manager and two workers): brought up, shown by ``lab.status --json``, idempotent, a worker host
recreated and joined again, then destroyed.

Minutes on a 2-core machine: run by name, `invoke test --suite cluster`."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from lab import config, testing

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".lab" / "cluster-test"
NAME = "cdlab-cluster"


def topology() -> dict[str, Any]:
    """The default topology made a cluster lab: its own name, subnet and ports, prod the
    manager of two workers on new addresses."""
    data: dict[str, Any] = json.loads(config.TOPOLOGY.read_text())
    data["name"] = data["network"]["name"] = NAME
    data["network"]["subnet"] = "10.100.210.0/24"
    data["network"]["gateway"] = "10.100.210.1"
    for h in data["hosts"]:
        h["address"] = "10.100.210." + h["address"].rsplit(".", 1)[1]
        h["publish"] = [config.shifted(p, 1000) for p in h["publish"]]  # app on 9000
        if h["name"] == "prod":
            h["swarm"] = "manager"
    for n, last in ((2, 204), (3, 205)):
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


def cdlab(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    lab = {"CDLAB_TOPOLOGY": str(STATE / "topology.json"), "CDLAB_STATE_DIR": str(STATE)}
    return testing.run_on_lab([str(ROOT / ".venv" / "bin" / "invoke"), *args], lab, timeout)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def nodes() -> dict[str, str]:
    done = cdlab("lab.status", "--json")
    ok(done)
    rows = json.loads(done.stdout)
    return {r["name"]: r["swarm"] for r in rows if r["swarm"] != "-"}


def test_prod_as_three_nodes_joined_shown_idempotent_and_rejoined() -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    (STATE / "topology.json").write_text(json.dumps(topology(), indent=2) + "\n")
    timings: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        out = ok(cdlab("lab.up"))
        timings["up"] = time.monotonic() - t0
        assert "prod's swarm (3 nodes)" in out, out[-2000:]
        assert nodes() == {
            "prod": "manager ready",
            "prod-2": "worker ready",
            "prod-3": "worker ready",
        }
        t0 = time.monotonic()
        again = ok(cdlab("lab.up"))
        timings["second up"] = time.monotonic() - t0
        assert "prod-2, prod-3 ready" in again, again[-2000:]
        # a worker host lost with its engine: lab.up makes it again; it joins as a new node
        # and the old one, left down in the manager's list, is removed
        subprocess.run(["docker", "rm", "-f", f"{NAME}-prod-3"], check=True, capture_output=True)
        subprocess.run(["docker", "volume", "rm", f"{NAME}-prod-3-docker"], capture_output=True)
        t0 = time.monotonic()
        back = ok(cdlab("lab.up"))
        timings["worker recreated"] = time.monotonic() - t0
        assert "join prod-3" in back, back[-2000:]
        assert nodes() == {
            "prod": "manager ready",
            "prod-2": "worker ready",
            "prod-3": "worker ready",
        }
    finally:
        t0 = time.monotonic()
        gone = cdlab("lab.destroy")
        timings["destroy"] = time.monotonic() - t0
        report = ROOT / "reports" / "cluster.txt"
        report.parent.mkdir(exist_ok=True)
        report.write_text("".join(f"{k}: {v:.1f} s\n" for k, v in timings.items()))
    assert gone.returncode == 0, gone.stderr[-2000:]


@pytest.fixture(autouse=True)
def _no_lab_chosen() -> None:
    assert not os.environ.get("CDLAB_LAB")
