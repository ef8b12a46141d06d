"""Which services the suite must put back (pure)."""

from __future__ import annotations

from lab.proof import restore


def test_only_services_whose_live_release_changed_are_put_back() -> None:
    before = {"app": "a1", "quotes": "q1", "pypiserver": "p1"}
    now = {"app": "b2", "quotes": "q1"}  # pypiserver lost its routes: put back too
    assert restore.moved(before, now) == {"app": ("b2", "a1"), "pypiserver": ("", "p1")}


def test_a_service_deployed_by_the_tests_only_is_not_touched() -> None:
    assert restore.moved({"app": "a1"}, {"app": "a1", "people": "x9"}) == {}
