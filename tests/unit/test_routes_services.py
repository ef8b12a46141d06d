from __future__ import annotations

from pathlib import Path

import pytest

from lab import routes, services
from lab.errors import ConfigError

R = routes.Routes


def test_stage_adds_the_candidate_at_weight_zero_and_keeps_the_live_one() -> None:
    live = R("app", (routes.Server("a", "app-a", 100),))
    staged = routes.stage(live, "b")
    assert staged.live == "a"
    assert staged.servers[-1] == routes.Server("b", "app-b", 0)


def test_switch_keeps_only_the_previous_release_warm_and_drained() -> None:
    three = R(
        "app",
        (
            routes.Server("a", "app-a", 0, drain=True),
            routes.Server("b", "app-b", 100),
            routes.Server("c", "app-c", 0),
        ),
    )
    after = routes.switch_to(three, "c")
    assert after.live == "c"
    assert after.servers == (
        routes.Server("c", "app-c", 100),
        routes.Server("b", "app-b", 0, drain=True),
    )


def test_switch_to_the_live_release_changes_nothing_but_the_drained_one() -> None:
    live = R("app", (routes.Server("a", "app-a", 100),))
    assert routes.switch_to(live, "a").servers == (routes.Server("a", "app-a", 100),)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"service": "other"}, "routes[app]"),
        (
            {"service": "app", "servers": [{"release": "a", "host": "h", "weight": 999}]},
            "routes[app].servers[0].weight",
        ),
        (
            {"service": "app", "servers": [{"release": "a", "host": "h", "weight": True}]},
            "routes[app].servers[0].weight",
        ),
    ],
)
def test_bad_route_records_name_the_field(doc: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        routes.from_doc(doc, "app")
    assert err.value.field == field


def test_no_record_means_no_routes() -> None:
    assert routes.from_doc(None, "app") == R("app", ())
    assert routes.from_doc(None, "app").live is None


HAS = {"Dockerfile", "Dockerfile.test", "service.toml"}


def test_manifest_defaults_and_test_image() -> None:
    svc = services.parse({"name": "app", "port": 8000}, "services/app", HAS, "x")
    assert (svc.health, svc.test_dockerfile) == ("/health", "Dockerfile.test")


@pytest.mark.parametrize(
    ("doc", "has", "field"),
    [
        ({"port": 8000}, HAS, "name"),
        ({"name": "App!", "port": 8000}, HAS, "name"),
        ({"name": "app"}, HAS, "port"),
        ({"name": "app", "port": "8000"}, HAS, "port"),
        ({"name": "app", "port": 8000, "health": "health"}, HAS, "health"),
        ({"name": "app", "port": 8000}, {"service.toml"}, "Dockerfile"),
        ({"name": "app", "port": 8000, "test_dockerfile": "Nope"}, HAS, "test_dockerfile"),
    ],
)
def test_bad_manifests_name_the_field(doc: dict, has: set[str], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        services.parse(doc, "services/app", has, "services/app/service.toml")
    assert err.value.field == field


def test_the_demo_manifest_loads() -> None:
    root = Path(__file__).resolve().parents[2]
    assert services.load(root, "app").port == 8000
    with pytest.raises(ConfigError, match="one of: app"):
        services.load(root, "nope")
