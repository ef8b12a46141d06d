"""The supervisor's two ports: the Runtime API router (TCP, HAProxy's CLI protocol: one line
in, the answer out, then the connection closes) and the web port (``/healthz``, ``/stats``,
``/``: the services' processes)."""

from __future__ import annotations

import http.server
import socketserver
import ssl
import sys
import threading
from typing import Any, Protocol


class Answers(Protocol):
    def answer(self, line: str) -> str: ...

    def healthy(self) -> tuple[bool, str]: ...


MAX_LINE = 65536


class _Router(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], supervisor: Answers, context: ssl.SSLContext | None
    ) -> None:
        self.supervisor = supervisor
        self.context = context
        super().__init__(address, _Command)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line, not a traceback: a client without the right certificate is refused."""
        kind, exc, _ = sys.exc_info()
        name = kind.__name__ if kind else "error"
        print(f"cdlab-proxy: Runtime API: refused {client_address[0]}: {name}: {exc}", flush=True)


class _Command(socketserver.StreamRequestHandler):
    timeout = 10
    server: _Router

    def setup(self) -> None:
        if self.server.context:  # the handshake in this connection's thread, bounded by timeout
            self.request.settimeout(self.timeout)
            self.request = self.server.context.wrap_socket(self.request, server_side=True)
        super().setup()

    def handle(self) -> None:
        line = self.rfile.readline(MAX_LINE).decode(errors="replace")
        self.wfile.write(self.server.supervisor.answer(line).encode())


class _Web(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], supervisor: Answers) -> None:
        self.supervisor = supervisor
        super().__init__(address, _Page)


class _Page(http.server.BaseHTTPRequestHandler):
    server: _Web

    def do_GET(self) -> None:
        sup = self.server.supervisor
        if self.path == "/healthz":
            ok, detail = sup.healthy()
            self._send(200 if ok else 503, ("ok" if ok else "unhealthy") + f": {detail}\n")
        elif self.path.startswith("/stats"):
            self._send(200, sup.answer("show stat"))
        elif self.path == "/":
            self._send(200, sup.answer("show cdlab"))
        else:
            self._send(404, "not found: try /healthz, /stats or /\n")

    def _send(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the healthcheck asks every few seconds."""


def start(
    supervisor: Answers,
    listen: str,
    runtime_port: int,
    web_port: int,
    runtime_listen: str = "",
    context: ssl.SSLContext | None = None,
) -> list[socketserver.BaseServer]:
    """Both servers, each in a thread; returns them (``shutdown()`` stops one). The router
    listens on ``runtime_listen`` (default ``listen``), over TLS when ``context`` is given."""
    servers: list[socketserver.BaseServer] = [
        _Router((runtime_listen or listen, runtime_port), supervisor, context),
        _Web((listen, web_port), supervisor),
    ]
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True, name=type(srv).__name__).start()
    return servers
