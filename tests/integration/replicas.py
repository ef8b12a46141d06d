"""Replicas of one release on this machine's loopback addresses (127.0.0.2, .3, ...), one of
which can be made a dead node's (``Replica.freeze``) or take requests and answer none
(``Replica.stall``), and a paced load through the proxy that counts which replica answered each
request (``Paced``)."""

from __future__ import annotations

import http.client
import http.server
import select
import socket
import threading
import time
from collections import Counter
from typing import Any

from tests.integration.proxy_harness import Proxy


def port_on_all(ips: tuple[str, ...]) -> int:
    """A TCP port free on every one of ``ips``."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind((ips[0], 0))
            port = int(first.getsockname()[1])
        try:
            for ip in ips:
                with socket.socket() as s:
                    s.bind((ip, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {', '.join(ips)}")


class Replica(http.server.ThreadingHTTPServer):
    """One replica at ``ip``:``port``: 200 with its address as the body, on every path."""

    daemon_threads = True

    def __init__(self, ip: str, port: int) -> None:
        super().__init__((ip, port), _Reply)
        self.ip = ip
        self.plugs: list[socket.socket] = []
        self.stalled = ""  # a path whose requests get no answer ("": none)
        self.answer_after: float | None = None  # seconds: the stalled path answered late
        self.released = threading.Event()  # set: the stalled requests end, unanswered
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A health check may close before the answer is written: not an error here."""

    def freeze(self) -> int:
        """Make this replica a dead node's: from the return on, every SYN to it is dropped
        without an answer (its accept queue is full and nothing accepts any more), so a
        connection to it neither succeeds nor is refused. The connections that reached it
        before are answered; returns how many there were."""
        self.shutdown()  # no accept() any more; the listening socket stays open
        self.socket.listen(0)  # an accept queue of one connection
        self.socket.setblocking(False)
        answered = 0
        for _ in range(100):
            while True:  # those that came in meanwhile are answered
                try:
                    conn, peer = self.socket.accept()
                except BlockingIOError:
                    break
                conn.setblocking(True)
                self.process_request(conn, peer)
                answered += 1
            plug = socket.socket()
            plug.setblocking(False)
            plug.connect_ex(self.server_address)
            done = select.select([], [plug], [], 0.1)[1]
            if done and not plug.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.plugs.append(plug)  # in the queue, never accepted: it is full
                return answered
            plug.close()  # another connection took the place first: answer it, try again
        raise RuntimeError(f"could not fill the accept queue of {self.ip}")

    def stall(self, path: str, answer_after: float | None = None) -> None:
        """Take every request for ``path`` and answer none, as a replica on a node that died
        with requests in flight, or answer it only ``answer_after`` seconds later (a slow
        endpoint); its health checks (another path) are answered."""
        self.stalled, self.answer_after = path, answer_after

    def close(self) -> None:
        self.released.set()
        for plug in self.plugs:
            plug.close()
        self.shutdown()
        self.server_close()


class _Reply(http.server.BaseHTTPRequestHandler):
    server: Replica

    def do_GET(self) -> None:
        if self.path == self.server.stalled:
            if self.server.answer_after is None:
                self.server.released.wait(30)
                self.close_connection = True
                return
            time.sleep(self.server.answer_after)
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = self.server.ip.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


class Paced:
    """About ``rate`` requests a second through the proxy, each on a new connection, until
    ended; ``results``: ``"<status> <release> <body>"`` (the replica that answered) or the
    error's name, and how many of each."""

    def __init__(self, proxy: Proxy, public_port: int, rate: float, threads: int = 8) -> None:
        self.results: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.workers = [
            threading.Thread(target=self._run, args=(proxy, public_port, threads / rate))
            for _ in range(threads)
        ]
        for w in self.workers:
            w.start()

    def _run(self, proxy: Proxy, public_port: int, interval: float) -> None:
        due = time.monotonic()
        while not self.stop.wait(max(0.0, due - time.monotonic())):
            due += interval
            try:
                outcome = " ".join(map(str, proxy.answer(public_port)))
            except (OSError, http.client.HTTPException) as exc:
                outcome = type(exc).__name__
            with self.lock:
                self.results[outcome] += 1

    def count(self) -> int:
        with self.lock:
            return sum(self.results.values())

    def by(self, ip: str) -> int:
        """Requests the replica at ``ip`` answered so far."""
        with self.lock:
            return sum(n for k, n in self.results.items() if k.endswith(f" {ip}"))

    def end(self) -> Counter[str]:
        self.stop.set()
        for w in self.workers:
            w.join()
        return self.results
