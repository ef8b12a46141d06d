"""The two documents the lab and the proxy share (cdlab_proxy.document): good ones read back,
bad ones name the field and the expected form."""

from __future__ import annotations

from typing import Any

import pytest
from cdlab_proxy import document

F = document.Frontend
OLD_FRONT = {"name": "app", "public_port": 8000, "port": 8000, "health": "/health", "maxconn": 0}
GOOD_FRONT = {**OLD_FRONT, "try_timeout": 3}


def test_a_frontend_document_reads_back() -> None:
    front = document.parse_frontend(GOOD_FRONT, "app")
    assert front == F("app", 8000, 8000, "/health", 0, 3)
    assert document.frontend_doc(front) == GOOD_FRONT
    extra = document.parse_frontend({**GOOD_FRONT, "future": 1}, "app")  # a newer writer
    assert extra == front


@pytest.mark.parametrize("seconds", [1, 10, 300])
def test_a_frontends_try_timeout_is_read_and_written(seconds: int) -> None:
    front = document.parse_frontend({**GOOD_FRONT, "try_timeout": seconds}, "app")
    assert front.try_timeout == seconds
    assert document.frontend_doc(front) == {**GOOD_FRONT, "try_timeout": seconds}


def test_a_frontend_document_of_an_older_cdlab_waits_3_s_per_try() -> None:
    """Written before ``try_timeout`` existed: the same frontend as one that says 3, so the
    supervisor does not replace a process when a newer lab writes the key."""
    front = document.parse_frontend(OLD_FRONT, "app")
    assert front.try_timeout == document.TRY_TIMEOUT == 3 == F("app", 8000, 8000).try_timeout
    assert front == document.parse_frontend(GOOD_FRONT, "app")
    assert document.frontend_doc(front) == GOOD_FRONT  # written out in full


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        ({"name": "other"}, "frontends[app]", "an object with name='app'"),
        ({"public_port": 8009}, "frontends[app].public_port", "a port in 8000-8008"),
        ({"public_port": "8000"}, "frontends[app].public_port", "a port in 8000-8008"),
        ({"public_port": True}, "frontends[app].public_port", "a port in 8000-8008"),
        ({"port": 0}, "frontends[app].port", "the service's TCP port, 1-65535"),
        ({"health": "health"}, "frontends[app].health", "a URL path like '/health'"),
        ({"health": "/a b"}, "frontends[app].health", "a URL path like '/health'"),
        ({"health": "/a#b"}, "frontends[app].health", "a URL path like '/health'"),
        ({"health": "/x\nbind :80"}, "frontends[app].health", "a URL path like '/health'"),
        ({"maxconn": -1}, "frontends[app].maxconn", "0 (no limit) to 10000"),
        ({"maxconn": None}, "frontends[app].maxconn", "0 (no limit) to 10000"),
        ({"try_timeout": 0}, "frontends[app].try_timeout", "seconds a replica has to answer, 1 to"),
        ({"try_timeout": 301}, "frontends[app].try_timeout", "1 to 300"),
        ({"try_timeout": None}, "frontends[app].try_timeout", "1 to 300"),
        ({"try_timeout": True}, "frontends[app].try_timeout", "1 to 300"),
        ({"try_timeout": "3"}, "frontends[app].try_timeout", "1 to 300"),
        ({"try_timeout": 2.5}, "frontends[app].try_timeout", "1 to 300"),
    ],
)
def test_bad_frontend_documents_name_the_field_and_the_form(
    change: dict[str, Any], field: str, expected: str
) -> None:
    with pytest.raises(document.DocumentError) as err:
        document.parse_frontend({**GOOD_FRONT, **change}, "app")
    assert err.value.field == field and expected in err.value.expected
    assert f"bad value for '{field}'" in str(err.value)


