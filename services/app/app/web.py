"""The WSGI application: routes, validation, the X-Release header, metrics and one log line per
request. Dependencies (store, recorder, log sink) are passed in, so tests need no database.

A registration sent with an ``Idempotency-Key`` header may be retried safely (``App.register``)."""

from __future__ import annotations

import html
import json
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from app import misbehave
from app.metrics import Recorder
from app.settings import Settings
from app.store import DuplicateEmail, Store

EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[A-Za-z]{2,}$")
IDEMPOTENCY_KEY = re.compile(r"[!-~]{1,200}")  # visible ASCII, as the key's header carries it
IDEMPOTENCY_FORM = "1 to 200 visible ASCII characters ('!' to '~', no spaces), like a UUID"
MAX_BODY = 16 * 1024
StartResponse = Callable[..., Any]
Headers = tuple[tuple[str, str], ...]
Response = tuple[int, str, bytes, Headers]  # status, content type, body, headers of its own
REPLAYED: Headers = (("Idempotent-Replayed", "true"),)


class BadRequest(Exception):
    pass


def kv(fields: dict[str, object]) -> str:
    """One key=value log line; values with spaces or quotes are quoted."""
    out = []
    for key, value in fields.items():
        text = str(value)
        if not text or any(c in text for c in ' "='):
            text = json.dumps(text)
        out.append(f"{key}={text}")
    return " ".join(out)


def validate_user(doc: object) -> tuple[str, str]:
    if not isinstance(doc, dict):
        raise BadRequest('expected a JSON object like {"name": "Ada", "email": "ada@example.org"}')
    name, email = doc.get("name"), doc.get("email")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 200:
        raise BadRequest("'name' must be a string of 1 to 200 characters")
    if not isinstance(email, str) or not EMAIL.match(email):
        raise BadRequest("'email' must be an address like ada@example.org")
    return name.strip(), email.lower()


def idempotency_key(environ: dict[str, Any]) -> str | None:
    """The request's ``Idempotency-Key`` header, or None when it has none. Raises BadRequest
    naming the expected form when it is there but empty, too long or not visible ASCII."""
    key: str | None = environ.get("HTTP_IDEMPOTENCY_KEY")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(key):
        shown = f"{key[:40]!r}{'...' if len(key) > 40 else ''}"
        raise BadRequest(
            f"the 'Idempotency-Key' header must be {IDEMPOTENCY_FORM}; "
            f"got {len(key)} characters: {shown}"
        )
    return key


def _json(status: int, doc: object, headers: Headers = ()) -> Response:
    return status, "application/json", (json.dumps(doc) + "\n").encode(), headers


