"""The shipped topology as a document, and the single-host lab made from it (prod alone, on
no swarm), for the unit tests that build their own topologies from the default one."""

from __future__ import annotations

import copy
import json
from typing import Any

from lab import config


def shipped() -> dict[str, Any]:
    """A fresh copy of lab/topology.json, parsed: prod the manager of a 3-node swarm."""
    doc: dict[str, Any] = json.loads(config.TOPOLOGY.read_text())
    return doc


def single_prod(doc: dict[str, Any] | None = None) -> dict[str, Any]:
    """``doc`` (the shipped topology by default) without its swarm: the workers dropped and no
    host's ``swarm`` field left, so prod is one host as in the source material."""
    out = copy.deepcopy(doc if doc is not None else shipped())
    out["hosts"] = [
        {key: value for key, value in host.items() if key != "swarm"}
        for host in out["hosts"]
        if host.get("swarm") != "worker"
    ]
    return out


def three_nodes() -> dict[str, Any]:
    """The single-host topology made a swarm here: prod its manager, prod-2 and prod-3 added."""
    data = single_prod()
    for h in data["hosts"]:
        if h["name"] == "prod":
            h["swarm"] = "manager"
    for n, last in ((2, 204), (3, 205)):
        data["hosts"].append(
            {
                "name": f"prod-{n}",
                "address": f"10.100.200.{last}",
                "role": "engine",
                "project_mount": False,
                "swarm": "worker",
            }
        )
    return data
