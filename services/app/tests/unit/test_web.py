"""Unit tests of the service, run inside the image build (a failure fails the build)."""

from __future__ import annotations

import io
import json

import pytest
from app.metrics import Recorder, Window, percentile, safe, status_class
from app.settings import Settings
from app.store import DuplicateEmail, User
from app.web import App, BadRequest, kv, validate_user

SETTINGS = Settings("app", "abc123", "reg/app@sha256:x", "", "", 2003, "c1")


class FakeStore:
    def __init__(self, healthy: bool = True) -> None:
        self.users: list[User] = []
        self.healthy = healthy

    def ping(self) -> None:
        if not self.healthy:
            raise ConnectionError("db down")

    def add(self, name: str, email: str, release: str) -> User:
        if any(u.email == email for u in self.users):
            raise DuplicateEmail(email)
        user = User(len(self.users) + 1, name, email, release, "2026-01-01T00:00:00+00:00")
        self.users.append(user)
        return user

    def get(self, user_id: int) -> User | None:
        return next((u for u in self.users if u.id == user_id), None)

    def get_by_email(self, email: str) -> User | None:
        return next((u for u in self.users if u.email == email), None)

    def list(self, limit: int) -> list[User]:
        return list(reversed(self.users))[:limit]


def call(
    app: App,
    method: str,
    path: str,
    body: object = None,
    query: str = "",
    key: str | None = None,
):
    """``key``: the request's Idempotency-Key header (None: no such header)."""
    raw = b"" if body is None else json.dumps(body).encode()
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "CONTENT_LENGTH": str(len(raw)),
        "wsgi.input": io.BytesIO(raw),
    }
    if key is not None:
        environ["HTTP_IDEMPOTENCY_KEY"] = key
    seen = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = int(status.split()[0]), dict(headers)

    payload = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], payload


@pytest.fixture
def app() -> App:
    return App(SETTINGS, FakeStore(), log=lambda line: None)


def test_every_response_carries_the_release(app: App) -> None:
    for path in ("/health", "/version", "/nope", "/api/users"):
        assert call(app, "GET", path)[1]["X-Release"] == "abc123"


def test_version_names_release_and_image(app: App) -> None:
    status, _, body = call(app, "GET", "/version")
    assert status == 200
    assert json.loads(body) == {"service": "app", "release": "abc123", "image": "reg/app@sha256:x"}


def test_register_then_read_back(app: App) -> None:
    status, _, body = call(app, "POST", "/api/users", {"name": "Ada", "email": "Ada@Example.org"})
    assert status == 201
    user = json.loads(body)
    assert user["email"] == "ada@example.org" and user["release"] == "abc123"
    status, _, body = call(app, "GET", f"/api/users/{user['id']}")
    assert status == 200 and json.loads(body)["name"] == "Ada"
    assert [u["id"] for u in json.loads(call(app, "GET", "/api/users")[2])["users"]] == [user["id"]]


def test_duplicate_email_is_a_conflict(app: App) -> None:
    call(app, "POST", "/api/users", {"name": "A", "email": "a@example.org"})
    assert call(app, "POST", "/api/users", {"name": "B", "email": "a@example.org"})[0] == 409


def test_duplicate_email_without_a_key_is_a_conflict_even_with_the_same_name(app: App) -> None:
    ada = {"name": "Ada", "email": "ada@example.org"}
    assert call(app, "POST", "/api/users", ada)[0] == 201
    status, headers, body = call(app, "POST", "/api/users", ada)
    assert status == 409 and "Idempotent-Replayed" not in headers
    assert json.loads(body) == {"error": "a user with email 'ada@example.org' already exists"}


def test_a_retried_registration_with_a_key_is_answered_as_the_first_was(app: App) -> None:
    ada = {"name": "Ada", "email": "ada@example.org"}
    status, headers, first = call(app, "POST", "/api/users", ada, key="k1")
    assert status == 201 and "Idempotent-Replayed" not in headers
    # the retry: the same request (the proxy resends its bytes), or its email in another case
    for again in (ada, {"name": " Ada ", "email": "ADA@example.org"}):
        status, headers, body = call(app, "POST", "/api/users", again, key="k1")
        assert status == 201 and headers["Idempotent-Replayed"] == "true"
        assert headers["X-Release"] == "abc123"
        assert body == first  # the same user: id, release that registered it, created_at
    assert len(app.store.users) == 1  # type: ignore[attr-defined]


def test_a_key_does_not_replay_someone_else_with_that_email(app: App) -> None:
    assert call(app, "POST", "/api/users", {"name": "Ada", "email": "a@example.org"})[0] == 201
    status, headers, body = call(
        app, "POST", "/api/users", {"name": "Bob", "email": "a@example.org"}, key="k2"
    )
    assert status == 409 and "Idempotent-Replayed" not in headers
    assert "already exists" in json.loads(body)["error"]


@pytest.mark.parametrize("key", ["a", "~" * 200, "8e03978e-40d5-43e8-bc93-6894a57f9324", '"sf"'])
def test_a_key_of_visible_ascii_is_accepted(app: App, key: str) -> None:
    status, _, _ = call(app, "POST", "/api/users", {"name": "A", "email": "a@x.org"}, key=key)
    assert status == 201


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("", "got 0 characters: ''"),
        ("k" * 201, "got 201 characters: 'kkkk"),
        ("a\x01b", "got 3 characters: 'a\\x01b'"),
        ("a b", "got 3 characters: 'a b'"),
        ("caf\xe9", "got 4 characters: 'caf\xe9'"),
    ],
)
def test_a_bad_key_is_400_naming_the_header_and_its_form(app: App, key: str, shown: str) -> None:
    status, _, body = call(app, "POST", "/api/users", {"name": "A", "email": "a@x.org"}, key=key)
    error = json.loads(body)["error"]
    assert status == 400
    assert error.startswith("the 'Idempotency-Key' header must be 1 to 200 visible ASCII")
    assert shown in error
    assert app.store.users == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "body",
    [None, [], {"name": ""}, {"name": "x", "email": "nope"}, {"name": 3, "email": "a@b.org"}],
)
def test_bad_registrations_are_400_with_a_reason(app: App, body: object) -> None:
    status, _, payload = call(app, "POST", "/api/users", body)
    assert status == 400 and json.loads(payload)["error"]