class App:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        recorder: Recorder | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.settings, self.store, self.recorder = settings, store, recorder
        self.log = log or (lambda line: print(line, file=sys.stdout, flush=True))
        # TEST HOOK, off unless CDLAB_MISBEHAVE is set (app/misbehave.py)
        self.misbehave = misbehave.parse(settings.misbehave)
        self._conflicts = misbehave.Share(self.misbehave.conflict)
        self._cuts = misbehave.Share(self.misbehave.truncate)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        request_id = environ.get("HTTP_X_REQUEST_ID") or uuid.uuid4().hex[:16]
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
        try:
            status, ctype, body, extra = self.route(method, path, environ)
        except BadRequest as exc:
            status, ctype, body, extra = _json(400, {"error": str(exc)})
        except Exception as exc:  # the one place an unexpected error becomes a 500
            answer = _json(500, {"error": "internal error", "request_id": request_id})
            status, ctype, body, extra = answer
            self.log(kv({"level": "error", "request_id": request_id, "error": repr(exc)}))
        millis = (time.perf_counter() - started) * 1000
        s = self.settings
        start_response(
            f"{status} {STATUS_TEXT.get(status, 'Unknown')}",
            [
                ("Content-Type", ctype),
                ("Content-Length", str(len(body))),
                ("X-Release", self.misbehave.release or s.release),
                ("X-Request-Id", request_id),
                *extra,
            ],
        )
        if self.recorder is not None and path != "/health":  # probes are not user traffic
            self.recorder.record(status, millis)
        self.log(
            kv(
                {
                    "host": s.hostname,
                    "container": s.hostname,
                    "image": s.image,
                    "revision": s.release,
                    "request_id": request_id,
                    "method": method,
                    "path": path,
                    "status": status,
                    "ms": f"{millis:.1f}",
                }
            )
        )
        if path != "/health" and self._cuts():
            return misbehave.cut(body)
        return [body]

    def route(self, method: str, path: str, environ: dict[str, Any]) -> Response:
        if path == "/health":
            return self.health()
        if path == "/version":
            s = self.settings
            return _json(200, {"service": s.service, "release": s.release, "image": s.image})
        if path == "/api/users" and method == "POST":
            name, email = validate_user(self._body(environ))
            key = idempotency_key(environ)
            if self._conflicts():
                return _json(409, {"error": "a conflict on purpose (CDLAB_MISBEHAVE)"})
            return self.register(name, email, key)
        if path == "/api/users" and method == "GET":
            return _json(
                200, {"users": [u.as_dict() for u in self.store.list(self._limit(environ))]}
            )
        match = re.fullmatch(r"/api/users/(\d{1,18})", path)
        if match and method == "GET":
            user = self.store.get(int(match.group(1)))
            return _json(200, user.as_dict()) if user else _json(404, {"error": "no such user"})
        if path == "/" and method == "GET":
            return 200, "text/html; charset=utf-8", self.page(), ()
        return _json(404, {"error": f"no route for {method} {path}"})

    def register(self, name: str, email: str, key: str | None) -> Response:
        """A new user: 201 with it; 409 when ``email`` is taken, unless ``key`` is given and
        the user holding ``email`` has this ``name``: then 201 with that user, as its first
        answer said, and ``Idempotent-Replayed: true``.

        The key only marks a request its client may have sent before (a proxy retrying a POST
        whose answer did not come, on another replica); the email, the users' natural key, and
        the name decide whether this is that request again. So no key is stored: no table, no
        migration, and a retry that reaches any replica, or comes after a restart, is answered
        the same. The cost of comparing no key: another client registering the same email and
        name with a key of its own is answered 201 with that user too, not 409.
        Without a key a taken email is 409, as it always was."""
        try:
            user = self.store.add(name, email, self.settings.release)
        except DuplicateEmail:
            existing = self.store.get_by_email(email) if key is not None else None
            if existing is None or existing.name != name:
                return _json(409, {"error": f"a user with email {email!r} already exists"})
            return _json(201, existing.as_dict(), REPLAYED)
        return _json(201, user.as_dict())

    def health(self) -> Response:
        try:
            self.store.ping()
        except Exception as exc:  # any failure to reach the database means not ready
            return _json(503, {"status": "unavailable", "error": type(exc).__name__})
        return _json(200, {"status": "ok", "release": self.settings.release})

    @staticmethod
    def _body(environ: dict[str, Any]) -> object:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError as exc:
            raise BadRequest("bad Content-Length") from exc
        if length > MAX_BODY:
            raise BadRequest(f"body larger than {MAX_BODY} bytes")
        try:
            return json.loads(environ["wsgi.input"].read(length) or b"null")
        except ValueError as exc:
            raise BadRequest(f"body is not JSON: {exc}") from exc

    @staticmethod
    def _limit(environ: dict[str, Any]) -> int:
        query = dict(p.partition("=")[::2] for p in environ.get("QUERY_STRING", "").split("&") if p)
        try:
            return max(1, min(1000, int(query.get("limit", "100"))))
        except ValueError as exc:
            raise BadRequest("'limit' must be a number from 1 to 1000") from exc

    def page(self) -> bytes:
        users = self.store.list(20)
        rows = "".join(
            f"<tr><td>{u.id}</td><td>{html.escape(u.name)}</td>"
            f"<td>{html.escape(u.email)}</td><td><code>{html.escape(u.release)}</code>"
            f"</td></tr>"
            for u in users
        )
        release = html.escape(self.settings.release)
        return PAGE.format(release=release, rows=rows).encode()


STATUS_TEXT = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    404: "Not Found",
    409: "Conflict",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cdlab · users</title>
<style>body{{font-family:sans-serif;max-width:42rem;margin:2rem auto}}
td,th{{padding:.2rem .6rem;text-align:left}}</style></head>
<body><h1>Users</h1><p>Served by release <code>{release}</code>.</p>
<form id="f"><input name="name" placeholder="name" required>
<input name="email" type="email" placeholder="email" required><button>Register</button></form>
<p id="msg"></p>
<table><tr><th>id</th><th>name</th><th>email</th><th>registered by</th></tr>{rows}</table>
<script>
document.getElementById("f").onsubmit = async (e) => {{
  e.preventDefault();
  const body = JSON.stringify(Object.fromEntries(new FormData(e.target)));
  const r = await fetch("/api/users", {{method: "POST", body,
                        headers: {{"Content-Type": "application/json"}}}});
  const doc = await r.json();
  document.getElementById("msg").textContent = r.ok ? "registered #" + doc.id : doc.error;
  if (r.ok) setTimeout(() => location.reload(), 300);
}};
</script></body></html>
"""
