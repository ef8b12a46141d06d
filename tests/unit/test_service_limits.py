"""A service's ``[limits]`` (``lab.stack.limits``): what each of its containers may use, read
from the manifest with a default for every key; a bad value or an unknown key is refused with
the field, the value, the manifest (so the service) and an example of the expected form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lab.errors import ConfigError, UnknownKey
from lab.stack import limits, services
from lab.stack.limits import MIB, Limits

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "services/app/service.toml"
MIN = {"name": "app", "port": 8000}


def parsed(table: dict[str, Any]) -> Limits:
    return services.parse({**MIN, "limits": table}, "services/app", {"Dockerfile"}, SOURCE).limits


def test_an_absent_table_or_key_takes_the_defaults() -> None:
    bare = services.parse(MIN, "services/app", {"Dockerfile"}, SOURCE)
    assert bare.limits == Limits(256 * MIB, 256, 0.0) == parsed({})
    assert parsed({"pids": 64}) == Limits(256 * MIB, 64, 0.0)
    assert parsed({"memory": "1g"}) == Limits(1024 * MIB, 256, 0.0)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("16m", 16 * MIB),
        ("256m", 256 * MIB),
        ("256M", 256 * MIB),
        ("1536m", 1536 * MIB),
        ("1g", 1024 * MIB),
        ("2G", 2048 * MIB),
        ("999g", 999 * 1024 * MIB),
    ],
)
def test_memory_sizes_are_read_in_bytes(text: str, size: int) -> None:
    assert limits.parse_memory(text) == size
    assert parsed({"memory": text}).memory == size


def test_cpus_take_whole_and_fractional_numbers() -> None:
    assert parsed({"cpus": 1}).cpus == 1.0
    assert parsed({"cpus": 0.5}).cpus == 0.5
    assert parsed({"cpus": 64}).cpus == 64.0


@pytest.mark.parametrize(
    ("table", "field", "value", "example"),
    [
        ({"memory": "256"}, "memory", "256", 'memory = "256m"'),
        ({"memory": "256mb"}, "memory", "256mb", 'memory = "256m"'),
        ({"memory": "0.5g"}, "memory", "0.5g", 'memory = "256m"'),
        ({"memory": "8m"}, "memory", "8m", 'memory = "256m"'),
        ({"memory": "1000g"}, "memory", "1000g", 'memory = "256m"'),
        ({"memory": 268435456}, "memory", 268435456, 'memory = "256m"'),
        ({"memory": ""}, "memory", "", 'memory = "256m"'),
        ({"memory": "256m\n"}, "memory", "256m\n", 'memory = "256m"'),
        ({"pids": 0}, "pids", 0, "pids = 256"),
        ({"pids": -5}, "pids", -5, "pids = 256"),
        ({"pids": 32769}, "pids", 32769, "pids = 256"),
        ({"pids": "256"}, "pids", "256", "pids = 256"),
        ({"pids": True}, "pids", True, "pids = 256"),
        ({"pids": 2.0}, "pids", 2.0, "pids = 256"),
        ({"cpus": 0}, "cpus", 0, "cpus = 1.5"),
        ({"cpus": -1.5}, "cpus", -1.5, "cpus = 1.5"),
        ({"cpus": 64.5}, "cpus", 64.5, "cpus = 1.5"),
        ({"cpus": "2"}, "cpus", "2", "cpus = 1.5"),
        ({"cpus": True}, "cpus", True, "cpus = 1.5"),
        ({"cpus": float("nan")}, "cpus", None, "cpus = 1.5"),
    ],
)
def test_a_bad_limit_names_the_service_the_key_the_value_and_an_example(
    table: dict[str, Any], field: str, value: object, example: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parsed(table)
    message = str(err.value)
    assert (err.value.field, err.value.source) == (field, f"{SOURCE} [limits]")
    if value is not None:  # NaN is not equal to itself
        assert err.value.value == value and repr(value) in message
    assert f"'{field}'" in message and "services/app/service.toml [limits]" in message
    assert f"e.g. {example}" in message


def test_a_table_that_is_not_one_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        parsed("256m")  # type: ignore[arg-type]
    assert (err.value.field, err.value.source) == ("limits", SOURCE)
    assert "cpus, memory, pids" in str(err.value)


@pytest.mark.parametrize(
    ("key", "nearest"), [("memroy", "memory"), ("pid", "pids"), ("cpu", "cpus"), ("swap", "")]
)
def test_an_unknown_key_in_limits_is_refused_with_the_nearest_one(key: str, nearest: str) -> None:
    with pytest.raises(UnknownKey) as err:
        parsed({"memory": "256m", key: 1})
    assert (err.value.field, err.value.nearest) == (key, nearest)
    assert err.value.source == f"{SOURCE} [limits]"
    assert str(err.value).startswith(f"unknown key '{key}' in {SOURCE} [limits]")
    assert str(err.value).endswith("Known keys: cpus, memory, pids")


def test_a_limit_at_a_commit_is_refused_naming_the_commit() -> None:
    files = {
        "services/app/service.toml": b'name = "app"\nport = 8000\n[limits]\nmemory = "lots"\n',
        "services/app/Dockerfile": b"FROM x\n",
    }
    with pytest.raises(ConfigError) as err:
        services.at_commit(ROOT, "3f9c2e1a0b1c" + "0" * 28, "app", files)
    assert err.value.source == f"{SOURCE} at 3f9c2e1a0b1c [limits]"


@pytest.mark.parametrize("name", services.names(ROOT))
def test_every_service_of_the_repository_fits_its_limits(name: str) -> None:
    """The defaults (or the manifest's own) leave room: two gunicorn workers of eight threads
    and a stdlib server use well under 256m and a few dozen threads."""
    svc = services.load(ROOT, name)
    assert svc.limits.memory >= 256 * MIB and svc.limits.pids >= 64
