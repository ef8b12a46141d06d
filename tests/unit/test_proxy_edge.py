"""The edge figures: HAProxy's request lines read and classed, counted per release per second,
named for carbon; the slot map kept in step; the lines sent to carbon and the log store.

The ``show stat``/``show map`` answers and most request lines are HAProxy 2.6.12's own, captured
from a local HAProxy with the proxy's ``LOG_FORMAT`` in front of a server that misbehaves on
purpose (closes, resets, stalls, answers garbage); the others (marked "docs") are written from
configuration.txt 8.5."""

from __future__ import annotations

import re
import select
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cdlab_proxy import document, edge, metrics, runtime, slots

from tests.integration.fakes import FakeCarbon

STAT_CSV = (Path(__file__).with_name("data") / "haproxy-show-stat.csv").read_text()


def wait_for(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    __tracebackhide__ = True
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout}s for {what}")
        time.sleep(0.01)


# -- one request line --------------------------------------------------------------------------


def test_parse_reads_every_field_of_a_request_line() -> None:
    got = edge.parse("cdlab-edge app good 200 2 -- +1 GET /api/users?page=2 x\n")
    assert got == edge.Request(
        "app", "good", 200, 2, "--", 1, "GET", "/api/users?page=2 x", redispatched=True
    )
    plain = edge.parse("cdlab-edge app aaa 502 12 SH 3 GET /close")
    assert plain is not None and (plain.retries, plain.redispatched) == (3, False)


@pytest.mark.parametrize(
    ("line", "release", "status", "ms", "path"),
    [
        ("cdlab-edge app - 503 0 SC 0 GET /nosrv", edge.NO_RELEASE, 503, 0, "/nosrv"),
        ("cdlab-edge app - 400 300 CR 0 <BADREQ> <BADREQ>", "-", 400, 300, "<BADREQ>"),
        ("cdlab-edge app - -1 301 CD 0 POST /upload", "-", -1, 301, "/upload"),
        ("cdlab-edge app aaa 200 -1 -- 0 GET", "aaa", 200, 0, ""),  # no path; no time: 0
    ],
)
def test_parse_takes_haproxys_placeholders(
    line: str, release: str, status: int, ms: int, path: str
) -> None:
    got = edge.parse(line)
    assert got is not None
    assert (got.release, got.status, got.ms, got.path) == (release, status, ms, path)


NOT_REQUESTS = [
    "",
    "[NOTICE]   (7915) : haproxy version is 2.6.12-1+deb12u4",
    "other-mark app aaa 200 1 -- 0 GET /",
    "cdlab-edge app aaa 200 1 -- 0",  # cut before the method
    "cdlab-edge app aaa 200 1 -- 0 ",  # the same, a space after it
    "cdlab-edge app aaa OK 1 -- 0 GET /",
    "cdlab-edge app aaa 200 fast -- 0 GET /",
    "cdlab-edge app aaa 200 1 -- many GET /",
]


@pytest.mark.parametrize("line", NOT_REQUESTS)
def test_parse_ignores_anything_but_a_whole_request_line(line: str) -> None:
    assert edge.parse(line) is None


