"""A service's manifest (``services/<name>/service.toml``, ``lab.stack.services``): every field
is checked before anything runs; a refusal is a ``ConfigError`` that names the field, the value,
the expected form and the file, the same from the working tree as from a commit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cdlab_proxy import document

from lab.errors import ConfigError, UnknownKey
from lab.stack import services

ROOT = Path(__file__).resolve().parents[2]
HAS = {"Dockerfile", "Dockerfile.test", "service.toml"}
SOURCE = "services/app/service.toml"
HOOKS, CANARY, LOAD = (f"{SOURCE} [{table}]" for table in ("hooks", "canary", "load"))
MIN = {"name": "app", "port": 8000}
COMMAND = "a shell command on one line (no line break or NUL)"
TRIES = "seconds a replica has to answer before the proxy asks another, 1 to 300"


def refusal(doc: dict[str, Any], has: set[str] = HAS) -> ConfigError:
    """The error ``parse`` raises for ``doc``, checked to show its field, value and file."""
    __tracebackhide__ = True
    with pytest.raises(ConfigError) as err:
        services.parse(doc, "services/app", has, SOURCE)
    assert err.value.source.startswith(SOURCE) and err.value.source in str(err.value)
    assert repr(err.value.value) in str(err.value) and f"'{err.value.field}'" in str(err.value)
    return err.value


def test_manifest_defaults_and_test_image() -> None:
    svc = services.parse(MIN, "services/app", HAS, "x")
    assert (svc.health, svc.test_dockerfile, svc.load_paths) == ("/health", "Dockerfile.test", ())


@pytest.mark.parametrize(("doc", "seconds"), [(MIN, 3), ({**MIN, "try_timeout": 45}, 45)])
def test_a_replica_has_the_manifests_try_timeout_to_answer_or_3_s(
    doc: dict[str, Any], seconds: int
) -> None:
    assert services.parse(doc, "services/app", HAS, "x").try_timeout == seconds


@pytest.mark.parametrize(("doc", "replicas"), [(MIN, None), ({**MIN, "replicas": 3}, 3)])
def test_replicas_are_the_manifests_or_none_for_one_per_node(
    doc: dict[str, Any], replicas: int | None
) -> None:
    assert services.parse(doc, "services/app", HAS, "x").replicas == replicas


@pytest.mark.parametrize(
    ("doc", "has", "field"),
    [
        ({"port": 8000}, HAS, "name"),
        ({"name": "app"}, HAS, "port"),
        ({**MIN, "health": "health"}, HAS, "health"),
        (MIN, {"service.toml"}, "Dockerfile"),
        ({**MIN, "test_dockerfile": "Nope"}, HAS, "test_dockerfile"),
        ({**MIN, "database": "yes"}, HAS, "database"),
        ({**MIN, "max_connections": "32"}, HAS, "max_connections"),
        ({**MIN, "try_timeout": "3"}, HAS, "try_timeout"),
        ({**MIN, "env": {"lower": "x"}}, HAS, "env"),
        ({**MIN, "env": {"RELEASE": "x"}}, HAS, "env"),
        ({**MIN, "env": ["A=1"]}, HAS, "env"),
        ({**MIN, "env": {"A": 1}}, HAS, "A"),
        ({**MIN, "hooks": "migrate"}, HAS, "hooks"),
        ({**MIN, "hooks": {"pre_deploy": ["x"]}}, HAS, "pre_deploy"),
        ({**MIN, "canary": {"min_requests": 1.5}}, HAS, "min_requests"),
        ({**MIN, "canary": {"max_error_rate": -1}}, HAS, "max_error_rate"),
        ({**MIN, "canary": {"max_holds": True}}, HAS, "max_holds"),
        ({**MIN, "canary": {"max_error_rate": float("nan")}}, HAS, "max_error_rate"),
        ({**MIN, "canary": {"p95_slack_ms": float("inf")}}, HAS, "p95_slack_ms"),
        ({**MIN, "bake": float("nan")}, HAS, "bake"),
        ({**MIN, "healthcheck": 3}, HAS, "healthcheck"),
    ],
)
def test_bad_manifests_name_the_field(doc: dict[str, Any], has: set[str], field: str) -> None:
    assert refusal(doc, has).field == field


@pytest.mark.parametrize(
    "health",
    [
        "/a\nb",
        "/health\n",
        "/a\rb",
        "/a b",
        "/a,b",
        "/a:b",
        "/a\tb",
        "/a#b",
        "/a?b=1",
        "/a$b",
        "/a'b",
        '/a"b',
        "/a\\b",
        "/a%2",
        "/" + "a" * 200,
        "health",
        "",
        3,
    ],
)
def test_a_health_path_haproxy_or_the_probe_would_misread_is_refused(health: object) -> None:
    err = refusal({**MIN, "health": health})
    assert (err.field, err.value, err.expected) == ("health", health, document.PATH_FORM)
    assert str(err) == (
        f"bad value for 'health' in {SOURCE}: {health!r}; expected {document.PATH_FORM}"
    )


@pytest.mark.parametrize(
    ("change", "field", "value", "expected"),
    [
        ({"port": 0}, "port", 0, "the service's TCP port, 1-65535"),
        ({"port": 65536}, "port", 65536, "the service's TCP port, 1-65535"),
        ({"port": "x"}, "port", "x", "the service's TCP port, 1-65535"),
        ({"port": True}, "port", True, "the service's TCP port, 1-65535"),
        ({"port": 80.0}, "port", 80.0, "the service's TCP port, 1-65535"),
        ({"public_port": 7999}, "public_port", 7999, "a port in 8000-8008"),
        ({"public_port": 8009}, "public_port", 8009, "a port in 8000-8008"),
        ({"public_port": True}, "public_port", True, "a port in 8000-8008"),
        ({"name": "App"}, "name", "App", document.NAME_FORM),
        ({"name": "a" * 32}, "name", "a" * 32, document.NAME_FORM),
        ({"name": "app-"}, "name", "app-", document.NAME_FORM),
        ({"name": "app\n"}, "name", "app\n", document.NAME_FORM),
        ({"name": 3}, "name", 3, document.NAME_FORM),
        ({"retain": 1}, "retain", 1, "how many releases to keep, 2 to 50"),
        ({"retain": 51}, "retain", 51, "how many releases to keep, 2 to 50"),
        ({"health_timeout": 0}, "health_timeout", 0, "seconds, 1 to 600"),
        ({"health_timeout": 601}, "health_timeout", 601, "seconds, 1 to 600"),
        ({"bake": -1}, "bake", -1, "seconds from 0 (no bake window) to 600"),
        ({"bake": 600.5}, "bake", 600.5, "seconds from 0 (no bake window) to 600"),
        ({"bake": True}, "bake", True, "seconds from 0 (no bake window) to 600"),
        ({"max_connections": -1}, "max_connections", -1, "1 to 10000, or 0 for no limit"),
        ({"max_connections": 10001}, "max_connections", 10001, "1 to 10000, or 0 for no limit"),
        ({"try_timeout": 0}, "try_timeout", 0, TRIES),
        ({"try_timeout": 301}, "try_timeout", 301, TRIES),
        ({"try_timeout": True}, "try_timeout", True, TRIES),
        ({"try_timeout": "3"}, "try_timeout", "3", TRIES),
        ({"try_timeout": 2.5}, "try_timeout", 2.5, TRIES),
        ({"replicas": 0}, "replicas", 0, "replicas per release, 1 to 8"),
        ({"replicas": 9}, "replicas", 9, "replicas per release, 1 to 8"),
        ({"replicas": True}, "replicas", True, "replicas per release, 1 to 8"),
        ({"replicas": "3"}, "replicas", "3", "replicas per release, 1 to 8"),
        ({"replicas": 2.0}, "replicas", 2.0, "replicas per release, 1 to 8"),
        ({"healthcheck": "true\nrm -rf /"}, "healthcheck", "true\nrm -rf /", COMMAND),
        ({"test_command": "pytest\x00"}, "test_command", "pytest\x00", COMMAND),
        ({"hooks": {"pre_deploy": "a\nb"}}, "pre_deploy", "a\nb", COMMAND),
        ({"hooks": {"post_deploy": "a\rb"}}, "post_deploy", "a\rb", COMMAND),
        ({"env": {"A": "x\ny"}}, "A", "x\ny", "a string on one line (no line break or NUL)"),
        ({"env": {"A": "x\x00"}}, "A", "x\x00", "a string on one line (no line break or NUL)"),
        ({"env": {"lower": "x"}}, "env", "lower", "names of A-Z, 0-9 and '_'"),
    ],
)
def test_a_bad_value_names_the_field_the_value_and_the_form(
    change: dict[str, Any], field: str, value: object, expected: str
) -> None:
    err = refusal({**MIN, **change})
    assert (err.field, err.value) == (field, value)
    assert expected in err.expected


@pytest.mark.parametrize(
    "change",
    [
        {"port": 1},
        {"port": 65535},
        {"public_port": 8000},
        {"public_port": 8008},
        {"name": "a"},
        {"name": "a" * 31},
        {"name": "app-2"},
        {"health": "/" + "a" * 199},
        {"health": "/v1/ready;probe=1"},
        {"health": "/%2Fx(y)*+!@&=~"},
        {"bake": 0},
        {"bake": 2.5},
        {"max_connections": 10000},
        {"try_timeout": 1},
        {"try_timeout": 300},
        {"replicas": 1},
        {"replicas": 8},
        {"env": {"A": "it's fine: ,#$"}},
        {"hooks": {"pre_deploy": "a && b; c | d"}},
    ],
)
def test_values_at_the_edge_of_their_range_are_taken(change: dict[str, Any]) -> None:
    services.parse({**MIN, **change}, "services/app", HAS, SOURCE)


@pytest.mark.parametrize(
    ("doc", "key", "source", "nearest"),
    [
        ({**MIN, "helth": "/ready"}, "helth", SOURCE, "health"),
        ({**MIN, "prot": 1}, "prot", SOURCE, "port"),
        ({**MIN, "baek": 1}, "baek", SOURCE, "bake"),
        ({**MIN, "zzz": 1}, "zzz", SOURCE, ""),
        ({**MIN, "hooks": {"pre_deploi": "x"}}, "pre_deploi", HOOKS, "pre_deploy"),
        ({**MIN, "hooks": {"after": "x"}}, "after", HOOKS, ""),
        ({**MIN, "canary": {"min_request": 1}}, "min_request", CANARY, "min_requests"),
        ({**MIN, "load": {"path": ["/"]}}, "path", LOAD, "paths"),
    ],
)
def test_an_unknown_key_is_refused_with_the_nearest_known_one(
    doc: dict[str, Any], key: str, source: str, nearest: str
) -> None:
    err = refusal(doc)
    assert isinstance(err, UnknownKey)
    assert (err.field, err.source, err.nearest) == (key, source, nearest)
    assert str(err).startswith(f"unknown key '{key}' in {source} (value {err.value!r}):")
    assert ("did you mean" in str(err)) is bool(nearest)
    assert f"did you mean '{nearest}'?" in str(err) or not nearest
    known = ", ".join(err.known)
    assert str(err).endswith(f"Known keys: {known}") and err.expected.endswith(known)
    assert ("health" in err.known) is (source == SOURCE)  # the keys of the table it is in


TWENTY = [f"/p{i}" for i in range(20)]


@pytest.mark.parametrize(
    "paths",
    [
        ["/"],
        ["/", "/simple/"],
        ["/api/users?limit=5"],
        ["/search?q=a%20b&page=2"],
        ["/a?"],
        ["/" + "a" * 199],
        TWENTY,
    ],
)
def test_load_paths_are_read_in_order(paths: list[str]) -> None:
    svc = services.parse({**MIN, "load": {"paths": paths}}, "services/app", HAS, SOURCE)
    assert svc.load_paths == tuple(paths)


@pytest.mark.parametrize(
    ("load", "field", "value", "expected"),
    [
        ("/", "load", "/", "a table with some of: paths"),
        ({}, "paths", None, "a list of 1 to 20 GET paths"),
        ({"paths": []}, "paths", [], "a list of 1 to 20 GET paths"),
        ({"paths": "/"}, "paths", "/", "a list of 1 to 20 GET paths"),
        ({"paths": [*TWENTY, "/x"]}, "paths", [*TWENTY, "/x"], "a list of 1 to 20 GET paths"),
        ({"paths": [1]}, "paths[0]", 1, "a GET path"),
        ({"paths": ["/", "simple"]}, "paths[1]", "simple", "a GET path"),
        ({"paths": ["/a b"]}, "paths[0]", "/a b", "a GET path"),
        ({"paths": ["/a,b"]}, "paths[0]", "/a,b", "a GET path"),
        ({"paths": ["/a\n"]}, "paths[0]", "/a\n", "a GET path"),
        ({"paths": ["/a?q=b c"]}, "paths[0]", "/a?q=b c", "a GET path"),
        ({"paths": ["/a?q=x:y"]}, "paths[0]", "/a?q=x:y", "a GET path"),
        ({"paths": ["/a?q=1#top"]}, "paths[0]", "/a?q=1#top", "a GET path"),
        ({"paths": ["/a?b?c"]}, "paths[0]", "/a?b?c", "a GET path"),
        ({"paths": ["/a?q=%2"]}, "paths[0]", "/a?q=%2", "a GET path"),
        ({"paths": ["/a?q=$x"]}, "paths[0]", "/a?q=$x", "a GET path"),
        ({"paths": ["/" + "a" * 200]}, "paths[0]", "/" + "a" * 200, "a GET path"),
        ({"paths": ["/", "/x", "/"]}, "paths[2]", "/", "a path not listed before it"),
    ],
)
def test_bad_load_paths_name_the_entry_and_the_form(
    load: object, field: str, value: object, expected: str
) -> None:
    err = refusal({**MIN, "load": load})
    assert (err.field, err.value) == (field, value) and expected in err.expected
    assert err.source == (SOURCE if field == "load" else LOAD)


COMMITTED = [
    'name = "app"\nport = 0\n',
    'name = "App"\nport = 80\n',
    'name = "app"\nport = 80\npublic_port = 9000\n',
    'name = "app"\nport = 80\nhealth = "/a b"\n',
    'name = "app"\nport = 80\nhealth = "/a\\nbind :80"\n',
    'name = "app"\nport = 80\nhelth = "/ready"\n',
    'name = "app"\nport = 80\n[hooks]\npre_deploi = "x"\n',
    'name = "app"\nport = 80\n[load]\npaths = ["/a,b"]\n',
    'name = "app"\nport = 80\n[env]\nA = "x\\u0000"\n',
]


@pytest.mark.parametrize("text", COMMITTED)
def test_a_manifest_at_a_commit_is_refused_as_in_the_working_tree(
    tmp_path: Path, text: str
) -> None:
    text = "#:schema ../service.schema.json\n" + text
    files = {"services/app/service.toml": text.encode(), "services/app/Dockerfile": b"FROM x\n"}
    for path, raw in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(raw)
    with pytest.raises(ConfigError) as tree:
        services.load(tmp_path, "app")
    sha = "3f9c2e1a0b1c" + "0" * 28
    with pytest.raises(ConfigError) as committed:
        services.at_commit(tmp_path, sha, "app", files)
    a, b = tree.value, committed.value
    assert type(a) is type(b) and (a.field, a.value, a.expected) == (b.field, b.value, b.expected)
    assert a.source.replace(SOURCE, f"{SOURCE} at 3f9c2e1a0b1c") == b.source
    assert b.source in str(b)


def test_the_repository_manifests_load() -> None:
    app, pypiserver, quotes = services.load_all(ROOT)
    assert (app.name, app.port, app.public_port, app.database) == ("app", 8000, 8000, True)
    assert (pypiserver.port, pypiserver.public_port, pypiserver.health) == (8080, 8002, "/health")
    assert pypiserver.test_dockerfile == "Dockerfile.test" and not pypiserver.test_command
    assert pypiserver.load_paths  # an application nobody wrote for cdlab: its own pages
    assert (quotes.public_port, quotes.health, quotes.database) == (8001, "/ready", False)
    assert quotes.test_command and quotes.pre_deploy and quotes.post_deploy
    assert quotes.thresholds.min_requests == 30
    with pytest.raises(ConfigError, match="one of: app, pypiserver, quotes"):
        services.load(ROOT, "nope")


def test_a_full_manifest_and_the_default_probe() -> None:
    doc = {
        "name": "web",
        "port": 9000,
        "public_port": 8003,
        "health": "/ready",
        "env": {"MODE": "x"},
        "hooks": {"pre_deploy": " migrate "},
        "canary": {"min_requests": 10, "max_error_rate": 0.05},
        "load": {"paths": ["/", "/simple/"]},
    }
    svc = services.parse(doc, "services/web", {"Dockerfile"}, "x")
    assert svc.env == (("MODE", "x"),) and svc.pre_deploy == "migrate"
    assert svc.thresholds.max_error_rate == 0.05 and svc.test_dockerfile is None
    assert svc.load_paths == ("/", "/simple/")
    assert svc.probe == services.http_probe(9000, "/ready")
    custom = services.parse({**doc, "healthcheck": "true"}, "services/web", {"Dockerfile"}, "x")
    assert custom.probe == "true"


def test_two_services_on_one_public_port_are_refused(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / "services" / name).mkdir(parents=True)
        (tmp_path / "services" / name / "Dockerfile").write_text("FROM x\n")
        (tmp_path / "services" / name / "service.toml").write_text(
            f'name = "{name}"\nport = 80\npublic_port = 8005\n'
        )
    with pytest.raises(ConfigError, match=r"(a|b) has it"):
        services.load_all(tmp_path)


@pytest.mark.parametrize(
    ("status", "passes"), [(200, True), (204, False), (302, False), (500, False), (None, False)]
)
def test_the_default_probe_passes_on_exactly_200_without_following_a_redirect(
    status: int | None, passes: bool
) -> None:
    """The probe Docker runs in every release's container, run as Docker runs it (a shell),
    against a server on 127.0.0.1 answering ``status`` (None: nothing listens)."""
    import http.server
    import socket
    import subprocess
    import threading

    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(status or 200)
            self.send_header("Location", "/health")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    if status is None:
        server.server_close()  # the port is free again: the probe's connection is refused
        with socket.socket() as probe_port:
            assert probe_port.connect_ex(("127.0.0.1", port)) != 0
    else:
        threading.Thread(target=server.handle_request, daemon=True).start()
    probe = services.http_probe(port, "/ready")
    done = subprocess.run(["sh", "-c", probe], capture_output=True, text=True, timeout=10)
    assert (done.returncode == 0) is passes, done.stdout + done.stderr
    if status is not None:
        server.server_close()
        assert seen == ["/ready"] and done.stdout.split() == ["HTTP/1.0", str(status)]