@pytest.mark.parametrize(
    "path",
    ["/", "/health", "/ready", "/a/b/", "/%2Fx%aF", "/-._~!&()*+;=@", "/" + "a" * 199],
)
def test_a_health_path_of_url_path_characters_is_taken(path: str) -> None:
    assert document.parse_frontend({**GOOD_FRONT, "health": path}, "app").health == path


@pytest.mark.parametrize(
    "path",
    [
        "",
        "health",
        "/health\n",  # a trailing line break: '$' alone would let it through
        "/a\rb",
        "/a\tb",
        "/a\x00b",
        "/a b",
        "/a,b",
        "/a:b",
        "/a?b=1",
        "/a#b",
        "/a$b",
        "/a'b",
        '/a"b',
        "/a\\b",
        "/a`b",
        "/a%2",
        "/a%zz",
        "/é",
        "/" + "a" * 200,
    ],
)
def test_a_health_path_the_proxy_config_or_the_probe_would_read_otherwise_is_refused(
    path: str,
) -> None:
    with pytest.raises(document.DocumentError) as err:
        document.parse_frontend({**GOOD_FRONT, "health": path}, "app")
    assert (err.value.field, err.value.value) == ("frontends[app].health", path)
    assert err.value.expected == document.PATH_FORM


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a", True),
        ("app-2", True),
        ("a" * 31, True),
        ("a" * 32, False),
        ("app-", False),
        ("App", False),
        ("2app", False),
        ("app\n", False),
        ("ap_p", False),
    ],
)
def test_a_service_name_is_lowercase_31_at_most_and_does_not_end_in_a_dash(
    name: str, ok: bool
) -> None:
    assert bool(document.NAME.match(name)) is ok


def test_a_frontend_document_for_a_bad_service_name_is_refused() -> None:
    with pytest.raises(document.DocumentError, match="a lowercase name"):
        document.parse_frontend({**GOOD_FRONT, "name": "App"}, "App")


def test_undecodable_values_are_document_errors() -> None:
    assert document.decode(None, "k") is None and document.decode(b"", "k") is None
    with pytest.raises(document.DocumentError, match="a JSON object"):
        document.decode(b"{not json", "/cdlab/frontends/app")


SERVER = {"release": "3f9c2e1a0b1c", "host": "app-3f9c2e1a0b1c", "weight": 100, "drain": False}
MATCH = {
    "kind": "cookie",
    "name": "canary",
    "value": "yes",
    "release": "5d1e0c9b8a7f",
    "host": "app-5d1e0c9b8a7f",
}


def test_a_route_document_reads_back() -> None:
    doc = {"service": "app", "servers": [SERVER], "match": MATCH}
    routes = document.parse_routes(doc, "app")
    assert routes.servers == (document.Server("3f9c2e1a0b1c", "app-3f9c2e1a0b1c", 100),)
    assert routes.match == document.Match(
        "cookie", "canary", "yes", "5d1e0c9b8a7f", "app-5d1e0c9b8a7f"
    )
    assert document.routes_doc(routes) == doc
    assert document.parse_routes(None, "app") == document.Routes("app")
    no_drain = {k: v for k, v in SERVER.items() if k != "drain"}
    assert document.parse_routes({"service": "app", "servers": [no_drain]}, "app") == (
        document.Routes("app", routes.servers)
    )


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([], "routes[app]"),
        ({"service": "other"}, "routes[app]"),
        ({"service": "app", "servers": {}}, "routes[app].servers"),
        ({"service": "app", "servers": ["x"]}, "routes[app].servers[0]"),
        (
            {"service": "app", "servers": [{**SERVER, "weight": 257}]},
            "routes[app].servers[0].weight",
        ),
        (
            {"service": "app", "servers": [{**SERVER, "weight": 1.5}]},
            "routes[app].servers[0].weight",
        ),
        ({"service": "app", "servers": [{**SERVER, "host": "a b"}]}, "routes[app].servers[0].host"),
        (
            {"service": "app", "servers": [{**SERVER, "release": ""}]},
            "routes[app].servers[0].release",
        ),
        (
            {"service": "app", "servers": [{**SERVER, "drain": "no"}]},
            "routes[app].servers[0].drain",
        ),
        ({"service": "app", "servers": [SERVER, SERVER]}, "routes[app].servers[1].host"),
        ({"service": "app", "match": "x"}, "routes[app].match"),
        ({"service": "app", "match": {**MATCH, "kind": "query"}}, "routes[app].match.kind"),
        ({"service": "app", "match": {**MATCH, "name": "a;b"}}, "routes[app].match.name"),
        ({"service": "app", "match": {**MATCH, "value": "a b"}}, "routes[app].match.value"),
        ({"service": "app", "match": {**MATCH, "release": "zz"}}, "routes[app].match.release"),
        ({"service": "app", "match": {**MATCH, "host": None}}, "routes[app].match.host"),
    ],
)
def test_bad_route_documents_name_the_field(doc: Any, field: str) -> None:
    with pytest.raises(document.DocumentError) as err:
        document.parse_routes(doc, "app")
    assert err.value.field == field and err.value.expected


