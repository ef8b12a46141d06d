"""API tests against a running release at ``BASE_URL`` (optionally ``EXPECT_RELEASE``).

They run from the integration-test image (Dockerfile.test) against a candidate's own address
before any user reaches it, or against the proxy, or against a local dev instance. Without
``BASE_URL`` they start this release of the service themselves (see conftest.py).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import uuid

BASE_URL = os.environ.get("BASE_URL", "").rstrip("/")  # empty: conftest starts the service here
EXPECT_RELEASE = os.environ.get("EXPECT_RELEASE", "")


def request(
    method: str, path: str, body: object = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], object]:
    data = None if body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(BASE_URL + path, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            raw, status, headers = resp.read(), resp.status, dict(resp.headers)
    except urllib.error.HTTPError as err:
        raw, status, headers = err.read(), err.code, dict(err.headers)
    ctype = headers.get("Content-Type", "")
    return status, headers, json.loads(raw) if ctype.startswith("application/json") else raw


def test_health_is_ok() -> None:
    status, _, body = request("GET", "/health")
    assert status == 200 and body["status"] == "ok"


def test_version_and_release_header_agree() -> None:
    status, headers, body = request("GET", "/version")
    assert status == 200
    assert headers["X-Release"] == body["release"]
    if EXPECT_RELEASE:
        assert body["release"] == EXPECT_RELEASE


def test_register_fetch_and_list_a_user() -> None:
    email = f"it-{uuid.uuid4().hex[:12]}@example.org"
    status, _, user = request("POST", "/api/users", {"name": "Integration", "email": email})
    assert status == 201, user
    status, _, fetched = request("GET", f"/api/users/{user['id']}")
    assert status == 200 and fetched["email"] == email
    status, _, listed = request("GET", "/api/users?limit=1000")
    assert user["id"] in [u["id"] for u in listed["users"]]


def test_duplicate_registration_conflicts() -> None:
    email = f"dup-{uuid.uuid4().hex[:12]}@example.org"
    assert request("POST", "/api/users", {"name": "A", "email": email})[0] == 201
    assert request("POST", "/api/users", {"name": "B", "email": email})[0] == 409


def test_a_registration_with_an_idempotency_key_can_be_retried() -> None:
    email = f"retry-{uuid.uuid4().hex[:12]}@example.org"
    key = {"Idempotency-Key": uuid.uuid4().hex}
    status, _, first = request("POST", "/api/users", {"name": "A", "email": email}, key)
    assert status == 201, first
    status, headers, again = request("POST", "/api/users", {"name": "A", "email": email}, key)
    assert (status, headers.get("Idempotent-Replayed")) == (201, "true") and again == first
    assert request("POST", "/api/users", {"name": "B", "email": email}, key)[0] == 409


def test_bad_input_is_rejected_with_a_reason() -> None:
    status, _, body = request("POST", "/api/users", {"name": "x", "email": "not-an-address"})
    assert status == 400 and "email" in body["error"]


def test_unknown_user_is_404() -> None:
    assert request("GET", "/api/users/999999999999")[0] == 404


def test_page_renders() -> None:
    status, headers, body = request("GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"<h1>Users</h1>" in body