# Lines as HAProxy 2.6 logged them (or as 8.5 describes them: "docs"), and why each is in its
# class.
KINDS = [
    ("aaa 200 1 -- 0 GET /ok", "2xx"),
    ("aaa 500 0 -- 0 GET /500", "5xx"),
    ("aaa 502 0 -- 0 GET /502", "5xx"),  # the release's own 502: its answer, not the proxy's
    ("aaa 101 3 -- 0 GET /ws", "2xx"),  # docs
    ("good 200 2 -- +1 GET /ok", "2xx"),  # refused by one release, answered by another
    ("aaa 502 12 SH 3 GET /close", "proxy"),  # closed before its headers, retried 3 times
    ("aaa 502 8 SH 3 GET /reset", "proxy"),  # reset before its headers
    ("aaa 504 1001 sH 0 GET /slow", "proxy"),  # timeout server before its headers
    ("aaa 200 203 SD 0 GET /cut", "proxy"),  # headers, then a reset: the answer cut short
    ("aaa 200 1012 sD 0 GET /stall", "proxy"),  # headers, then timeout server mid-body
    ("aaa 502 12 PH 0 GET /garbage", "proxy"),  # an invalid header: the proxy blocked it
    ("aaa 200 40 PD 0 GET /badchunk", "proxy"),  # docs: a bad chunk after the headers
    ("- 503 0 SC 0 GET /", "proxy"),  # no server up (HAProxy's <NOSRV>)
    ("aaa 503 0 SC 3 GET /", "proxy"),  # docs: connection refused, retries spent
    ("aaa 503 1205 sC 3 GET /", "proxy"),  # timeout connect
    ("aaa 503 501 sQ 0 GET /", "proxy"),  # queued past timeout queue (maxconn)
    ("aaa 503 0 RC 0 GET /", "proxy"),  # docs: the proxy out of sockets
    ("- -1 301 CD 0 POST /upload", "aborted"),  # the client left mid-upload, no answer
    ("- -1 2000 CH 0 GET /", "aborted"),  # docs: the client left before the headers came
    ("- -1 30000 cD 0 POST /upload", "aborted"),  # docs: timeout client mid-upload
    ("aaa 200 301 CD 0 POST /ok", "2xx"),  # answered; the client left while it came
    ("- 400 300 CR 0 <BADREQ> <BADREQ>", "4xx"),  # the client never finished its request
    ("- 408 1001 cR 0 <BADREQ> <BADREQ>", "4xx"),  # timeout http-request
    ("- 403 0 PR 0 GET /deny", "4xx"),  # denied by a rule: the proxy's policy, no release
    ("- 400 0 PR 0 GET /bad", "4xx"),  # docs: malformed, the client's doing
    ("- 200 0 LR 0 GET /stats", "2xx"),  # answered by the proxy itself
    ("- 302 0 LR 0 GET /redir", "3xx"),
    ("- 503 0 LR 0 GET /ret503", "5xx"),  # an 'http-request return' of the config's own
    ("aaa -1 5 SD 0 GET /", "proxy"),  # docs: no status, not the client's doing
    ("aaa 600 1 -- 0 GET /", "proxy"),  # docs: no HTTP status class
]


@pytest.mark.parametrize(("fields", "kind"), KINDS)
def test_kind_follows_the_termination_state(fields: str, kind: str) -> None:
    req = edge.parse(f"cdlab-edge app {fields}")
    assert req is not None and req.kind == kind


# request lines the fast path leaves to ``parse``, or reads as it would
ODD = [
    "  cdlab-edge app aaa 200 1 -- 0 GET /lead",  # spaces before: stripped, counted
    "cdlab-edge app aaa 200 1 -- 0 GET /trail \r",  # and after
    "cdlab-edge app  200 1 -- 0 GET /no-release",  # an empty release: none
    "cdlab-edge app aaa 200 -5 -- 0 GET /negative",  # no time: 0
    "cdlab-edge app aaa 200 3 -- +2 GET /redispatched",
    "cdlab-edge app aaa 200 3 -- 0 GET /a path with spaces",
]


def test_many_lines_count_as_each_parsed_and_added() -> None:
    """``add_lines``, the supervisor's hot path, counts what ``parse`` and ``add`` count (each
    line twice: the second time from what it remembers of the first)."""
    lines = [f"cdlab-edge app {fields}" for fields, _ in KINDS] + ODD + NOT_REQUESTS
    fast, slow = edge.Window(), edge.Window()
    skipped = fast.add_lines(lines * 2, 100.5)
    for line in lines * 2:
        r = edge.parse(line)
        if r is not None:
            slow.add(r, 100.5)
    assert skipped == NOT_REQUESTS * 2
    assert fast.seconds == slow.seconds
    assert fast.flush(200.0) == slow.flush(200.0)


# -- a second's figures --------------------------------------------------------------------------


def brute_percentile(values: list[int], p: int) -> int:
    """Nearest rank by its definition: the smallest value with at least p% of them at or
    below it."""
    return min(v for v in values if sum(x <= v for x in values) * 100 >= p * len(values))


def test_percentile_is_the_nearest_rank() -> None:
    for n in range(1, 130):
        values = sorted((i * 7919) % 997 for i in range(n))  # repeats and gaps
        for p in range(0, 101):
            assert edge.percentile(values, p) == brute_percentile(values, p), (n, p)


