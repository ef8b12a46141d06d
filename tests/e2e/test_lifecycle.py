"""lab.status, an idempotent lab.up, and lab.destroy (on a separate, throwaway lab)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import docker.types
import pytest

from lab import config as lab_config
from lab.config import LABEL
from lab.errors import PreflightError
from lab.estate import lifecycle
from lab.estate.state import State
from lab.ports import engines
from lab.progress import Progress
from tests.conftest import invoke

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.xdist_group("prod")  # serialised with every test that changes prod


def test_status_json_lists_every_host_running_at_its_address(lab: State) -> None:
    done = invoke("lab.status", "--json")
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)}
    assert {n: r["address"] for n, r in rows.items()} == {
        h.name: h.address for h in lab.config.hosts
    }
    assert {"registry", "prod", "cd", "dev"} <= set(rows)  # the source material's four
    assert {r["state"] for r in rows.values()} == {"running"}
    assert all(r["engine"][0].isdigit() for n, r in rows.items() if n != "registry")
    assert rows["registry"]["engine"] == "registry HTTP 200"


def test_a_second_lab_up_changes_nothing(lab: State) -> None:
    # the first converges (an earlier test in this group may have deployed another release)
    assert invoke("lab.up").returncode == 0
    before = set(lab.runs.glob("up-*.json"))
    done = invoke("lab.up")
    assert done.returncode == 0, done.stderr
    (record,) = set(lab.runs.glob("up-*.json")) - before
    stages = json.loads(record.read_text())["stages"]
    changed = [s for s in stages if s["status"] != "unchanged"]
    assert changed == [], f"a second lab.up changed: {changed}"
    assert len(stages) >= 8
    assert "0 stage(s) changed" in done.stderr


def _labelled(local: Any, name: str) -> dict[str, list[str]]:
    flt = {"label": f"{LABEL}={name}"}
    return {
        "containers": sorted(c.name for c in local.containers.list(all=True, filters=flt)),
        "volumes": sorted(v.name for v in local.volumes.list(filters=flt)),
        "networks": sorted(n.name for n in local.networks.list(filters=flt)),
        "images": sorted(t for i in local.images.list(filters=flt) for t in i.tags),
    }


def second_lab(tmp_path: Path, name: str, octet: int) -> lab_config.LabConfig:
    """A two-host lab of its own (name, network 10.100.<octet>.0/24, state under tmp_path)."""
    net = f"10.100.{octet}"
    topology = {
        "name": name,
        "network": {"name": name, "subnet": f"{net}.0/24", "gateway": f"{net}.1"},
        "registry_port": 5000,
        "engine_port": 2376,
        "hosts": [
            {
                "name": "registry",
                "address": f"{net}.200",
                "role": "registry",
                "project_mount": False,
            },
            {"name": "cd", "address": f"{net}.202", "role": "engine", "project_mount": False},
        ],
    }
    (tmp_path / "topology.json").write_text(json.dumps(topology))
    return lab_config.load(
        environ={
            "CDLAB_TOPOLOGY": str(tmp_path / "topology.json"),
            "CDLAB_STATE_DIR": str(tmp_path / "state"),
        }
    )


def test_destroy_removes_exactly_its_own_lab(lab: State, tmp_path: Path) -> None:
    """A second lab (own name, network 10.100.201.0/24, two hosts) goes up, is destroyed, and
    leaves nothing of its own behind, while the main lab keeps every resource."""
    cfg = second_lab(tmp_path, "cdlabt", 201)
    local = engines.local()
    main_before = _labelled(local, lab.config.name)
    try:
        lifecycle.up(cfg, Progress(out=None))
        up = _labelled(local, "cdlabt")
        assert up["containers"] == ["cdlabt-cd", "cdlabt-registry"]
        assert up["networks"] == ["cdlabt"]
        assert up["volumes"] == ["cdlabt-cd-cdlab", "cdlabt-cd-docker", "cdlabt-registry-data"]
        assert [r.state for r in lifecycle.status(cfg)] == ["running", "running"]
    finally:
        removed = lifecycle.destroy(cfg, Progress(out=None))
    assert _labelled(local, "cdlabt") == {
        "containers": [],
        "volumes": [],
        "networks": [],
        "images": [],
    }
    assert sorted(removed["containers"]) == ["cdlabt-cd", "cdlabt-registry"]
    assert _labelled(local, lab.config.name) == main_before


def test_a_taken_subnet_is_refused_before_anything_changes(lab: State, tmp_path: Path) -> None:
    local = engines.local()
    squatter = local.networks.create(
        "cdlab-test-squatter",
        labels={"cdlab.test": "1"},
        ipam=docker.types.IPAMConfig(
            pool_configs=[docker.types.IPAMPool(subnet="10.100.202.0/24", gateway="10.100.202.1")]
        ),
    )
    try:
        cfg = second_lab(tmp_path, "cdlabs", 202)
        with pytest.raises(PreflightError) as err:
            lifecycle.up(cfg, Progress(out=None))
        assert "10.100.202.0/24 is already used by docker network 'cdlab-test-squatter'" in str(
            err.value
        )
        assert "Next step:" in str(err.value)
        assert _labelled(local, "cdlabs") == {
            "containers": [],
            "volumes": [],
            "networks": [],
            "images": [],
        }
    finally:
        squatter.remove()
