"""The proxy's supervisor for real: ``python3 -m cdlab_proxy`` running HAProxy processes on
this machine, with a fake etcd and a fake DNS server, every port on 127.0.0.1 chosen free.

What a user relies on: a new service's frontend starts while another service keeps answering
every request; a changed frontend replaces that service's process only, without a failed
request; the Runtime API port answers for every process; a deleted frontend stops its process;
a frontend on another service's port is refused and says why. With releases as Swarm services
(``CDLAB_PROXY_MODE=swarm``, a second supervisor): a release of three replicas is served by a
slot at each of their addresses, an address gone from DNS leaves the pool, a drained-addresses
document drains a replica until it is deleted, a replica whose node died (its SYNs dropped)
is taken out within a second without a failed request, and a request a replica took but does
not answer is asked again of another after the frontend's try_timeout when that is safe.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cdlab_logs import proxy as logs_proxy
from cdlab_proxy.slots import MATCH_SLOTS

from lab.ports.proxy import ProxyError, serving
from tests.integration.proxy_harness import FRONTENDS, ROUTES, Load, Proxy, supervisor, wait_for
from tests.integration.replicas import Paced, Replica, port_on_all

pytestmark = [
    pytest.mark.skipif(
        shutil.which("haproxy") is None,
        reason="haproxy is not installed ('apt-get install haproxy')",
    ),
    # one supervisor for the module, its tests in order: never split across xdist workers
    pytest.mark.xdist_group("proxy-supervisor"),
]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    with supervisor(tmp_path_factory.mktemp("proxy")) as running:
        yield running


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


# -- a release of replicas (the proxy in swarm mode) -----------------------------------------

IPS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")  # loopback: the traffic never leaves the machine
TASKS = "tasks.app-r3"  # Docker's DNS name of release r3's tasks (FakeDns answers it here)


@dataclass
class Swarm:
    proxy: Proxy
    replicas: dict[str, Replica]

    def up(self) -> set[str]:
        """The addresses of release r3's slots that are UP."""
        return {s.addr for s in self.proxy.runtime.release_slots("app", "app-r3") if serving(s)}

    def ready(self) -> set[str]:
        """The addresses of release r3's slots that take new requests."""
        slots = self.proxy.runtime.release_slots("app", "app-r3")
        return {s.addr for s in slots if serving(s) and not s.draining}

    def check_status(self, slot: str) -> str:
        """The last health check's status of ``app/<slot>`` (``show stat``: L4TOUT, L4CON...)."""
        stat = self.proxy.runtime.send("show stat").splitlines()
        header = stat[0][2:].split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in stat[1:]]
        return next(
            r["check_status"] for r in rows if (r.get("pxname"), r.get("svname")) == ("app", slot)
        )


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarm]:
    """A supervisor in swarm mode serving app's release r3: three replicas on one port."""
    port = port_on_all(IPS)
    replicas = {ip: Replica(ip, port) for ip in IPS}
    try:
        with supervisor(tmp_path_factory.mktemp("swarm"), mode="swarm") as running:
            running.dns.set(TASKS, list(IPS))
            front = {
                "name": "app",
                "public_port": 8000,
                "port": port,
                "health": "/health",
                "try_timeout": 1,
            }
            running.etcd.put(FRONTENDS + "app", {**front, "maxconn": 0})
            server = {"release": "r3", "host": "app-r3", "weight": 100, "replicas": 3}
            running.etcd.put(ROUTES + "app", {"service": "app", "servers": [server]})
            running.runtime.wait_frontend({**front, "maxconn": 0}, timeout=15)
            yield Swarm(running, replicas)
    finally:
        for r in replicas.values():
            r.close()


def test_a_release_of_three_replicas_has_a_slot_at_each_address_and_each_serves(
    swarm: Swarm,
) -> None:
    swarm.proxy.runtime.wait_up("app", "app-r3", timeout=15, addrs=IPS)
    mine = swarm.proxy.runtime.release_slots("app", "app-r3")
    assert sorted(s.addr for s in mine) == list(IPS), "one slot per replica, none shared"
    assert {(s.fqdn, s.weight) for s in mine} == {(TASKS, 256)}
    answers = Counter(swarm.proxy.answer(8000) for _ in range(60))
    assert set(answers) == {(200, "r3", ip) for ip in IPS}, answers
    assert min(answers.values()) >= 15, f"round robin over the three: {answers}"


def test_an_address_dropped_from_dns_leaves_the_pool_within_a_second_and_a_half(
    swarm: Swarm,
) -> None:
    swarm.proxy.runtime.wait_up("app", "app-r3", timeout=15, addrs=IPS)
    swarm.proxy.dns.set(TASKS, [IPS[0], IPS[2]])
    dropped = time.monotonic()
    wait_for(lambda: IPS[1] not in swarm.up(), f"{IPS[1]}'s slot out of the pool", timeout=5)
    took = time.monotonic() - dropped
    answers = Counter(swarm.proxy.answer(8000)[2] for _ in range(30))
    swarm.proxy.dns.set(TASKS, list(IPS))
    assert set(answers) == {IPS[0], IPS[2]}, answers
    assert took < 1.5, f"{IPS[1]} left the pool {took:.2f} s after it left DNS"
    print(f"\nan address dropped from DNS left the pool in {took:.2f} s")
    swarm.proxy.runtime.wait_up("app", "app-r3", timeout=15, addrs=IPS)  # back in DNS: back


