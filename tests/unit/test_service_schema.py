"""``services/service.schema.json``, the manifest's JSON Schema for an editor, agrees with the
parser (``lab.stack.services.parse``): the same keys in every table, the same defaults, the same
verdict on good and bad manifests; every manifest of the repository points at it and passes."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from lab.errors import ConfigError
from lab.release.judge import Thresholds
from lab.stack import services

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "services" / "service.schema.json").read_text())
TABLES = ("env", "hooks", "canary", "load", "migrate", "limits")
MIN = {"name": "app", "port": 8000}


def objects(node: dict[str, Any], at: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object the schema describes (the manifest and its tables), by where it is."""
    if node.get("type") == "object":
        yield at or "(top)", node
    for key, child in node.get("properties", {}).items():
        yield from objects(child, f"{at}.{key}".lstrip("."))


def fields(node: dict[str, Any], at: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for key, child in node.get("properties", {}).items():
        yield f"{at}.{key}".lstrip("."), child
        yield from fields(child, f"{at}.{key}")


def test_the_schema_is_a_draft_2020_12_json_schema() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(SCHEMA)


def test_the_schema_and_the_parser_know_the_same_keys() -> None:
    props = SCHEMA["properties"]
    assert set(props) == services._KNOWN
    assert set(SCHEMA["required"]) == {"name", "port"}
    for table, keys in services._TABLES.items():
        assert set(props[table]["properties"]) == keys, f"[{table}]"
    assert set(services._TABLES) | {"env"} == set(TABLES)


def test_every_table_refuses_a_key_it_does_not_define() -> None:
    found = dict(objects(SCHEMA))
    assert set(found) == {"(top)", *TABLES}
    assert [at for at, node in found.items() if node.get("additionalProperties") is not False] == []


def test_every_field_is_typed_and_described() -> None:
    missing = [
        at for at, node in fields(SCHEMA) if not (node.get("type") and node.get("description"))
    ]
    assert missing == []


def test_the_defaults_are_the_parsers() -> None:
    svc = services.parse(MIN, "services/app", {"Dockerfile"}, "x")
    props = SCHEMA["properties"]
    top = {k: p["default"] for k, p in props.items() if "default" in p and k not in TABLES}
    # no default for replicas: absent means one per ready node of a swarm, a count of the estate
    assert set(top) == set(props) - {"name", "port", "test_dockerfile", "replicas", *TABLES}
    assert top == {k: getattr(svc, k) for k in top}
    assert svc.replicas is None
    canary = {k: p["default"] for k, p in props["canary"]["properties"].items()}
    assert canary == dataclasses.asdict(Thresholds())
    hooks = {k: p["default"] for k, p in props["hooks"]["properties"].items()}
    assert hooks == {"pre_deploy": svc.pre_deploy, "post_deploy": svc.post_deploy}
    assert (props["env"]["default"], svc.env, svc.load_paths) == ({}, (), ())
    given = {k: p["default"] for k, p in props["limits"]["properties"].items() if "default" in p}
    assert (
        given == {"memory": "256m", "pids": 256}
        and "default" not in props["limits"]["properties"]["cpus"]
    )
    assert services.parse({**MIN, "limits": given}, "services/app", {"Dockerfile"}, "x") == svc
    assert svc.limits.cpus == 0.0  # no CPU cap: what an absent cpus means


def test_the_replica_bounds_are_the_parsers() -> None:
    replicas = SCHEMA["properties"]["replicas"]
    assert (replicas["minimum"], replicas["maximum"]) == (1, services.MAX_REPLICAS)


def test_the_try_timeout_bounds_are_the_proxys() -> None:
    from cdlab_proxy import document

    tries = SCHEMA["properties"]["try_timeout"]
    bounds = range(tries["minimum"], tries["maximum"] + 1)
    assert (bounds, tries["default"]) == (document.TRY_TIMEOUTS, document.TRY_TIMEOUT)


TWENTY = [f"/p{i}" for i in range(20)]
MIGRATE = {"command": "alembic upgrade head", "current": "alembic current", "head": "alembic heads"}
# (a change to a minimal manifest, whether both take it); Python's re (which jsonschema uses)
# lets '$' match before a final line break, so a trailing "\n" is left to the parser's tests
SAMPLES: list[tuple[dict[str, Any], bool]] = [
    ({}, True),
    ({"port": 1}, True),
    ({"port": 65535}, True),
    ({"port": 0}, False),
    ({"port": 65536}, False),
    ({"port": "x"}, False),
    ({"port": True}, False),
    ({"port": 80.5}, False),
    ({"public_port": 8008}, True),
    ({"public_port": 7999}, False),
    ({"public_port": 8009}, False),
    ({"name": "a" * 31}, True),
    ({"name": "a-1"}, True),
    ({"name": "a" * 32}, False),
    ({"name": "App"}, False),
    ({"name": "app-"}, False),
    ({"name": "1app"}, False),
    ({"name": ""}, False),
    ({"health": "/"}, True),
    ({"health": "/v1/ready;x=1"}, True),
    ({"health": "/%2Fx(y)*+!@&=~"}, True),
    ({"health": "/" + "a" * 199}, True),
    ({"health": "/" + "a" * 200}, False),
    ({"health": "health"}, False),
    ({"health": "/a\nb"}, False),
    ({"health": "/a b"}, False),
    ({"health": "/a\tb"}, False),
    ({"health": "/a,b"}, False),
    ({"health": "/a:b"}, False),
    ({"health": "/a#b"}, False),
    ({"health": "/a?b"}, False),
    ({"health": "/a$b"}, False),
    ({"health": "/a'b"}, False),
    ({"health": "/a%2"}, False),
    ({"healthcheck": "curl -fsS http://127.0.0.1:80/ && true"}, True),
    ({"healthcheck": "a\nb"}, False),
    ({"test_command": "x\x00"}, False),
    ({"test_dockerfile": "Dockerfile"}, True),
    ({"database": "yes"}, False),
    ({"retain": 2}, True),
    ({"retain": 1}, False),
    ({"retain": 51}, False),
    ({"health_timeout": 600}, True),
    ({"health_timeout": 0}, False),
    ({"health_timeout": 1.5}, False),
    ({"bake": 0}, True),
    ({"bake": 2.5}, True),
    ({"bake": -1}, False),
    ({"bake": 601}, False),
    ({"max_connections": 10000}, True),
    ({"max_connections": -1}, False),
    ({"max_connections": 10001}, False),
    ({"try_timeout": 1}, True),
    ({"try_timeout": 300}, True),
    ({"try_timeout": 0}, False),
    ({"try_timeout": 301}, False),
    ({"try_timeout": -3}, False),
    ({"try_timeout": "3"}, False),
    ({"try_timeout": True}, False),
    ({"try_timeout": 2.5}, False),
    ({"replicas": 1}, True),
    ({"replicas": 8}, True),
    ({"replicas": 0}, False),
    ({"replicas": 9}, False),
    ({"replicas": -1}, False),
    ({"replicas": "3"}, False),
    ({"replicas": True}, False),
    ({"replicas": 2.5}, False),
    ({"env": {"MODE": "x", "_A1": ""}}, True),
    ({"env": {"lower": "x"}}, False),
    ({"env": {"1A": "x"}}, False),
    ({"env": {"RELEASE": "x"}}, False),
    ({"env": {"A": 1}}, False),
    ({"env": {"A": "x\ny"}}, False),
    ({"hooks": {"pre_deploy": "a", "post_deploy": "b"}}, True),
    ({"hooks": {"pre_deploi": "a"}}, False),
    ({"hooks": {"post_deploy": "a\rb"}}, False),
    ({"hooks": "a"}, False),
    ({"canary": {"min_requests": 0, "max_error_rate": 0.5, "p95_slack_ms": 10}}, True),
    ({"canary": {"min_requests": 1.5}}, False),
    ({"canary": {"max_holds": -1}}, False),
    ({"canary": {"max_error_rate": True}}, False),
    ({"canary": {"nope": 1}}, False),
    ({"database": True, "migrate": MIGRATE}, True),
    ({"database": True, "migrate": {**MIGRATE, "downgrade": "alembic downgrade {version}"}}, True),
    ({"database": True, "migrate": {**MIGRATE, "downgrade": "alembic downgrade -1"}}, False),
    ({"database": True, "migrate": {**MIGRATE, "head": ""}}, False),
    ({"database": True, "migrate": {**MIGRATE, "command": "a\nb"}}, False),
    ({"database": True, "migrate": {"command": "x", "current": "y"}}, False),
    ({"database": True, "migrate": {**MIGRATE, "comand": "x"}}, False),
    ({"database": True, "migrate": {**MIGRATE, "files": ["migrations", "alembic.ini"]}}, True),
    ({"database": True, "migrate": {**MIGRATE, "files": []}}, True),
    ({"database": True, "migrate": {**MIGRATE, "files": ["../secrets"]}}, False),
    ({"database": True, "migrate": {**MIGRATE, "files": ["/etc"]}}, False),
    ({"database": True, "migrate": {**MIGRATE, "files": "migrations"}}, False),
    ({"database": True, "migrate": {**MIGRATE, "files": ["a b"]}}, False),
    ({"migrate": MIGRATE}, False),  # it migrates the database: there must be one
    ({"database": False, "migrate": MIGRATE}, False),
    ({"load": {"paths": ["/", "/simple/"]}}, True),
    ({"load": {"paths": ["/api/users?limit=5&x=%2F"]}}, True),
    ({"load": {"paths": TWENTY}}, True),
    ({"load": {}}, False),
    ({"load": {"paths": []}}, False),
    ({"load": {"paths": [*TWENTY, "/x"]}}, False),
    ({"load": {"paths": ["/", "/"]}}, False),
    ({"load": {"paths": ["x"]}}, False),
    ({"load": {"paths": ["/a,b"]}}, False),
    ({"load": {"paths": ["/a?q=b c"]}}, False),
    ({"load": {"paths": ["/a?q=1#f"]}}, False),
    ({"load": {"paths": ["/a?q=x:y"]}}, False),
    ({"load": {"paths": ["/a?b?c"]}}, False),
    ({"load": {"paths": ["/" + "a" * 200]}}, False),
    ({"load": {"path": ["/"]}}, False),
    ({"load": "/"}, False),
    ({"helth": "/ready"}, False),
    ({"limits": {}}, True),
    ({"limits": {"memory": "16m", "pids": 1, "cpus": 0.25}}, True),
    ({"limits": {"memory": "999999m", "pids": 32768, "cpus": 64}}, True),
    ({"limits": {"memory": "1G"}}, True),
    ({"limits": {"memory": "512M"}}, True),
    ({"limits": {"memory": "999g"}}, True),
    ({"limits": {"memory": "15m"}}, False),
    ({"limits": {"memory": "1000g"}}, False),
    ({"limits": {"memory": "0g"}}, False),
    ({"limits": {"memory": "256"}}, False),
    ({"limits": {"memory": "256mb"}}, False),
    ({"limits": {"memory": "256k"}}, False),
    ({"limits": {"memory": "0256m"}}, False),
    ({"limits": {"memory": "1.5g"}}, False),
    ({"limits": {"memory": 268435456}}, False),
    ({"limits": {"memory": " 256m"}}, False),
    ({"limits": {"pids": 0}}, False),
    ({"limits": {"pids": 32769}}, False),
    ({"limits": {"pids": 2.5}}, False),
    ({"limits": {"pids": "256"}}, False),
    ({"limits": {"cpus": 0}}, False),
    ({"limits": {"cpus": -1}}, False),
    ({"limits": {"cpus": 65}}, False),
    ({"limits": {"cpus": "1"}}, False),
    ({"limits": {"pids": True}}, False),
    ({"limits": {"cpus": True}}, False),
    ({"limits": {"memroy": "256m"}}, False),
    ({"limits": "256m"}, False),
]


@pytest.mark.parametrize(("change", "ok"), SAMPLES)
def test_the_schema_and_the_parser_take_and_refuse_the_same_manifests(
    change: dict[str, Any], ok: bool
) -> None:
    doc = {**MIN, **change}
    schema_errors = [e.message for e in Draft202012Validator(SCHEMA).iter_errors(doc)]
    assert (schema_errors == []) is ok, schema_errors
    try:
        services.parse(doc, "services/app", {"Dockerfile"}, "services/app/service.toml")
    except ConfigError as err:
        assert not ok, str(err)
    else:
        assert ok, "the parser took it"


@pytest.mark.parametrize("manifest", sorted((ROOT / "services").glob("*/service.toml")))
def test_every_manifest_points_at_the_schema_and_passes_it(manifest: Path) -> None:
    text = manifest.read_text()
    assert text.splitlines()[0] == "#:schema ../service.schema.json"
    assert (manifest.parent / "../service.schema.json").resolve() == ROOT / "services" / (
        "service.schema.json"
    )
    errors = [e.message for e in Draft202012Validator(SCHEMA).iter_errors(tomllib.loads(text))]
    assert errors == []
