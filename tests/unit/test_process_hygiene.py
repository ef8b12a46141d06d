import sys


def test_locust_and_gevent_stay_out_of_the_pytest_process() -> None:
    # locust's gevent monkey-patches whatever imports it: load runs as its own process only.
    assert "gevent" not in sys.modules
    assert "locust" not in sys.modules


import os  # noqa: E402

import pytest  # noqa: E402


@pytest.mark.xdist_group("guard")
def test_xdist_groups_are_honoured(request: pytest.FixtureRequest) -> None:
    """Tests that change prod rely on xdist_group to never overlap; if a pytest or xdist upgrade
    stops tagging groups (pytest 9 with xdist 3.8 does), this fails instead of the lab flaking."""
    if not os.environ.get("PYTEST_XDIST_WORKER") or (
        request.config.getvalue("dist") != "no" and not request.config.getvalue("loadgroup")
    ):
        pytest.skip("not running under pytest-xdist with --dist loadgroup")
    assert request.node.nodeid.endswith("@guard")
