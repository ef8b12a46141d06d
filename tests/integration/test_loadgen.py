"""The load generator for real: ``load.running`` starts locust on this machine's locustfile in
paths mode against a small HTTP server on a free 127.0.0.1 port.

What a user relies on: given paths, the load GETs exactly those, in turn, from both kinds of
user, and writes nothing; an answer of 500 or 404 counts as a failure (any path must answer
200 with its whole body).
"""

from __future__ import annotations

import http.server
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from lab.proof import load

PATHS = ("/", "/simple/", "/broken/", "/missing/")
STATUS = {"/broken/": 500, "/missing/": 404}


class _Recorder(http.server.ThreadingHTTPServer):
    daemon_threads = True
    seen: Counter[tuple[str, str]]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the proxy answers

    def _answer(self) -> None:
        assert isinstance(self.server, _Recorder)
        self.server.seen[(self.command, self.path)] += 1
        self.send_response(STATUS.get(self.path, 200))
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Recorder]:
    srv = _Recorder(("127.0.0.1", 0), _Handler)
    srv.seen = Counter()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_paths_mode_reads_the_given_paths_in_turn(server: _Recorder) -> None:
    url = f"http://127.0.0.1:{server.server_address[1]}"
    name = f"test-loadgen-paths-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    with load.running(rate=40, name=name, url=url, max_seconds=30, paths=PATHS) as traffic:
        deadline, seen = time.monotonic() + 20, 0
        while seen < 80 and time.monotonic() < deadline:  # bounded: 2 s at 40 req/s
            seen = len(traffic.seen_so_far())
            time.sleep(0.1)
    assert seen >= 80, f"only {seen} requests written in 20 s (see reports/load/{name}.locust.log)"
    written = traffic.seen_so_far()
    assert {method for method, _ in server.seen} == {"GET"}
    assert {path for _, path in server.seen} == set(PATHS)
    counts = Counter(r.path for r in written)
    assert max(counts.values()) - min(counts.values()) <= load.users_for(40), counts
    assert {r.user for r in written} == {"keepalive", "close"}
    assert {r.kind for r in written} == {"read"}
    assert all(r.ok == (r.path not in STATUS) for r in written)
    assert {r.verdict for r in written if not r.ok} == {"status 500", "status 404"}
    assert traffic.problems() == [], traffic.problems()