def req(release: str = "aaa", status: int = 200, ms: int = 10, **kw: object) -> edge.Request:
    fields: dict = {"termination": "--", "retries": 0, "method": "GET", "path": "/"} | kw
    return edge.Request("app", release, status, ms, **fields)


def test_a_second_counts_classes_latency_and_retries() -> None:
    s = edge.Second()
    for r in [
        req(ms=10),
        req(ms=30, retries=2),
        req(status=503, ms=2000, termination="sC", retries=3),
        req(status=-1, ms=9000, termination="CH"),  # the client's wait is no release's latency
        req(ms=5, retries=1, redispatched=True),  # its retry was spent on another release
    ]:
        s.add(r)
    assert s.counts == {"2xx": 3, "3xx": 0, "4xx": 0, "5xx": 0, "proxy": 1, "aborted": 1}
    assert sorted(s.ms) == [5, 10, 30, 2000]
    assert s.retries == 5


def test_lines_follow_the_naming_scheme() -> None:
    s = edge.Second(redispatched=2)
    for ms in (20, 10, 40, 30):
        s.add(req("3f9c2e1a0b1c", ms=ms, retries=1))
    base = "edge.app.3f9c2e1a0b1c"
    assert edge.lines(1700000000, "app", "3f9c2e1a0b1c", s) == [
        f"{base}.requests.2xx 4 1700000000",
        f"{base}.requests.3xx 0 1700000000",
        f"{base}.requests.4xx 0 1700000000",
        f"{base}.requests.5xx 0 1700000000",
        f"{base}.requests.proxy 0 1700000000",
        f"{base}.requests.aborted 0 1700000000",
        f"{base}.latency.p50 20 1700000000",
        f"{base}.latency.p95 40 1700000000",
        f"{base}.latency.p99 40 1700000000",
        f"{base}.latency.max 40 1700000000",
        f"{base}.retries 4 1700000000",
        f"{base}.redispatched 2 1700000000",
    ]
    only_redispatched = edge.lines(5, "app", "-", edge.Second(redispatched=1))
    assert not [line for line in only_redispatched if ".latency." in line]  # no requests: no times
    carbon = re.compile(r"^edge\.[\w-]+\.[\w-]+\.[a-z0-9.]+ -?\d+ \d+$")
    assert all(carbon.match(line) for line in only_redispatched)


def flushed(lines: list[str]) -> dict[tuple[int, str], int]:
    """{(second, release): 2xx requests} of a flush."""
    out = {}
    for line in lines:
        name, value, second = line.split()
        if name.endswith(".requests.2xx"):
            out[(int(second), name.split(".")[2])] = int(value)
    return out


def test_window_flushes_each_second_once_after_its_grace() -> None:
    w = edge.Window()
    w.add(req("aaa"), 100.2)
    w.add(req("aaa"), 100.9)
    w.add(req("bbb"), 101.5)
    w.add(req("aaa"), 100.95)  # out of order within the window
    assert w.flush(100.99, grace=1.0) == []  # second 100 ended at 101: grace runs until 102
    assert w.flush(101.99, grace=1.0) == []
    assert flushed(w.flush(102.0, grace=1.0)) == {(100, "aaa"): 3}
    assert w.flush(102.5, grace=1.0) == []  # flushed once
    assert flushed(w.flush(103.0, grace=1.0)) == {(101, "bbb"): 1}
    assert w.flush(200.0) == []


def test_the_default_grace_sends_a_second_soon_after_it_ended() -> None:
    """The judge reads a second 1.6 s after it began (verify.SETTLE): its figures must be out."""
    w = edge.Window()
    w.add(req("aaa"), 100.5)
    assert w.flush(101.0 + edge.GRACE - 0.01) == []
    assert flushed(w.flush(101.0 + edge.GRACE)) == {(100, "aaa"): 1}
    assert w.flush(200.0) == []


