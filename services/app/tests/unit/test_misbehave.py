"""The test hook CDLAB_MISBEHAVE (app/misbehave.py): off by default, and when asked for, exactly
the wrong answers the load's oracle must see (positive controls)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable

import pytest
from app import misbehave
from app.settings import Settings
from app.store import MemoryStore
from app.web import App


def app(misbehaving: str) -> App:
    settings = Settings("app", "abc123", "reg/app@sha256:x", "", "", 2003, "c1", misbehaving)
    return App(settings, MemoryStore(), log=lambda line: None)


def call(
    app: App, method: str, path: str, body: object = None, key: str | None = None
) -> tuple[int, dict[str, str], Iterable[bytes]]:
    raw = b"" if body is None else json.dumps(body).encode()
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "CONTENT_LENGTH": str(len(raw)),
        "wsgi.input": io.BytesIO(raw),
    }
    if key is not None:
        environ["HTTP_IDEMPOTENCY_KEY"] = key
    seen = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = int(status.split()[0]), dict(headers)

    answer = app(environ, start_response)
    return seen["status"], seen["headers"], answer


def register(app: App, n: int, key: str | None = None) -> int:
    body = {"name": "x", "email": f"u{n}@example.org"}
    status, _, _ = call(app, "POST", "/api/users", body, key)
    return status


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", misbehave.Misbehaviour()),
        ("conflict=5", misbehave.Misbehaviour(conflict=5)),
        (
            " conflict=5 , truncate=1,release=other ",
            misbehave.Misbehaviour(5, 1, "other"),
        ),
        ("truncate=100", misbehave.Misbehaviour(truncate=100)),
    ],
)
def test_what_is_asked_for(text: str, expected: misbehave.Misbehaviour) -> None:
    assert misbehave.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("conflict", "'conflict' is not understood; expected conflict=PERCENT"),
        ("loud=1", "'loud=1' is not understood"),
        ("release=", "'release=' is not understood"),
        ("conflict=x", "conflict must be a percent from 0 to 100: 'x'"),
        ("truncate=101", "truncate must be a percent from 0 to 100: '101'"),
        ("truncate=-1", "truncate must be a percent from 0 to 100: '-1'"),
    ],
)
def test_anything_else_is_refused_with_the_expected_form(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        misbehave.parse(text)


def test_an_app_with_a_bad_setting_does_not_start() -> None:
    with pytest.raises(ValueError, match="CDLAB_MISBEHAVE"):
        app("conflict=lots")


@pytest.mark.parametrize(("percent", "hits"), [(0, 0), (1, 1), (5, 5), (33, 33), (100, 100)])
def test_a_share_is_exact(percent: int, hits: int) -> None:
    share = misbehave.Share(percent)
    assert sum(share() for _ in range(100)) == hits


def test_off_by_default() -> None:
    assert Settings.from_env({}).misbehave == ""
    assert Settings.from_env({"CDLAB_MISBEHAVE": "truncate=1"}).misbehave == "truncate=1"
    plain = app("")
    statuses = [register(plain, n) for n in range(200)]
    assert statuses == [201] * 200
    for _ in range(200):
        status, headers, body = call(plain, "GET", "/version")
        assert (status, headers["X-Release"]) == (200, "abc123")
        assert len(b"".join(body)) == int(headers["Content-Length"])


def test_conflicts_answer_409_to_their_share_of_registrations_and_store_nothing() -> None:
    wrong = app("conflict=5")
    statuses = [register(wrong, n) for n in range(100)]
    assert statuses.count(409) == 5 and statuses.count(201) == 95
    assert len(wrong.store.list(1000)) == 95


def test_conflicts_answer_409_to_registrations_with_a_key_too() -> None:
    """The load sends an Idempotency-Key with every registration: its oracle must still see
    the conflicts on purpose (a key replays only a user that exists, and none was stored)."""
    wrong = app("conflict=5")
    statuses = [register(wrong, n, key=f"k{n}") for n in range(100)]
    assert statuses.count(409) == 5 and statuses.count(201) == 95
    assert len(wrong.store.list(1000)) == 95


def test_truncate_sends_half_the_declared_body_then_fails_the_connection() -> None:
    wrong = app("truncate=50")
    answers = [call(wrong, "GET", "/version") for _ in range(4)]
    whole = [a for a in answers if isinstance(a[2], list)]
    cut = [a for a in answers if not isinstance(a[2], list)]
    assert len(whole) == len(cut) == 2
    status, headers, body = cut[0]
    chunks = iter(body)
    first = next(chunks)
    assert status == 200 and 0 < len(first) < int(headers["Content-Length"])
    with pytest.raises(misbehave.CutOnPurpose):
        next(chunks)  # the server closes the connection on an error after the headers


def test_truncate_spares_the_health_probe() -> None:
    wrong = app("truncate=100")
    assert all(isinstance(call(wrong, "GET", "/health")[2], list) for _ in range(10))


def test_release_names_another_release_in_the_header_only() -> None:
    wrong = app("release=other")
    status, headers, body = call(wrong, "GET", "/version")
    assert (status, headers["X-Release"]) == (200, "other")
    assert json.loads(b"".join(body))["release"] == "abc123"
