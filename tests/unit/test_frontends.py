"""The lab's side of frontend documents: what a deploy publishes and undoes, and how it waits
for the proxy's process (``lab.ports.frontends``, ``Runtime.wait_frontend``)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from cdlab_proxy import router
from cdlab_proxy.document import Frontend

from lab.errors import ConfigError
from lab.ports import frontends
from lab.ports.etcd import Fence
from lab.ports.proxy import ProxyError, Runtime
from lab.stack import services

QUOTES = services.Service("quotes", "services/quotes", 9000, "/ready", public_port=8001)
KEY = "/cdlab/frontends/quotes"


class Store:
    """The route store's calls that ``frontends`` makes, on a dict."""

    def __init__(self, **docs: Any) -> None:
        self.data = {f"/cdlab/frontends/{k}": json.dumps(v).encode() for k, v in docs.items()}
        self.writes = 0
        self.fences: list[Fence | None] = []  # what guarded each write

    def get_prefix(self, prefix: str) -> dict[str, bytes]:
        return {k: v for k, v in self.data.items() if k.startswith(prefix)}

    def put_json(self, key: str, doc: Any, fence: Fence | None = None) -> None:
        self.writes += 1
        self.fences.append(fence)
        self.data[key] = json.dumps(doc).encode()

    def delete(self, key: str, fence: Fence | None = None) -> None:
        self.writes += 1
        self.fences.append(fence)
        self.data.pop(key, None)

    def doc(self, key: str) -> Any:
        return json.loads(self.data[key]) if key in self.data else None


DOC = {
    "name": "quotes",
    "public_port": 8001,
    "port": 9000,
    "health": "/ready",
    "maxconn": 0,
    "try_timeout": 3,
}


def test_a_new_service_is_published_and_undone_to_nothing() -> None:
    store = Store()
    done = frontends.publish(store, QUOTES)
    assert done == frontends.Published("quotes", None, True)
    assert store.doc(KEY) == DOC
    frontends.undo(store, done)
    assert store.doc(KEY) is None


def test_a_changed_manifest_is_published_and_undone_to_the_previous_document() -> None:
    before = {**DOC, "health": "/health"}
    store = Store(quotes=before)
    done = frontends.publish(store, QUOTES)
    assert (done.previous, done.written, store.doc(KEY)) == (before, True, DOC)
    frontends.undo(store, done)
    assert store.doc(KEY) == before


@pytest.mark.parametrize("before", [None, {**DOC, "health": "/health"}])
def test_a_runs_fence_guards_its_publish_and_its_undo(before: dict[str, Any] | None) -> None:
    store = Store(**({"quotes": before} if before else {}))
    fence = Fence("/cdlab/locks/deploy", 7)
    frontends.undo(store, frontends.publish(store, QUOTES, fence), fence)
    assert store.fences == [fence, fence] and store.doc(KEY) == before


def test_an_unchanged_document_is_not_written_and_its_undo_does_nothing() -> None:
    store = Store(quotes=DOC)
    done = frontends.publish(store, QUOTES)
    frontends.undo(store, done)
    assert (done.written, store.writes, store.doc(KEY)) == (False, 0, DOC)


def test_a_port_another_service_holds_is_refused_with_the_evidence() -> None:
    store = Store(app={**DOC, "name": "app", "public_port": 8001})
    with pytest.raises(ConfigError) as err:
        frontends.publish(store, QUOTES)
    assert err.value.field == "public_port" and err.value.source == "services/quotes/service.toml"
    assert "app has it: /cdlab/frontends/app" in str(err.value) and store.writes == 0


@pytest.mark.parametrize("seconds", [1, 3, 45, 300])
def test_the_manifests_try_timeout_goes_into_the_document(seconds: int) -> None:
    doc = frontends.frontend_doc(dataclasses.replace(QUOTES, try_timeout=seconds))
    assert doc == {**DOC, "try_timeout": seconds}


def test_a_manifest_the_proxy_would_refuse_names_the_manifest_field() -> None:
    bad = dataclasses.replace(QUOTES, health="/ready now", max_connections=3)
    with pytest.raises(ConfigError) as err:
        frontends.frontend_doc(bad)
    assert err.value.field == "health" and "no space" in err.value.expected


class FakeRuntime(Runtime):
    def __init__(self, answers: list[str]) -> None:
        super().__init__("10.0.0.1")
        self.answers = answers

    def send(self, command: str) -> str:
        assert command == "show cdlab"
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


FRONT = Frontend("quotes", 8001, 9000, "/ready")


def table(*rows: router.Status) -> str:
    return router.status_table(rows)


def test_wait_frontend_returns_once_the_process_of_that_document_is_up() -> None:
    rt = FakeRuntime(
        [
            table(),
            table(router.Status("quotes", FRONT, "starting")),
            table(router.Status("quotes", FRONT, "up", 42)),
        ]
    )
    rt.wait_frontend(DOC, timeout=5)
    assert len(rt.answers) == 1


@pytest.mark.parametrize(
    ("answer", "last"),
    [
        (table(), "last: no process for it yet"),
        (
            table(router.Status("quotes", FRONT, "refused", None, "public port 8001 is app's")),
            "last: refused, public port 8001 is app's",
        ),
        (
            table(router.Status("quotes", dataclasses.replace(FRONT, health="/h"), "up", 7)),
            "last: up, pid 7, it runs the previous document (health path /h -> /ready not",
        ),
        ("Unknown command: 'show cdlab'\n\n", "its image predates per-service frontends"),
    ],
)
def test_wait_frontend_times_out_naming_the_last_state(answer: str, last: str) -> None:
    with pytest.raises(ProxyError) as err:
        FakeRuntime([answer]).wait_frontend(DOC, timeout=0.2)
    assert last in str(err.value)
    assert "the proxy did not serve the frontend of 'quotes' (public port 8001" in str(err.value)