def test_window_flushes_seconds_in_order() -> None:
    w = edge.Window()
    for now, release in [(12.5, "bbb"), (10.5, "aaa"), (11.5, "aaa"), (10.1, "bbb")]:
        w.add(req(release), now)
    got = w.flush(20.0)
    seconds = [int(line.split()[2]) for line in got]
    assert seconds == sorted(seconds)
    assert flushed(got) == {(10, "aaa"): 1, (10, "bbb"): 1, (11, "aaa"): 1, (12, "bbb"): 1}


def test_a_request_late_for_a_flushed_second_counts_in_the_first_open_one() -> None:
    """Carbon keeps the last point of a second: flushing one again would replace its figures."""
    w = edge.Window()
    for _ in range(5):
        w.add(req(), 100.5)
    assert flushed(w.flush(102.0)) == {(100, "aaa"): 5}
    w.add(req(), 100.7)  # a line read late (or the clock stepped back)
    w.add_redispatched({("app", "aaa"): 2}, 100.8)
    got = w.flush(103.0)
    assert flushed(got) == {(101, "aaa"): 1}
    assert "edge.app.aaa.redispatched 2 101" in got


def test_redispatches_are_counted_in_their_second_for_their_release() -> None:
    w = edge.Window()
    w.add_redispatched({("app", "aaa"): 3, ("app", "bbb"): 0}, 50.5)
    got = w.flush(60.0)
    assert "edge.app.aaa.redispatched 3 50" in got
    assert "edge.app.aaa.requests.2xx 0 50" in got
    assert not [line for line in got if ".bbb." in line]  # none: no point at all


# -- HAProxy's counters --------------------------------------------------------------------------


def test_stat_counters_read_wredis_per_slot_from_haproxys_show_stat() -> None:
    """The capture: app/r1 refused every connection, each request was redispatched to r2."""
    assert edge.stat_counters(STAT_CSV) == {
        ("app", "r1"): 5,
        ("app", "r2"): 0,
        ("app", "r3"): 0,
        ("app-match", "r1"): 0,
        ("app-match", "r2"): 0,
    }


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Unknown command. Please enter one of the following commands only :\n",
        "# pxname,svname,scur\napp,r1,3\n",  # no wredis column
        "app,r1,0,0\n",  # no header
    ],
)
def test_stat_counters_of_anything_else_are_empty(text: str) -> None:
    assert edge.stat_counters(text) == {}


def test_stat_counters_skip_cut_and_bad_rows() -> None:
    text = "# pxname,svname,wredis\napp,r1,4\napp,r2,\napp,r3,x\napp\n\n"
    assert edge.stat_counters(text) == {("app", "r1"): 4, ("app", "r2"): 0}


SLOTMAP = {("app", "r1"): "aaa", ("app", "r2"): "bbb", ("app-match", "r1"): "bbb"}


@pytest.mark.parametrize(
    ("before", "now", "deltas"),
    [
        ({}, {}, {}),
        ({("app", "r1"): 2}, {("app", "r1"): 2}, {}),  # none since: no entry
        ({("app", "r1"): 2}, {("app", "r1"): 5}, {"aaa": 3}),
        ({}, {("app", "r1"): 4}, {"aaa": 4}),  # a slot first seen: from zero
        ({("app", "r1"): 9}, {("app", "r1"): 2}, {"aaa": 2}),  # a new process: from zero
        ({("app", "r2"): 1}, {("app", "r2"): 2, ("app-match", "r1"): 3}, {"bbb": 4}),
        ({}, {("app", "r4"): 7, ("other", "r1"): 1}, {}),  # slots serving no release
    ],
)
def test_stat_deltas_count_redispatches_by_release(
    before: dict[tuple[str, str], int], now: dict[tuple[str, str], int], deltas: dict[str, int]
) -> None:
    assert edge.stat_deltas(before, now, SLOTMAP) == deltas


def test_release_keys_name_the_slots_serving_a_routed_host_in_their_own_backend() -> None:
    hosts = {"app": {"app-aaa": "aaa", "app-bbb": "bbb"}, "app-match": {"app-bbb": "bbb"}}
    found = [
        ("app", "r1", "app-aaa"),
        ("app", "r2", "app-bbb"),
        ("app", "r3", ""),  # never assigned
        ("app", "r4", "app-old"),  # a release no longer routed
        ("app-match", "r1", "app-bbb"),
        ("app-match", "r2", "app-aaa"),  # routed in the pool, not here
        ("other", "r1", "app-aaa"),
    ]
    assert edge.release_keys(found, hosts) == {
        "app/r1": "aaa",
        "app/r2": "bbb",
        "app-match/r1": "bbb",
    }


