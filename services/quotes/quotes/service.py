"""quotes: one quote per request, with the release that served it (standard library only).

GET /          {"quote": ..., "release": ...}
GET /quotes    every quote
GET /version   {"service", "release", "image"}
GET /ready     200 "ready" (readiness)
Every response carries X-Release. SIGTERM stops accepting and finishes what is in flight.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

QUOTES = (
    "If it hurts, do it more often.",
    "Build quality in.",
    "Every commit is a release candidate.",
    "Keep everything in version control.",
    "Done means released.",
)


def pick(counter: int, quotes: tuple[str, ...] = QUOTES) -> str:
    return quotes[counter % len(quotes)]


def answer(path: str, counter: int, env: dict[str, str]) -> tuple[int, dict[str, object] | str]:
    """(status, body) for a GET of ``path`` (pure)."""
    release = env.get("RELEASE", "dev")
    if path == "/ready":
        return 200, "ready"
    if path == "/version":
        return 200, {
            "service": env.get("SERVICE_NAME", "quotes"),
            "release": release,
            "image": env.get("IMAGE", ""),
        }
    if path == "/":
        greeting = env.get("QUOTES_GREETING", "")
        return 200, {"quote": pick(counter), "greeting": greeting, "release": release}
    if path == "/quotes":
        return 200, {"quotes": list(QUOTES), "release": release}
    return 404, {"error": f"no such path: {path}"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the proxy expects
    counter = 0
    lock = threading.Lock()

    def do_GET(self) -> None:
        with Handler.lock:
            Handler.counter += 1
            n = Handler.counter
        status, body = answer(self.path.split("?", 1)[0], n, dict(os.environ))
        raw = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        kind = "text/plain" if isinstance(body, str) else "application/json"
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("X-Release", os.environ.get("RELEASE", "dev"))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, fmt: str, *args: object) -> None:
        if not self.path.startswith("/ready"):  # health probes would drown the log
            sys.stderr.write(f"client={self.client_address[0]} {fmt % args}\n")


def main() -> None:
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "9000"))), Handler)
    server.daemon_threads = False  # finish in-flight requests on shutdown
    server.block_on_close = True

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"quotes {os.environ.get('RELEASE', 'dev')} listening on {server.server_address}")
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
