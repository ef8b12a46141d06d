"""A release on a swarm prod is a Swarm service of N replicas: how many it wants (pure)."""

from __future__ import annotations

from lab.stack.services import MAX_REPLICAS


def wanted(manifest_value: int | None, nodes: int) -> int:
    """Replicas a release wants: 0 when ``nodes`` (ready prod nodes of a swarm) is 0, i.e. no
    swarm, a plain container (a manifest value then goes unapplied); else the manifest's value,
    or one per ready node (at most ``MAX_REPLICAS``)."""
    if nodes < 0:
        raise ValueError(f"ready nodes cannot be negative: {nodes}")
    if nodes == 0:
        return 0
    return manifest_value if manifest_value is not None else min(nodes, MAX_REPLICAS)