# -- the slot map kept in step -------------------------------------------------------------------

MAP = "/run/x/app.releases"
# HAProxy 2.6's answer to "show map" of a slot map
SHOW_MAP = "0x55d87fe250b0 app/r1 aaa\n0x55d87fe25100 app/r2 -\n0x55d87fe25150 app-match/r1 -\n\n"


def test_parse_release_map_reads_haproxys_show_map() -> None:
    assert runtime.parse_release_map(SHOW_MAP) == {
        "app/r1": "aaa",
        "app/r2": "-",
        "app-match/r1": "-",
    }
    assert runtime.parse_release_map("\n") == {}


def slot(name: str, fqdn: str = "", weight: int = 1, admin: int = 0x05) -> slots.Slot:
    return slots.Slot(name, fqdn, weight, admin, 0)


def assert_named_before_ready(cmds: list[str], hosts: dict[str, dict[str, str]]) -> None:
    """Each slot given a name has its map entry next, before it may serve."""
    __tracebackhide__ = True
    for i, cmd in enumerate(cmds):
        m = re.fullmatch(r"set server (\S+) fqdn (\S+)", cmd)
        if not m:
            continue
        key, host = m.groups()
        assert cmds[i + 1] == f"set map {MAP} {key} {hosts[key.split('/')[0]][host]}", cmds
        ready = [j for j, c in enumerate(cmds) if c == f"set server {key} state ready"]
        assert all(j > i + 1 for j in ready), cmds


def test_a_slot_given_a_release_names_it_before_it_serves() -> None:
    D = document.Server
    found = {
        "app": [slot("r1", "app-aaa", 100, 0x40), slot("r2"), slot("r3")],
        "app-match": [slot("r1"), slot("r2")],
    }
    desired = {
        "app": [D("aaa", "app-aaa", 100), D("bbb", "app-bbb", 0)],
        "app-match": [D("bbb", "app-bbb", 100)],
    }
    hosts = {b: {d.host: d.release for d in ds} for b, ds in desired.items()}
    pool = [c for b in desired for c in slots.plan(b, found[b], desired[b])]
    present = {"app/r1": "aaa", "app/r2": "-", "app/r3": "-", "app-match/r1": "-"}
    got = runtime.with_releases(MAP, found, present, hosts, pool)
    assert_named_before_ready(got, hosts)
    assert [c for c in got if c.startswith("set map")] == [
        f"set map {MAP} app/r2 bbb",
        f"set map {MAP} app-match/r1 bbb",
    ]
    assert [c for c in got if not c.startswith("set map")] == pool  # in their order


def test_stale_entries_are_put_right_first() -> None:
    """A process started from another's state, or a map changed by hand."""
    found = {"app": [slot("r1", "app-aaa", 100, 0x40), slot("r2", "app-bbb", 0, 0x48)]}
    hosts = {"app": {"app-aaa": "aaa", "app-bbb": "bbb"}}
    pool = ["set server app/r1 weight 50"]
    present = {"app/r1": "old", "app/r2": "bbb"}
    assert runtime.with_releases(MAP, found, present, hosts, pool) == [
        f"set map {MAP} app/r1 aaa",
        "set server app/r1 weight 50",
    ]
    assert runtime.with_releases(MAP, found, {"app/r1": "aaa", "app/r2": "bbb"}, hosts, []) == []


def test_each_backend_names_a_host_by_its_own_release() -> None:
    """The same host in the pool and in the -match backend: each slot is named from the hosts
    of its own backend (never from the other's)."""
    hosts = {"app": {"app-x": "x-pool"}, "app-match": {"app-x": "x-match"}}
    found = {"app": [slot("r1", "app-x", 0, 0x40)], "app-match": [slot("r1", "app-x", 100, 0x40)]}
    pool = ["set server app-match/r2 fqdn app-x", "set server app/r2 fqdn app-x"]
    got = runtime.with_releases(MAP, found, {}, hosts, pool)
    assert got == [
        f"set map {MAP} app/r1 x-pool",
        f"set map {MAP} app-match/r1 x-match",
        "set server app-match/r2 fqdn app-x",
        f"set map {MAP} app-match/r2 x-match",
        "set server app/r2 fqdn app-x",
        f"set map {MAP} app/r2 x-pool",
    ]