def test_unknown_user_and_route_are_404(app: App) -> None:
    assert call(app, "GET", "/api/users/999")[0] == 404
    assert call(app, "DELETE", "/api/users")[0] == 404


def test_health_is_503_when_the_database_is_unreachable() -> None:
    app = App(SETTINGS, FakeStore(healthy=False), log=lambda line: None)
    assert call(app, "GET", "/health")[0] == 503


def test_an_unexpected_error_is_a_500_and_logged() -> None:
    lines: list[str] = []
    store = FakeStore()
    store.list = None  # type: ignore[assignment]
    app = App(SETTINGS, store, log=lines.append)
    assert call(app, "GET", "/api/users")[0] == 500
    assert any("level=error" in line for line in lines)


def test_page_escapes_user_input(app: App) -> None:
    call(app, "POST", "/api/users", {"name": "<script>x</script>", "email": "x@example.org"})
    page = call(app, "GET", "/")[2].decode()
    assert "&lt;script&gt;" in page and "<script>x" not in page


def test_log_line_is_key_value_with_the_required_fields() -> None:
    lines: list[str] = []
    app = App(SETTINGS, FakeStore(), log=lines.append)
    call(app, "GET", "/version")
    for key in ("host=", "container=", "image=", "revision=abc123", "request_id="):
        assert key in lines[-1]
    assert kv({"a": "x y", "b": ""}) == 'a="x y" b=""'


def test_validate_user_normalises() -> None:
    assert validate_user({"name": " Ada ", "email": "ADA@x.org"}) == ("Ada", "ada@x.org")
    with pytest.raises(BadRequest):
        validate_user("nope")


def test_metrics_windows_and_percentiles() -> None:
    assert status_class(204) == "2xx" and status_class(503) == "5xx" and status_class(99) == "other"
    assert percentile([], 95) == 0.0
    assert percentile(list(range(1, 101)), 95) == 95
    assert safe("a.b c") == "a_b_c"
    w = Window()
    for status, ms in ((200, 10.0), (200, 30.0), (500, 20.0)):
        w.add(status, ms)
    lines = w.lines("p", 7)
    assert "p.requests.2xx 2 7" in lines and "p.requests.5xx 1 7" in lines
    assert "p.latency.max 30.000 7" in lines


def test_recorder_drains_only_complete_seconds() -> None:
    now = [100.2]
    sent: list[str] = []
    rec = Recorder("p", sent.append, clock=lambda: now[0])
    rec.thread = object()  # type: ignore[assignment]  # no background thread in the test
    rec.record(200, 5.0)
    now[0] = 101.5
    rec.record(200, 5.0)
    assert rec.drain(101) == [
        "p.requests.2xx 1 100",
        "p.latency.mean 5.000 100",
        "p.latency.p95 5.000 100",
        "p.latency.max 5.000 100",
    ]
    assert rec.drain(101) == []


def test_memory_store_only_when_asked_for_by_name() -> None:
    from app.store import MemoryStore, PostgresStore, open_store

    assert isinstance(open_store("memory://"), MemoryStore)
    assert isinstance(open_store(""), PostgresStore)  # misconfigured: /health will say 503
    store = open_store("memory://")
    user = store.add("A", "a@example.org", "r1")
    assert store.get(user.id) == user and store.list(5) == [user]
    with pytest.raises(DuplicateEmail):
        store.add("B", "a@example.org", "r1")
    assert store.get_by_email("a@example.org") == user
    assert store.get_by_email("b@example.org") is None


def test_postgres_store_looks_a_user_up_by_email() -> None:
    from datetime import UTC, datetime

    from app.store import PostgresStore

    asked: list[tuple[str, tuple[object, ...]]] = []
    found = [(7, "Ada", "ada@example.org", "r1", datetime(2026, 1, 1, tzinfo=UTC))]

    class Answering(PostgresStore):
        def _run(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
            asked.append((sql, args))
            return found if args == ("ada@example.org",) else []

    store = Answering("postgresql://unused")
    assert store.get_by_email("ada@example.org") == User(
        7, "Ada", "ada@example.org", "r1", "2026-01-01T00:00:00+00:00"
    )
    assert store.get_by_email("bob@example.org") is None
    assert all("WHERE email = %s" in sql for sql, _ in asked)


def test_a_worker_warms_up_before_its_first_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from app import wsgi

    monkeypatch.setenv("DATABASE_URL", "memory://")
    monkeypatch.delenv("CARBON_HOST", raising=False)
    lazy = wsgi._Lazy()
    assert lazy.warm() and lazy.app is not None


def test_a_database_that_does_not_answer_yet_does_not_stop_the_worker(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app import wsgi

    monkeypatch.setenv("DATABASE_URL", "postgresql://app:x@127.0.0.1:1/app")
    monkeypatch.delenv("CARBON_HOST", raising=False)
    assert wsgi._Lazy().warm() is False
    assert "did not answer yet" in capsys.readouterr().err
