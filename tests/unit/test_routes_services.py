from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab import config
from lab.errors import ConfigError
from lab.estate.state import State
from lab.release import api as release
from lab.release import containers, routes
from lab.stack import services

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


@pytest.mark.parametrize(
    ("changed", "expected"),
    [
        (None, ["app", "quotes"]),
        ([], []),
        (["README.md", "lab/ci.py"], []),
        (["services/quotes/quotes/service.py"], ["quotes"]),
        (["services/app/app/web.py", "services/quotes/service.toml"], ["app", "quotes"]),
        (["services/application/x"], []),
    ],
)
def test_a_push_deploys_the_services_it_changed(
    changed: list[str] | None, expected: list[str]
) -> None:
    from lab.release import ci

    assert ci.to_deploy(["app", "quotes"], changed) == expected


def test_proxy_frontends_come_from_every_manifest() -> None:
    from cdlab_proxy import document

    from lab.ports import frontends

    found = services.load_all(Path(__file__).resolve().parents[2])
    docs = [frontends.frontend_doc(s) for s in found]
    common = {"maxconn": 0, "try_timeout": 3}
    assert docs == [
        {"name": "app", "public_port": 8000, "port": 8000, "health": "/health", **common},
        {"name": "pypiserver", "public_port": 8002, "port": 8080, "health": "/health", **common},
        {"name": "quotes", "public_port": 8001, "port": 9000, "health": "/ready", **common},
    ]
    healths = [document.parse_frontend(d, d["name"]).health for d in docs]
    assert healths == ["/health", "/health", "/ready"]


def _rel(n: int) -> str:
    return f"{n:012x}"


@pytest.mark.parametrize(
    ("deployed", "registry", "pool", "retain", "kept", "pruned"),
    [
        # fewer releases than retain: nothing goes
        ([1, 2], [1, 2], [2, 1], 5, [2, 1], []),
        # the newest deploys are kept, the oldest pruned
        ([1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7], [7, 6], 5, [7, 6, 5, 4, 3], [1, 2]),
        # a rollback: the pool comes first even when older than the newest deploys
        ([1, 2, 3, 4, 5, 6, 7, 2], [1, 2, 3, 4, 5, 6, 7], [2, 7], 3, [2, 7, 6], [1, 3, 4, 5]),
        # builds that never went live are pruned; infra tags are never touched
        ([1, 2], [1, 2, 9], [2, 1], 5, [2, 1], [9]),
        # releases already gone from the registry (a destroyed lab) do not take a place
        ([1, 2, 3, 4, 5], [4, 5], [5, 4], 3, [5, 4], []),
        ([1, 2, 3, 4, 5, 6], [1, 2, 5, 6], [6, 5], 3, [6, 5, 2], [1]),
    ],
)
def test_retention_keeps_the_pool_and_the_newest(
    deployed: list[int],
    registry: list[int],
    pool: list[int],
    retain: int,
    kept: list[int],
    pruned: list[int],
) -> None:
    servers = tuple(
        routes.Server(_rel(r), f"app-{_rel(r)}", 100 if i == 0 else 0, i > 0)
        for i, r in enumerate(pool)
    )
    got = routes.retention(
        [_rel(r) for r in deployed],
        [_rel(r) for r in registry] + ["latest", "8fbee5eae721x"],
        routes.Routes("app", servers),
        retain,
    )
    assert got == ([_rel(r) for r in kept], sorted(_rel(r) for r in pruned))


def test_a_release_runs_immutable_unprivileged_and_named_after_itself(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    state = State(config.parse_topology(json.loads(config.TOPOLOGY.read_text()), root, tmp_path))
    app = services.load(root, "app")
    image = "10.100.200.200:5000/cdlab/app@sha256:" + "a" * 64
    spec = containers.container_spec(state, release.Candidate(app, "3f9c2e1a0b1c", image, None))
    assert (spec["name"], spec["image"], spec["network"]) == (
        "app-3f9c2e1a0b1c",
        image,
        "cdlab-apps",
    )
    assert spec["read_only"] and spec["tmpfs"] == {"/tmp": "size=16m"}
    assert spec["user"] == "10001:10001" and spec["cap_drop"] == ["ALL"]
    assert spec["security_opt"] == ["no-new-privileges:true"]
    assert spec["restart_policy"] == {"Name": "always"}
    assert spec["labels"]["cdlab.release"] == "3f9c2e1a0b1c" and spec["labels"]["cdlab.keepalive"]
    env = spec["environment"]
    assert (env["RELEASE"], env["IMAGE"], env["SERVICE_NAME"]) == ("3f9c2e1a0b1c", image, "app")
    assert env["DATABASE_URL"].startswith("postgresql://app:") and env["CARBON_HOST"] == "carbon"
    check = spec["healthcheck"]
    assert check["test"] == ["CMD-SHELL", app.probe] and check["interval"] == 10 * 10**9
