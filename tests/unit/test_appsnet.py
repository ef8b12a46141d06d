"""The apps network's plan: created when missing, left alone in shape, never replaced by
another kind (pure)."""

from __future__ import annotations

import pytest

from lab.errors import StackError
from lab.stack import appsnet

BRIDGE = {"Driver": "bridge", "Internal": True, "Attachable": False}
OVERLAY = {"Driver": "overlay", "Internal": True, "Attachable": True}


@pytest.mark.parametrize(
    ("found", "swarm", "todo"),
    [
        (None, False, "create"),
        (None, True, "create"),
        (BRIDGE, False, ""),
        (OVERLAY, True, ""),
        ({**BRIDGE, "Attachable": True}, False, ""),  # attachable does no harm
    ],
)
def test_plan(found: dict[str, object] | None, swarm: bool, todo: str) -> None:
    assert appsnet.plan(appsnet.facts(found), appsnet.wanted(swarm)) == todo


@pytest.mark.parametrize(
    ("found", "swarm", "said"),
    [
        (
            BRIDGE,
            True,
            "it is an internal bridge, the topology needs an internal attachable overlay",
        ),
        (
            OVERLAY,
            False,
            "it is an internal attachable overlay, the topology needs an internal bridge",
        ),
        ({**BRIDGE, "Internal": False}, False, "a non-internal bridge"),
        ({**OVERLAY, "Attachable": False}, True, "it is an internal overlay"),
    ],
)
def test_another_kind_is_refused_with_the_next_step(
    found: dict[str, object], swarm: bool, said: str
) -> None:
    with pytest.raises(StackError) as err:
        appsnet.plan(appsnet.facts(found), appsnet.wanted(swarm))
    assert said in str(err.value)
    assert "invoke lab.destroy" in str(err.value)


def test_create_args() -> None:
    bridge = appsnet.create_args(appsnet.wanted(False))
    assert bridge["options"] == {"com.docker.network.bridge.name": "cdlab-apps0"}
    assert bridge["internal"] and bridge["driver"] == "bridge" and "attachable" not in bridge
    overlay = appsnet.create_args(appsnet.wanted(True))
    assert overlay["driver"] == "overlay" and overlay["internal"] and overlay["attachable"]
    assert "options" not in overlay
