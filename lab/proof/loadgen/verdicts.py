"""What the load expects of each answer, as a verdict: ``"ok"`` or a short reason it failed
(``"status 409"``, ``"body cut short"``, ``"body not JSON"``, ``"no id"``...).

Pure and standard-library only: the locustfile imports it in its own process (``load.py`` puts
this checkout on its PYTHONPATH), the unit tests as any module.
An answer is ok only when it is exactly what the script asked for:

- ``version`` (GET /version): 200, a JSON object whose ``release`` is the answer's X-Release;
- ``users`` (GET /api/users?limit=5): 200, a JSON object whose ``users`` is a list of at most
  5 objects, each with an integer ``id``;
- ``register`` (POST /api/users): 201, a JSON object with an integer ``id`` and, when it has
  one, the ``email`` that was sent;
- ``complete`` (paths mode, any service): 200 and the whole body.

Every one of them: the body as long as its Content-Length says, and (but ``complete``) an
X-Release header. A request that raised (no answer, a timeout, a body cut by the connection's
end, a status locust refuses) fails with the reason its error gives.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TypeGuard

OK = "ok"
EXPECTS = ("version", "users", "register", "complete")
USERS_LIMIT = 5  # the load's list: /api/users?limit=5


def judge(
    expect: str, status: int, headers: Mapping[str, str], body: bytes, email: str = ""
) -> str:
    """The verdict on an answer that arrived whole as far as the client could tell.
    ``headers``: lower-case names (``content-length``, ``content-encoding``, ``x-release``);
    ``email``: the address a ``register`` sent."""
    if expect not in EXPECTS:
        raise ValueError(f"unknown expectation {expect!r}: expected one of {', '.join(EXPECTS)}")
    wanted = 201 if expect == "register" else 200
    if status != wanted:
        return f"status {status}"
    short = _length_problem(headers, body)
    if short:
        return short
    if expect == "complete":
        return OK
    release = headers.get("x-release", "")
    if not release:
        return "no X-Release"
    try:
        doc = json.loads(body)
    except ValueError:  # UnicodeDecodeError included
        return "body not JSON"
    if not isinstance(doc, dict):
        return "body not a JSON object"
    if expect == "version":
        return _version(doc, release)
    if expect == "users":
        return _users(doc)
    return _registered(doc, email)


def from_error(kind: str, message: str, status: int) -> str:
    """The verdict on a request that raised ``kind`` (the exception's class name) with
    ``message``, after a status line of ``status`` (0: none came)."""
    text = f"{kind}: {message}".lower()
    if kind == "CatchResponseError":  # the script's own verdict, given to locust as a failure
        return message or "failed"
    if "incomplete" in text or "connection closed" in text:
        return "body cut short" if status else "answer cut short"
    if status > 0 and not 200 <= status < 300:
        return f"status {status}"
    if "timeout" in text or "timed out" in text:
        return "timeout"
    if "refused" in text:
        return "connection refused"
    if "reset" in text:
        return "connection reset"
    return f"{kind}: {message}"[:120]


def fallback_line(
    exc: BaseException, context: object, name: object, response_time: object, start_time: object
) -> dict[str, object]:
    """The line of a request whose own line could not be made (``exc`` raised making it):
    still one line per request, failed with verdict "listener error: ..."."""
    ctx = context if isinstance(context, dict) else {}
    try:
        why = f"{type(exc).__name__}: {exc}"
    except Exception:  # an exception whose text fails too
        why = type(exc).__name__
    return {
        "t": round(start_time, 4) if _number(start_time) else round(time.time(), 4),
        "ms": round(response_time, 2) if _number(response_time) else 0.0,
        "kind": str(ctx.get("kind", name)),
        "user": str(ctx.get("user", "")),
        "status": 0,
        "error": "",
        "release": "",
        "verdict": f"listener error: {why}"[:160],
    }


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _length_problem(headers: Mapping[str, str], body: bytes) -> str:
    declared = headers.get("content-length", "")
    if not declared or headers.get("content-encoding", "identity").lower() != "identity":
        return ""  # chunked, or decoded by the client: its length is not the header's
    try:
        length = int(declared)
    except ValueError:
        return f"bad Content-Length {declared[:20]!r}"
    if len(body) < length:
        return "body cut short"
    if len(body) > length:
        return "body longer than its Content-Length"
    return ""


def _version(doc: dict[str, object], release: str) -> str:
    said = doc.get("release")
    if not isinstance(said, str) or not said:
        return "no release in body"
    if said != release:
        return f"X-Release {release[:40]}, body {said[:40]}"
    return OK


def _users(doc: dict[str, object]) -> str:
    users = doc.get("users")
    if not isinstance(users, list):
        return "no users list"
    if len(users) > USERS_LIMIT:
        return f"{len(users)} users, asked {USERS_LIMIT}"
    if not all(isinstance(u, dict) and _is_id(u.get("id")) for u in users):
        return "a user without an id"
    return OK


def _registered(doc: dict[str, object], email: str) -> str:
    if not _is_id(doc.get("id")):
        return "no id"
    if "email" in doc and doc["email"] != email:
        return "email not echoed"
    return OK


def user_id(body: bytes) -> int | None:
    """The ``id`` of a registration's answer, or None when it has no usable one."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    found = doc.get("id") if isinstance(doc, dict) else None
    return found if _is_id(found) else None


def _is_id(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