def test_a_slot_named_for_no_routed_release_gets_no_entry() -> None:
    pool = ["set server app/r1 fqdn app-zzz", "set server app/r1 state ready"]
    assert runtime.with_releases(MAP, {}, {}, {"app": {"app-aaa": "aaa"}}, pool) == pool


# -- out: the log store and carbon ---------------------------------------------------------------


@pytest.fixture
def carbon() -> Iterator[FakeCarbon]:
    c = FakeCarbon(away=True)
    yield c
    c.drop()
    c.close()


def points(lines: list[str]) -> list[tuple[str, float, int]]:
    """Carbon lines as ``FakeCarbon`` keeps them."""
    return [(p, float(v), int(t)) for p, v, t in (line.split() for line in lines)]


class FakeProcess:
    """What ``EdgeMetrics`` asks of a service's HAProxy: ``show stat`` and the slot map."""

    def __init__(self, pid: int, wredis: dict[str, int]) -> None:
        self.pid, self.wredis = pid, wredis

    def send(self, command: str, timeout: float = 5.0) -> str:
        if command == "show stat":
            rows = "".join(f"app,{s},{n}\n" for s, n in self.wredis.items())
            return "# pxname,svname,wredis\napp,FRONTEND,\n" + rows + "app,BACKEND,0\n\n"
        if command == "show map /run/app.releases":
            return "0x1 app/r1 aaa\n0x2 app/r2 bbb\n0x3 app/r3 -\n\n"
        raise AssertionError(command)


def edge_metrics(carbon: str, procs: dict[str, FakeProcess] | None = None) -> metrics.EdgeMetrics:
    said: list[str] = []
    return metrics.EdgeMetrics(
        "/unused.sock", carbon, "", lambda: procs or {}, lambda s: f"/run/{s}.releases", said.append
    )


def traffic(m: metrics.EdgeMetrics, seconds: range) -> list[str]:
    """Two requests a second into ``m``; the carbon lines they make, in order."""
    ref = edge.Window()
    for t in seconds:
        for w in (m.window, ref):
            w.add(req("aaa", ms=t % 7), t + 0.5)
            w.add(req("bbb", 503, termination="SH"), t + 0.5)
    return ref.flush(seconds.stop + 2)


def test_lines_wait_for_carbon_and_go_in_order_once_it_is_back(carbon: FakeCarbon) -> None:
    m = edge_metrics(carbon.address)
    first = traffic(m, range(100, 103))
    m.flush(104.0)  # 100, 101, 102 done; carbon refuses
    assert m.status()["carbon_lines_pending"] == len(first) and carbon.lines == []
    second = traffic(m, range(103, 105))
    carbon.back()
    m.flush(106.0)
    wait_for(lambda: len(carbon.lines) == len(first + second), "carbon to get every line")
    assert carbon.lines == points(first + second)
    assert m.status()["carbon_lines_pending"] == 0
    assert m.status()["carbon_lines_sent"] == len(first + second)


def test_lines_sent_after_carbon_restarted_are_not_lost(carbon: FakeCarbon) -> None:
    m = edge_metrics(carbon.address)
    carbon.back()
    first = traffic(m, range(100, 101))
    m.flush(102.0)
    wait_for(lambda: carbon.lines == points(first), "the first second")
    carbon.drop()  # carbon restarted: its end of the connection is gone
    assert m._conn is not None and select.select([m._conn], [], [], 5)[0], "carbon's FIN"
    second = traffic(m, range(101, 102))
    m.flush(103.0)
    m.flush(103.5)  # nothing new: only what is still kept
    wait_for(lambda: len(carbon.lines) >= len(first + second), "the second second", 2.0)
    assert carbon.lines == points(first + second)


