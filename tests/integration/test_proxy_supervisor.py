"""The proxy's supervisor for real: ``python3 -m cdlab_proxy`` running HAProxy processes on
this machine, with a fake etcd and a fake DNS server, every port on 127.0.0.1 chosen free.

What a user relies on: a new service's frontend starts while another service keeps answering
every request; a changed frontend replaces that service's process only, without a failed
request; the Runtime API port answers for every process; a deleted frontend stops its process;
a frontend on another service's port is refused and says why.
"""

from __future__ import annotations

import http.client
import http.server
import os
import random
import shutil
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

import pytest
from cdlab_logs import proxy as logs_proxy
from cdlab_proxy.slots import MATCH_SLOTS

from lab.ports.proxy import ProxyError, Runtime
from tests.integration.fakes import FakeCarbon, FakeDns, FakeEtcd, FakeSyslog

pytestmark = [
    pytest.mark.skipif(
        shutil.which("haproxy") is None,
        reason="haproxy is not installed ('apt-get install haproxy')",
    ),
    # one supervisor for the module, its tests in order: never split across xdist workers
    pytest.mark.xdist_group("proxy-supervisor"),
]
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

    def get(
        self, public_port: int, headers: dict[str, str] | None = None, path: str = "/version"
    ) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", public_port + self.shift, timeout=5)
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            resp.read()
            return resp.status, resp.getheader("X-Release") or ""
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


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("proxy")
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
    }
    log = tmp / "supervisor.log"
    with log.open("wb") as out:
        sup = subprocess.Popen(
            [sys.executable, "-m", "cdlab_proxy"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    releases = {name: _Release(name) for name in ("app", "quotes")}
    try:
        yield Proxy(
            etcd, Runtime("127.0.0.1", runtime_port), shift, web_port, releases, log, carbon, syslog
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


def test_a_frontend_and_its_routes_serve_the_service(proxy: Proxy) -> None:
    doc = proxy.frontend("app", 8000)
    proxy.route("app")
    proxy.runtime.wait_frontend(doc, timeout=15)
    proxy.runtime.wait_up("app", "localhost", timeout=15)
    assert wait_for(lambda: proxy.get(8000) == (200, "app-1"), "app answering through the proxy")


def test_a_second_service_starts_while_the_first_answers_every_request(proxy: Proxy) -> None:
    before = proxy.pids()["app"]
    load = Load(proxy, 8000)
    try:
        wait_for(lambda: sum(load.results.values()) > 50, "the load running")
        doc = proxy.frontend("quotes", 8001)
        proxy.route("quotes")
        proxy.runtime.wait_frontend(doc, timeout=15)
        wait_for(lambda: proxy.get(8001) == (200, "quotes-1"), "quotes answering")
        time.sleep(0.5)
    finally:
        results = load.end()
    assert set(results) == {"200 app-1"}, f"app's answers while quotes started: {results}"
    assert proxy.pids()["app"] == before, "app's HAProxy was touched"


def test_a_changed_frontend_replaces_that_process_only_and_drops_nothing(proxy: Proxy) -> None:
    pids = proxy.pids()
    proxy.runtime.wait_up("quotes", "localhost", timeout=15)
    load = Load(proxy, 8001)
    try:
        wait_for(lambda: sum(load.results.values()) > 50, "the load running")
        doc = proxy.frontend("quotes", 8001, health="/ready", maxconn=50)
        proxy.runtime.wait_frontend(doc, timeout=15)
        time.sleep(0.5)
    finally:
        results = load.end()
    after = proxy.pids()
    assert after["quotes"] != pids["quotes"] and after["app"] == pids["app"]
    assert set(results) == {"200 quotes-1"}, f"quotes' answers while replaced: {results}"
    assert "quotes: replaced its HAProxy" in proxy.log.read_text()


def test_the_runtime_api_port_answers_for_every_process(proxy: Proxy) -> None:
    rt = proxy.runtime
    stat = rt.send("show stat")
    assert stat.count("# pxname,") == 1, "one header for every process's rows"
    assert "app,FRONTEND," in stat and "quotes,FRONTEND," in stat
    state = rt.send("show servers state")
    assert state.startswith("1\n# be_id ") and state.count("# be_id") == 1
    assert {s.fqdn for s in rt.slots("quotes")} >= {"localhost"}
    assert [s.name for s in rt.slots("app-match")] == [f"r{i}" for i in range(1, MATCH_SLOTS + 1)]
    assert rt.sessions("app", "localhost") == 0
    assert rt.send("set server nosuch/r1 state ready").strip() == "No such backend."
    assert "app/r1" in rt.send("get weight app/r1") or rt.send("get weight app/r1")[0].isdigit()


def test_a_killed_haproxy_is_started_again_at_once_and_alone(proxy: Proxy) -> None:
    pids = proxy.pids()
    killed = time.monotonic()
    os.kill(pids["quotes"] or 0, signal.SIGKILL)  # a process of this test's supervisor
    wait_for(lambda: proxy.get(8001) == (200, "quotes-1"), "quotes answering again", timeout=4)
    back = time.monotonic() - killed
    after = proxy.pids()
    assert after["quotes"] != pids["quotes"] and after["app"] == pids["app"]
    assert back < 4, f"quotes answered again {back:.1f} s after its HAProxy was killed"


def matched_requests(proxy: Proxy) -> int:
    stat = proxy.runtime.send("show stat")
    header = stat.splitlines()[0][2:].split(",")
    rows = [dict(zip(header, line.split(","), strict=False)) for line in stat.splitlines()[1:]]
    return sum(
        int(r["stot"]) for r in rows if r.get("pxname") == "app-match" and r["svname"] == "r1"
    )


def test_an_ab_rule_routes_matched_requests_and_survives_a_replacement(proxy: Proxy) -> None:
    pool = {"release": "app-1", "host": "localhost", "weight": 100, "drain": False}
    rule = {"kind": "header", "name": "X-Canary", "value": "1", "release": "b" * 12}
    proxy.etcd.put(
        ROUTES + "app",
        {"service": "app", "servers": [pool], "match": {**rule, "host": "localhost"}},
    )
    proxy.runtime.wait_up("app-match", "localhost", timeout=15)
    for replaced in (False, True):
        if replaced:  # the rule is in the new process's map from its start
            doc = proxy.frontend("app", 8000, maxconn=100)
            proxy.runtime.wait_frontend(doc, timeout=15)
            proxy.runtime.wait_up("app-match", "localhost", timeout=15)
        before = matched_requests(proxy)
        assert proxy.get(8000) == (200, "app-1") and matched_requests(proxy) == before
        assert proxy.get(8000, {"X-Canary": "1"}) == (200, "b" * 12)
        assert matched_requests(proxy) == before + 1, f"after replacement: {replaced}"
    proxy.route("app")  # the rule goes


def test_every_request_counts_at_the_edge_for_the_release_that_served_it(proxy: Proxy) -> None:
    """X-Release and X-Service from the proxy, whatever the release says; each request in
    carbon once, by class, with its latency percentiles; each request line sent on to the log
    store, filed as the store reads it: by its service and release. A release that closes the
    connection is a proxy error against it."""
    server = {"release": "edge-1", "host": "localhost", "weight": 100, "drain": False}
    proxy.etcd.put(ROUTES + "app", {"service": "app", "servers": [server]})
    before: list[tuple[int, str]] = []  # until edge-1 answers
    wait_for(lambda: before.append(proxy.get(8000)) or before[-1][1] == "edge-1", "edge-1")
    base = "edge.app.edge-1"
    answers = [proxy.get(8000, path=p) for p in ["/a"] * 40 + ["/fail"] * 7 + ["/close"] * 3]
    assert answers == [(200, "edge-1")] * 40 + [(500, "edge-1")] * 7 + [(502, "edge-1")] * 3
    expected = {"2xx": 40 + before.count((200, "edge-1")), "5xx": 7, "proxy": 3}

    def counted() -> dict[str, float]:
        got = {c: proxy.carbon.total(f"requests.{c}", base) for c in expected}
        return got if got == expected else {}

    wait_for(counted, "the requests counted in carbon", timeout=5)
    assert proxy.carbon.total("latency.p95", base) > 0
    filed = [
        line
        for datagram in list(proxy.syslog.datagrams)
        if logs_proxy.is_batch(datagram)
        for line in logs_proxy.parse(datagram).lines.get(("app", "edge-1"), [])
    ]
    failed = [line for line in filed if b"GET /fail" in line]
    assert len(failed) == 7 and b" 500 " in failed[-1]
    proxy.route("app")


def test_a_frontend_on_another_services_port_is_refused(proxy: Proxy) -> None:
    proxy.releases["other"] = proxy.releases["app"]
    doc = proxy.frontend("other", 8000)
    with pytest.raises(ProxyError, match=r"refused.*public port 8000 is app's"):
        proxy.runtime.wait_frontend(doc, timeout=2)
    assert proxy.get(8000) == (200, "app-1")
    proxy.etcd.delete(FRONTENDS + "other")


def test_a_deleted_frontend_stops_its_process_and_health_stays_ok(proxy: Proxy) -> None:
    proxy.etcd.delete(FRONTENDS + "quotes")
    wait_for(lambda: "quotes" not in proxy.pids(), "quotes' process gone")
    wait_for(lambda: proxy.refused(8001), "quotes' port closed", timeout=5)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.web, timeout=5)
    conn.request("GET", "/healthz")
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (200, b"ok: 1 service(s)\n")
    assert proxy.get(8000) == (200, "app-1")
