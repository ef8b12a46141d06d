"""prod as a 3-node swarm on the cluster suite's lab (tests/cluster/conftest.py): shown by
``lab.status --json`` with each node's role and replicas, idempotent, a worker host recreated
and joined again.

Minutes on a 2-core machine: run by name, `invoke test --suite cluster`."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest

from tests.cluster.conftest import TIMINGS, Cluster, ok

# one lab for the suite: every test on one xdist worker (each worker would bring it up)
pytestmark = pytest.mark.xdist_group("cluster")


def status(cluster: Cluster) -> list[dict[str, Any]]:
    done = cluster.cdlab("lab.status", "--json")
    ok(done)
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def nodes(cluster: Cluster) -> dict[str, str]:
    return {r["name"]: r["swarm"] for r in status(cluster) if r["swarm"] != "-"}


def test_prod_as_three_nodes_shown_idempotent_and_rejoined(cluster: Cluster) -> None:
    rows = {r["name"]: r for r in status(cluster)}
    assert {n: rows[n]["swarm"] for n in ("prod", "prod-2", "prod-3")} == {
        "prod": "manager ready",
        "prod-2": "worker ready",
        "prod-3": "worker ready",
    }
    # lab.up deployed the checkout: each service has a replica on every node
    for n in ("prod", "prod-2", "prod-3"):
        assert any(k.startswith("app-") for k in rows[n]["replicas"]), rows[n]
    assert rows["cd"]["swarm"] == "-" and rows["cd"]["replicas"] is None
    t0 = time.monotonic()
    again = ok(cluster.cdlab("lab.up"))
    TIMINGS["second up"] = time.monotonic() - t0
    assert "prod-2, prod-3 ready" in again, again[-2000:]


def test_a_worker_host_lost_with_its_engine_is_made_again_and_joins(cluster: Cluster) -> None:
    # lab.up makes it again; it joins as a new node and the old one, left down in the
    # manager's list, is removed
    host = cluster.host("prod-3")
    subprocess.run(["docker", "rm", "-f", host], check=True, capture_output=True)
    subprocess.run(["docker", "volume", "rm", f"{host}-docker"], capture_output=True)
    t0 = time.monotonic()
    back = ok(cluster.cdlab("lab.up"))
    TIMINGS["worker recreated"] = time.monotonic() - t0
    assert "join prod-3" in back, back[-2000:]
    assert nodes(cluster) == {
        "prod": "manager ready",
        "prod-2": "worker ready",
        "prod-3": "worker ready",
    }