def test_what_changed_between_two_frontends_is_said_in_words() -> None:
    old = F("quotes", 8001, 9000, "/ready")
    assert document.changes(old, old) == "nothing"
    assert (
        document.changes(old, F("quotes", 8002, 9000, "/health", 5))
        == "public port 8001 -> 8002, health path /ready -> /health, maxconn 0 -> 5"
    )
    assert document.changes(old, F("quotes", 8001, 9000, "/ready", 0, 10)) == "try timeout 3 -> 10"


@pytest.mark.parametrize("pattern", ["RELEASE", "HOST", "TOKEN", "VALUE", "MATCH_RELEASE", "NAME"])
def test_no_pattern_takes_a_trailing_newline(pattern: str) -> None:
    """'$' also matches before a final newline: a value with one would reach HAProxy's map."""
    good = {"MATCH_RELEASE": "3f9c2e1a0b1c", "NAME": "app"}.get(pattern, "abc")
    assert getattr(document, pattern).match(good)
    assert not getattr(document, pattern).match(good + "\n")


def test_a_servers_replicas_read_back_and_are_written_only_when_there_are_some() -> None:
    doc = {"service": "app", "servers": [{**SERVER, "replicas": 3}, {**SERVER, "host": "b"}]}
    routes = document.parse_routes(doc, "app")
    assert [s.replicas for s in routes.servers] == [3, 0]
    assert document.routes_doc(routes) == {
        "service": "app",
        "servers": [{**SERVER, "replicas": 3}, {**SERVER, "host": "b"}],
    }
    zero = document.parse_routes({"service": "app", "servers": [{**SERVER, "replicas": 0}]}, "app")
    assert document.routes_doc(zero) == {"service": "app", "servers": [SERVER]}


@pytest.mark.parametrize("replicas", [-1, 9, True, False, "3", 1.5, None])
def test_replicas_beyond_the_proxys_slots_or_not_an_integer_are_refused(replicas: Any) -> None:
    doc = {"service": "app", "servers": [{**SERVER, "replicas": replicas}]}
    with pytest.raises(document.DocumentError) as err:
        document.parse_routes(doc, "app")
    assert err.value.field == "routes[app].servers[0].replicas"
    assert err.value.expected == document.REPLICAS_FORM and "an integer 0-8" in str(err.value)


def test_a_release_of_replicas_is_found_at_its_tasks_name() -> None:
    plain = document.Server("3f9c2e1a0b1c", "app-3f9c2e1a0b1c", 100)
    swarm = document.Server("3f9c2e1a0b1c", "app-3f9c2e1a0b1c", 100, replicas=1)
    assert document.fqdn(plain) == "app-3f9c2e1a0b1c"
    assert document.fqdn(swarm) == "tasks.app-3f9c2e1a0b1c"
    assert document.names("app-x") == ("app-x", "tasks.app-x")
