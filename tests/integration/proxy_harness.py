"""The proxy's supervisor run for real on this machine, for the integration tests:
``python3 -m cdlab_proxy`` and its HAProxy processes, with a fake etcd, a fake DNS server, fake
carbon and log store, every port on 127.0.0.1 chosen free (``supervisor``); a release that
answers with its name (``_Release``) and a load of requests in a loop (``Load``)."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.ports.proxy import ProxyError, Runtime
from tests.integration.fakes import FakeCarbon, FakeDns, FakeEtcd, FakeSyslog

ROOT = Path(__file__).resolve().parents[2]
FRONTENDS, ROUTES = "/cdlab/frontends/", "/cdlab/routes/"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_shift() -> int:
    """An offset that moves the public ports 8000-8008 onto nine free ports."""
    for _ in range(50):
        shift = random.randrange(20000, 50000)
        try:
            for port in range(8000 + shift, 8009 + shift):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return shift
    raise RuntimeError("no nine free ports in a row found")


def wait_for(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline, last = time.monotonic() + timeout, "not tried"
    while time.monotonic() < deadline:
        try:
            got = check()
            if got:
                return got
            last = f"got {got!r}"
        except (OSError, ProxyError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout:.0f} s (last: {last})")


class _Release(http.server.ThreadingHTTPServer):
    """A release: 200 on every path but /fail (500) and /close (the connection closed, no
    answer), and a wrong X-Release (the proxy names the release)."""

    daemon_threads = True

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(("127.0.0.1", 0), _Answer)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A health check may close before the answer is written: not an error here."""


class _Answer(http.server.BaseHTTPRequestHandler):
    server: _Release

    def do_GET(self) -> None:
        if self.path == "/close":
            self.close_connection = True
            return
        body = self.server.name.encode()
        self.send_response(500 if self.path == "/fail" else 200)
        self.send_header("X-Release", "not-" + self.server.name)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@dataclass
class Proxy:
    etcd: FakeEtcd
    runtime: Runtime
    shift: int
    web: int
    releases: dict[str, _Release]
    log: Path
    carbon: FakeCarbon
    syslog: FakeSyslog
    dns: FakeDns

    def get(
        self, public_port: int, headers: dict[str, str] | None = None, path: str = "/version"
    ) -> tuple[int, str]:
        status, release, _ = self.answer(public_port, headers, path)
        return status, release

    def answer(
        self,
        public_port: int,
        headers: dict[str, str] | None = None,
        path: str = "/version",
        method: str = "GET",
    ) -> tuple[int, str, str]:
        """A request through the proxy: its status, X-Release and body."""
        conn = http.client.HTTPConnection("127.0.0.1", public_port + self.shift, timeout=5)
        try:
            conn.request(method, path, headers=headers or {})
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
            return resp.status, resp.getheader("X-Release") or "", body
        finally:
            conn.close()

    def refused(self, public_port: int) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", public_port + self.shift)) != 0

    def frontend(self, name: str, public_port: int, **extra: Any) -> dict[str, Any]:
        doc = {
            "name": name,
            "public_port": public_port,
            "port": self.releases[name].server_address[1],
            "health": "/health",
            "maxconn": 0,
            **extra,
        }
        self.etcd.put(FRONTENDS + name, doc)
        return doc

    def route(self, name: str) -> None:
        server = {"release": name + "-1", "host": "localhost", "weight": 100, "drain": False}
        self.etcd.put(ROUTES + name, {"service": name, "servers": [server]})

    def pids(self) -> dict[str, int | None]:
        return {r.service: r.pid for r in self.runtime.frontends() or []}


@contextlib.contextmanager
def supervisor(tmp: Path, mode: str = "single") -> Iterator[Proxy]:
    """The supervisor in ``mode`` (``CDLAB_PROXY_MODE``), its files under ``tmp``, with the
    releases ``app`` and ``quotes``; its log printed when it ends."""
    etcd, dns, carbon, syslog = FakeEtcd(), FakeDns(), FakeCarbon(), FakeSyslog()
    runtime_port, web_port, shift = free_port(), free_port(), free_shift()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "services" / "proxy"),
        "CDLAB_PROXY_RUN_DIR": str(tmp / "run"),
        "CDLAB_PROXY_BIND": "127.0.0.1",
        "CDLAB_PROXY_LISTEN": "127.0.0.1",
        "CDLAB_PROXY_PORT_SHIFT": str(shift),
        "CDLAB_PROXY_NAMESERVER": dns.address,
        "CDLAB_PROXY_RUNTIME_PORT": str(runtime_port),
        "CDLAB_PROXY_WEB_PORT": str(web_port),
        "ETCD_HOST": "127.0.0.1",
        "ETCD_PORT": str(etcd.port),
        "CDLAB_PROXY_CARBON": carbon.address,
        "CDLAB_PROXY_EDGE_LISTEN": f"127.0.0.1:{free_port()}",
        "CDLAB_PROXY_LOG_STORE": syslog.address,
        "CDLAB_PROXY_MODE": mode,
    }
    log = tmp / "supervisor.log"
    with log.open("wb") as out:
        sup = subprocess.Popen(
            [sys.executable, "-m", "cdlab_proxy"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    releases = {name: _Release(name) for name in ("app", "quotes")}
    try:
        yield Proxy(
            etcd,
            Runtime("127.0.0.1", runtime_port),
            shift,
            web_port,
            releases,
            log,
            carbon,
            syslog,
            dns,
        )
    finally:
        sup.send_signal(signal.SIGTERM)
        try:
            sup.wait(40)
        except subprocess.TimeoutExpired:
            sup.kill()
        for r in releases.values():
            r.shutdown()
        dns.close()
        etcd.shutdown()
        carbon.close()
        syslog.close()
        print(f"\n--- supervisor's log ({log})\n" + log.read_text()[-4000:])


class Load:
    """Requests in a loop on new connections (each one accepted by HAProxy) until stopped."""

    def __init__(self, proxy: Proxy, public_port: int, threads: int = 4) -> None:
        self.results: Counter[str] = Counter()
        self.stop = threading.Event()
        self.workers = [
            threading.Thread(target=self._run, args=(proxy, public_port)) for _ in range(threads)
        ]
        for w in self.workers:
            w.start()

    def _run(self, proxy: Proxy, public_port: int) -> None:
        while not self.stop.is_set():
            try:
                status, release = proxy.get(public_port)
                self.results[f"{status} {release}"] += 1
            except (OSError, http.client.HTTPException) as exc:
                self.results[type(exc).__name__] += 1

    def end(self) -> Counter[str]:
        self.stop.set()
        for w in self.workers:
            w.join()
        return self.results