def test_lines_kept_are_bounded_by_the_backlog_newest_kept(
    carbon: FakeCarbon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "BACKLOG", 30)
    m = edge_metrics(carbon.address)
    made = traffic(m, range(100, 110))
    m.flush(111.0)
    assert m.status()["carbon_lines_pending"] == 30
    carbon.back()
    m.flush(112.0)
    wait_for(lambda: len(carbon.lines) == 30, "the kept lines")
    assert carbon.lines == points(made[-30:])


def test_nothing_is_kept_when_figures_go_nowhere() -> None:
    m = edge_metrics("")
    traffic(m, range(100, 103))
    m.flush(104.0)
    assert m.status()["carbon_lines_pending"] == 0 and m.status()["carbon_lines_sent"] == 0


def test_redispatches_are_read_from_each_process_and_counted_from_its_start(
    carbon: FakeCarbon,
) -> None:
    """Every HAProxy is started by the supervisor after the figures: its counters count
    from its start, a new process (a new pid) from zero."""
    procs = {"app": FakeProcess(100, {"r1": 2, "r2": 0, "r3": 5})}
    m = edge_metrics(carbon.address, procs)
    carbon.back()
    for now in (10.5, 11.5):
        m.flush(now)
    procs["app"].wredis["r1"] = 3
    m.flush(12.5)
    procs["app"] = FakeProcess(101, {"r1": 1, "r2": 4})  # replaced: counters from zero
    m.flush(13.5)
    for now in (14.5, 15.5, 16.5):
        m.flush(now)
    wait_for(lambda: len(carbon.lines) == m.status()["carbon_lines_sent"], "carbon to get all")
    got = {
        (t, path.split(".")[2]): v for path, v, t in carbon.lines if path.endswith(".redispatched")
    }
    assert got == {(10, "aaa"): 2, (12, "aaa"): 1, (13, "aaa"): 1, (13, "bbb"): 4}


class FakeRing:
    """A ring's connection as ``EdgeMetrics`` reads it: these chunks, one a ``recv``, then
    its end."""

    def __init__(self, *chunks: bytes | OSError) -> None:
        self.chunks = list(chunks)

    def recv(self, size: int) -> bytes:
        chunk = self.chunks.pop(0) if self.chunks else b""
        if isinstance(chunk, OSError):
            raise chunk
        assert size >= len(chunk)
        return chunk

    def __enter__(self) -> FakeRing:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.fixture
def log_store() -> Iterator[socket.socket]:
    """A UDP socket standing in for the log store."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        yield sock


def forwarding(store: socket.socket, monkeypatch: pytest.MonkeyPatch) -> metrics.EdgeMetrics:
    monkeypatch.setattr(metrics, "READ_EVERY", 0.0)
    address = f"127.0.0.1:{store.getsockname()[1]}"
    return metrics.EdgeMetrics("127.0.0.1:0", "", address, dict, str, print, host="prod")


def received(m: metrics.EdgeMetrics, store: socket.socket) -> bytes:
    """The datagram ``m`` sends the log store next (its batch sent now)."""
    m.forward.flush(m.store.get())
    return store.recv(65536)


def twoxx(m: metrics.EdgeMetrics) -> dict[str, int]:
    return {release: s.counts["2xx"] for (_, _, release), s in m.window.seconds.items()}


def test_lines_cut_across_reads_are_counted_and_forwarded_whole(
    log_store: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = forwarding(log_store, monkeypatch)
    m._receive(
        FakeRing(
            b"cdlab-edge app aaa 200 4 -- 0 GET /o",
            b"k\ncdlab-edge app bbb 200 2 -- 0 GET /x\ncdlab-edge app a",
            b"aa 200 1 -- 0 GET /n\n",
            b"cdlab-edge app bbb 200 1 -- 0 GET /last-without-its-newline",
        )
    )
    assert m.status()["requests"] == 4 and m.status()["unparsed"] == 0
    assert twoxx(m) == {"aaa": 2, "bbb": 2}
    assert received(m, log_store) == (
        b"cdlab-edge-batch prod\n"
        b"cdlab-edge app aaa 200 4 -- 0 GET /ok\n"
        b"cdlab-edge app bbb 200 2 -- 0 GET /x\n"
        b"cdlab-edge app aaa 200 1 -- 0 GET /n\n"
        b"cdlab-edge app bbb 200 1 -- 0 GET /last-without-its-newline\n"
    )


def test_a_bad_line_among_good_ones_is_neither_counted_nor_forwarded(
    log_store: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = forwarding(log_store, monkeypatch)
    m._receive(
        FakeRing(
            b"cdlab-edge app aaa 200 4 -- 0 GET /ok\n"
            b"[WARNING] (7915) : something else\n"
            b"cdlab-edge app aaa OK 4 -- 0 GET /bad-status\n"
            b"cdlab-edge app bbb 200 \xff\xfe -- 0 GET /bad-time\n"
            b"cdlab-edge app bbb 200 3 -- 0 GET /ok\n"
        )
    )
    assert m.status()["requests"] == 2 and m.status()["unparsed"] == 3
    assert twoxx(m) == {"aaa": 1, "bbb": 1}
    assert received(m, log_store) == (
        b"cdlab-edge-batch prod\n"
        b"cdlab-edge app aaa 200 4 -- 0 GET /ok\n"
        b"cdlab-edge app bbb 200 3 -- 0 GET /ok\n"
    )


def test_a_reset_connection_ends_after_the_lines_sent_before_it(
    log_store: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HAProxy resets its ring's connection as its process ends: what it sent is read first."""
    m = forwarding(log_store, monkeypatch)
    line = b"cdlab-edge app aaa 200 4 -- 0 GET /ok"
    m._receive(FakeRing(line + b"\n" + line[:10], ConnectionResetError(104, "reset by peer")))
    assert m.status()["requests"] == 1 and m.status()["unparsed"] == 1  # and the cut one
    assert received(m, log_store) == b"cdlab-edge-batch prod\n" + line + b"\n"


