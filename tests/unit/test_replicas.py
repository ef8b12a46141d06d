"""A release on a swarm is a service of N replicas (``lab.release.replicas``): how many it
wants; no engine."""

from __future__ import annotations

import pytest

from lab.release import replicas


@pytest.mark.parametrize(
    ("manifest", "nodes", "wanted"),
    [
        (None, 0, 0),  # no swarm: a plain container
        (3, 0, 0),  # the manifest's value is not applied on a single host
        (None, 1, 1),
        (None, 3, 3),  # one per ready node
        (2, 3, 2),
        (5, 3, 5),  # more than the nodes: Swarm spreads them, some nodes run two
        (1, 3, 1),
        (None, 12, 8),  # never more than the proxy's slots for a release
    ],
)
def test_wanted_is_the_manifests_or_one_per_node_and_none_without_a_swarm(
    manifest: int | None, nodes: int, wanted: int
) -> None:
    assert replicas.wanted(manifest, nodes) == wanted


def test_wanted_refuses_a_negative_node_count() -> None:
    with pytest.raises(ValueError, match="-1"):
        replicas.wanted(None, -1)
