"""Positive controls of the load oracle: the real locustfile (``load.running``) against a small
server on a free 127.0.0.1 port that mimics the demo app's endpoints and, when asked, misbehaves
as the app's test hook does (CDLAB_MISBEHAVE: conflict, truncate, release).

What a user relies on: a well-behaved server gives zero failures, zero broken lines, locust's
totals equal to the lines, the rate reached and every registration read back; each misbehaviour
is reported (409s as failures near their share, bodies cut after a good status line as
failures, another release in X-Release as a release problem), and the oracle stays sound
(``problems()`` empty) while it does.
"""

from __future__ import annotations

import http.server
import itertools
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.proof import load

RELEASE = "abc123"
RATE = 100
MIN_S, MAX_S = 3.0, 5.0  # each run: at least MIN_S of load, at most MAX_S (polled)


class _App(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # a connection per request at 100/s

    def __init__(self, conflict: int = 0, truncate: int = 0, release: str = "") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.conflict, self.truncate, self.release = conflict, truncate, release
        self.users: list[dict[str, object]] = []
        self.lock = threading.Lock()
        self.counts = {"conflict": itertools.count(1), "truncate": itertools.count(1)}
        self.misbehaved: Counter[str] = Counter()

    def share(self, what: str, percent: int) -> bool:
        """Exactly ``percent`` % of the calls, spread evenly (as app/misbehave.py's Share)."""
        with self.lock:
            n = next(self.counts[what])
        hit = n * percent // 100 > (n - 1) * percent // 100
        if hit:
            self.misbehaved[what] += 1
        return hit

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the app and the proxy answer
    server: _App

    def do_GET(self) -> None:
        found = re.fullmatch(r"/api/users/(\d+)", self.path)
        if self.path == "/version":
            self._answer(200, {"service": "app", "release": RELEASE, "image": "x"})
        elif self.path.startswith("/api/users?"):
            with self.server.lock:
                latest = self.server.users[-5:][::-1]
            self._answer(200, {"users": latest})
        elif found and 0 < int(found.group(1)) <= len(self.server.users):
            self._answer(200, self.server.users[int(found.group(1)) - 1])
        else:
            self._answer(404, {"error": f"no route for GET {self.path}"})

    def do_POST(self) -> None:
        doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.server.share("conflict", self.server.conflict):
            self._answer(409, {"error": "a conflict on purpose"})
            return
        with self.server.lock:
            user = {"id": len(self.server.users) + 1, "name": doc["name"], "email": doc["email"]}
            self.server.users.append({**user, "release": RELEASE})
        self._answer(201, {**user, "release": RELEASE})

    def _answer(self, status: int, doc: object) -> None:
        body = (json.dumps(doc) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Release", self.server.release or RELEASE)
        self.end_headers()
        if self.path.startswith("/api/users/") or not self.server.share(
            "truncate", self.server.truncate
        ):  # the readback's own reads are never cut
            self.wfile.write(body)
            return
        self.wfile.write(body[: len(body) // 2])  # the whole length declared, half sent
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Callable[..., _App]]:
    started: list[_App] = []

    def start(**misbehaviour: int | str) -> _App:
        app = _App(**misbehaviour)  # type: ignore[arg-type]
        started.append(app)
        threading.Thread(target=app.serve_forever, daemon=True).start()
        return app

    yield start
    for app in started:
        app.shutdown()
        app.server_close()


def run(app: _App, folder: Path, name: str, enough: Callable[[_App], bool]) -> load.Traffic:
    """Load on ``app`` for at least MIN_S, until ``enough`` (at most MAX_S)."""
    with load.running(RATE, name, app.url, max_seconds=30, folder=folder) as traffic:
        started = time.monotonic()
        while time.monotonic() - started < MAX_S and not (
            time.monotonic() - started >= MIN_S and enough(app)
        ):
            time.sleep(0.1)
    assert traffic.problems() == [], traffic.problems()  # the oracle itself stays sound
    assert traffic.totals is not None and traffic.totals.requests == traffic.lines.count  # type: ignore[union-attr]
    return traffic


def failures(traffic: load.Traffic) -> Counter[str]:
    return Counter(r.verdict for r in traffic.failed)


def test_a_well_behaved_server_passes_every_check(
    serve: Callable[..., _App], tmp_path: Path
) -> None:
    app = serve()
    traffic = run(app, tmp_path, "good", lambda _: True)
    assert failures(traffic) == Counter()
    assert traffic.broken == 0
    assert traffic.rate_problem() is None, traffic.rate_problem()
    assert traffic.release_problems(first=RELEASE) == []
    kinds = Counter(r.kind for r in traffic.requests)
    assert kinds["read"] and kinds["list"] and kinds["write"], kinds
    assert len(traffic.registered()) == kinds["write"]
    assert load.readback(traffic, app.url) == []
    assert traffic.totals is not None and traffic.totals.failures == 0


def test_conflicts_are_failures_near_their_share(
    serve: Callable[..., _App], tmp_path: Path
) -> None:
    app = serve(conflict=5)
    traffic = run(app, tmp_path, "conflict", lambda a: a.misbehaved["conflict"] >= 5)
    writes = [r for r in traffic.requests if r.kind == "write"]
    conflicts = [r for r in writes if r.verdict == "status 409"]
    assert failures(traffic) == Counter({"status 409": len(conflicts)})
    assert 0.02 <= len(conflicts) / len(writes) <= 0.10, (len(conflicts), len(writes))
    assert all(not r.ok and r.id is None for r in conflicts)
    assert load.readback(traffic, app.url) == []  # the others were stored


def test_a_body_cut_after_a_good_status_line_is_a_failure(
    serve: Callable[..., _App], tmp_path: Path
) -> None:
    app = serve(truncate=1)
    traffic = run(app, tmp_path, "truncate", lambda a: a.misbehaved["truncate"] >= 3)
    cut = [r for r in traffic.failed if r.verdict == "body cut short"]
    assert len(cut) > 0, failures(traffic)
    assert {r.status for r in cut} <= {200, 201}  # after a good status line: what success() erased
    assert set(failures(traffic)) == {"body cut short"}, failures(traffic)
    assert traffic.totals is not None and traffic.totals.failures >= len(cut)


def test_another_release_in_the_header_is_a_release_problem(
    serve: Callable[..., _App], tmp_path: Path
) -> None:
    app = serve(release="other")
    traffic = run(app, tmp_path, "release", lambda _: True)
    problems = traffic.release_problems(first=RELEASE)
    assert problems and all("answered by other, not abc123" in p for p in problems), problems[:3]
    # /version's body names the real release: those reads fail on the mismatch
    assert set(failures(traffic)) == {f"X-Release other, body {RELEASE}"}, failures(traffic)