def test_a_line_longer_than_any_request_line_is_dropped_and_the_next_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics, "READ_EVERY", 0.0)
    m = metrics.EdgeMetrics("127.0.0.1:0", "", "", dict, str, print)
    endless = [b"x" * (metrics.MAX_LINE // 2)] * 3
    m._receive(FakeRing(*endless, b"\ncdlab-edge app aaa 200 4 -- 0 GET /ok\n"))
    assert m.status()["requests"] == 1 and m.status()["unparsed"] == 2  # its start, its end
    assert twoxx(m) == {"aaa": 1}


def batches(store: socket.socket, lines: list[bytes]) -> list[bytes]:
    """The datagrams that carried ``lines`` (each checked: a header, then whole lines)."""
    got: list[bytes] = []
    datagrams = []
    while len(got) < len(lines):
        datagram = store.recv(65536)
        header, _, body = datagram.partition(b"\n")
        assert header == b"cdlab-edge-batch prod" and body.endswith(b"\n")
        got += body.splitlines()
        datagrams.append(datagram)
    assert got == lines
    return datagrams


def test_request_lines_go_to_the_log_store_in_batches_of_whole_lines(
    log_store: socket.socket,
) -> None:
    """Thousands of lines a second: a datagram per batch (at most BATCH_BYTES, at least every
    BATCH_S), each line whole, the lines of one read or of many; nothing is sent while the
    store has no address."""
    to = log_store.getsockname()
    out = metrics._Forward("prod")
    try:
        lines = [f"line {i} ".encode() + b"x" * 300 for i in range(200)]
        for line in lines:
            out.send(line, to)
        out.flush(to)
        assert all(len(d) <= out.BATCH_BYTES for d in batches(log_store, lines))
        out.send(b"\n".join(lines), to)  # one read's lines
        out.flush(to)
        assert all(len(d) <= out.BATCH_BYTES for d in batches(log_store, lines))
        huge = b"y" * (out.BATCH_BYTES + 10)  # not HAProxy's (1 KiB at most): alone
        out.send(b"\n".join([lines[0], huge, lines[1]]), to)
        out.flush(to)
        assert [len(d) for d in batches(log_store, [lines[0], huge, lines[1]])] == [
            len(b"cdlab-edge-batch prod\n" + line + b"\n") for line in (lines[0], huge, lines[1])
        ]
        out.send(b"lost", to)
        out.flush(None)  # no address: the batch goes nowhere, and is not kept
        assert out.batch == b""
    finally:
        out.sock.close()
