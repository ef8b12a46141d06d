"""Project-wide pytest setup: a suite's marker follows from its folder."""

from __future__ import annotations

from pathlib import Path

import pytest

SUITES = {"unit": "unit", "integration": "integration", "e2e": "e2e"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.path)).parts
        for folder, marker in SUITES.items():
            if folder in parts:
                item.add_marker(getattr(pytest.mark, marker))