def test_a_drained_address_takes_no_new_request_until_its_document_is_deleted(
    swarm: Swarm,
) -> None:
    swarm.proxy.runtime.wait_up("app", "app-r3", timeout=15, addrs=IPS)
    key = "/cdlab/drained/node-2"
    swarm.proxy.etcd.put(key, {"addrs": [IPS[1]], "why": "a node's maintenance"})
    assert swarm.proxy.runtime.wait_addrs_drained((IPS[1],), timeout=10).left == 0
    drained = Counter(swarm.proxy.answer(8000)[2] for _ in range(30))
    swarm.proxy.etcd.delete(key)
    wait_for(lambda: swarm.ready() == set(IPS), f"{IPS[1]} taking requests again", timeout=10)
    back = Counter(swarm.proxy.answer(8000)[2] for _ in range(30))
    assert set(drained) == {IPS[0], IPS[2]}, drained
    assert set(back) == set(IPS), back


@pytest.mark.parametrize(
    ("method", "headers", "safe"),
    [
        ("GET", {}, True),
        ("PUT", {}, True),
        ("POST", {"Idempotency-Key": "8e0f6c1a"}, True),
        ("POST", {}, False),
        ("PATCH", {}, False),
    ],
)
def test_a_request_a_replica_took_but_does_not_answer_is_asked_again_when_safe(
    swarm: Swarm, method: str, headers: dict[str, str], safe: bool
) -> None:
    """A replica that took requests and answers them late (2 s here; a node that died answers
    never). The proxy waits the frontend's try_timeout (1 s here), then asks another replica a
    request safe to send twice; any other waits for its answer (``timeout server``, 30 s):
    cutting it short would only turn a slow answer into an error."""
    swarm.proxy.runtime.wait_up("app", "app-r3", timeout=15, addrs=IPS)
    stalled = swarm.replicas[IPS[1]]
    stalled.stall("/stall", answer_after=2.0)
    outcomes: Counter[tuple[int, str]] = Counter()
    waits = []
    try:
        for _ in range(6):  # round robin over three: two of them go to the stalled one
            sent = time.monotonic()
            status, _, body = swarm.proxy.answer(8000, headers, "/stall", method)
            waits.append(time.monotonic() - sent)
            outcomes[(status, body if status == 200 else "")] += 1
    finally:
        stalled.stall("")
    slow = sorted(w for w in waits if w > 0.9)
    print(f"\n{method} {headers}: {dict(outcomes)}; waits {[round(w, 2) for w in waits]}")
    assert slow, f"none went to the slow replica: {waits}"
    if safe:
        assert max(waits) < 1.9, f"one try of 1 s, then another replica: {waits}"
        assert set(outcomes) <= {(200, IPS[0]), (200, IPS[2])}, outcomes
    else:  # answered late by the slow one, never asked twice
        assert all(w >= 1.9 for w in slow), waits
        assert outcomes[(200, IPS[1])] == len(slow), outcomes


def test_a_blackholed_replica_is_down_within_seconds_under_load_and_no_request_fails(
    swarm: Swarm,
) -> None:
    """A node gone: its replica's address still in DNS (Swarm keeps it there for seconds),
    every SYN to it dropped. A request sent there fails to connect in 500 ms and is sent to
    another replica; the checks take the slot out."""
    swarm.proxy.runtime.wait_up("app", "app-r3", timeout=15, addrs=IPS)
    dead = IPS[2]
    load = Paced(swarm.proxy, 8000, rate=100)
    try:
        wait_for(lambda: load.by(dead) >= 20, "the load reaching every replica", timeout=10)
        answered = swarm.replicas[dead].freeze()
        frozen = time.monotonic()
        wait_for(lambda: dead not in swarm.up(), f"{dead}'s slot DOWN", timeout=10)
        took = time.monotonic() - frozen
        after = load.count()
        wait_for(lambda: load.count() >= after + 100, "100 requests more", timeout=10)
        slot = next(s for s in swarm.proxy.runtime.release_slots("app", "app-r3") if s.addr == dead)
    finally:
        results = load.end()
    failed = {k: n for k, n in results.items() if not k.startswith("200 r3 ")}
    total = sum(results.values())
    print(
        f"\nblackholed replica DOWN {took:.2f} s after its SYNs were dropped; {total} requests "
        f"at ~100/s, {sum(failed.values())} failed; {answered} answered while it froze; {results}"
    )
    assert failed == {}, f"requests failed: {failed} (of {total})"
    assert (slot.operational, slot.in_maintenance) == (0, False), "DOWN by its checks"
    # dropped, not refused: a check's connection times out (a refused one is L4CON)
    wait_for(lambda: swarm.check_status(slot.name) == "L4TOUT", "a check timed out", timeout=5)
    # by its checks alone: a failed check, then two more at ``fastinter``, each waiting
    # ``timeout connect`` (500 ms): 2-3 s
    assert took < 4.0, f"DOWN only {took:.2f} s after the replica stopped answering SYNs"
