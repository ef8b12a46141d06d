"""The proxy's request lines in the log store (cdlab_logs.proxy, Store.add_proxy_lines, the
receiver): a batch as the supervisor sends it is filed exactly as the same lines sent one
syslog message each (the format it replaced, still read), by service and release."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from cdlab_logs import proxy
from cdlab_logs.config import Limits, Settings
from cdlab_logs.serve import Receiver
from cdlab_logs.store import Store, files
from cdlab_proxy import metrics

T = 1796098683.123456


def batch(*lines: bytes, host: bytes = b"prod") -> bytes:
    return b"cdlab-edge-batch " + host + b"\n" + b"".join(line + b"\n" for line in lines)


def stored(root: Path) -> dict[str, bytes]:
    """Every file of the store under ``root``: its path from there, what it holds."""
    return {str(k.path.relative_to(root)): k.path.read_bytes() for k in files(root)}


def test_the_supervisor_and_the_store_agree_on_the_header() -> None:
    assert metrics.BATCH_HEADER == proxy.HEADER


def test_a_batch_reads_as_its_host_and_its_lines_by_release_in_order() -> None:
    got = proxy.parse(
        batch(
            b"cdlab-edge app aaa 200 1 -- 0 GET /1",
            b"cdlab-edge quotes - 503 0 SC 3 GET /2",
            b"",
            b"cdlab-edge app bbb 200 1 -- 0 GET /3",
            b"  cdlab-edge app aaa 200 1 -- 0 GET /4 ",  # spaces around: still app's aaa
            b"cdlab-edge app  200 1 -- 0 GET /5",  # no release: "-", as the proxy counts it
            b"[WARNING] not a request line",
            b"cdlab-edge app",
        )
    )
    assert got.host == "prod"
    assert got.lines == {
        ("app", "aaa"): [
            b"cdlab-edge app aaa 200 1 -- 0 GET /1",
            b"  cdlab-edge app aaa 200 1 -- 0 GET /4 ",
        ],
        ("quotes", "-"): [b"cdlab-edge quotes - 503 0 SC 3 GET /2"],
        ("app", "bbb"): [b"cdlab-edge app bbb 200 1 -- 0 GET /3"],
        ("app", "-"): [b"cdlab-edge app  200 1 -- 0 GET /5"],
    }
    assert got.places == {
        ("app", "aaa"): [0, 4],
        ("quotes", "-"): [1],
        ("app", "bbb"): [3],
        ("app", "-"): [5],
    }
    assert got.others == [b"[WARNING] not a request line", b"cdlab-edge app"]
    assert got.size == 9  # the empty place after the last newline too
    assert proxy.parse(b"cdlab-edge-batch \ncdlab-edge app aaa 200 1 -- 0 GET /").host == ""


def test_names_that_read_the_same_are_one_release_in_the_order_they_came() -> None:
    got = proxy.parse(
        batch(
            b"cdlab-edge app \xff 200 1 -- 0 GET /1",
            b"cdlab-edge app \xfe 2",
            b"cdlab-edge app \xff 3",
        )
    )
    assert got.lines == {
        ("app", "\ufffd"): [
            b"cdlab-edge app \xff 200 1 -- 0 GET /1",
            b"cdlab-edge app \xfe 2",
            b"cdlab-edge app \xff 3",
        ]
    }
    assert got.places == {("app", "\ufffd"): [0, 1, 2]}


def test_the_supervisor_s_datagrams_read_back_as_the_lines_it_was_given() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as store:
        store.bind(("127.0.0.1", 0))
        store.settimeout(5)
        out = metrics._Forward("prod")
        lines = [f"cdlab-edge app r{i % 3} 200 {i} -- 0 GET /{i}".encode() for i in range(900)]
        out.send(b"\n".join(lines), store.getsockname())
        out.flush(store.getsockname())
        out.sock.close()
        got: dict[tuple[str, str], list[bytes]] = {}
        while sum(map(len, got.values())) < len(lines):
            received = proxy.parse(store.recv(65536))
            assert received.host == "prod" and received.others == []
            for key, found in received.lines.items():
                got.setdefault(key, []).extend(found)
    assert got == {(s, r): [x for x in lines if x.split()[2].decode() == r] for s, r in got}
    assert sorted(got) == [("app", "r0"), ("app", "r1"), ("app", "r2")]


# lines whose JSON needs escapes, or whose bytes are not all UTF-8: each as json.dumps does
LINES = [
    b"cdlab-edge app aaa 200 1 -- 0 GET /plain?a=1&b=[2]#x~",
    b'cdlab-edge app aaa 200 1 -- 0 GET /"quoted"',
    b"cdlab-edge app aaa 200 1 -- 0 GET /back\\slash",
    b"cdlab-edge app aaa 200 1 -- 0 GET /tab\there\r",
    b"cdlab-edge app aaa 200 1 -- 0 GET /\xc3\xa9t\xc3\xa9",
    b"cdlab-edge app aaa 200 1 -- 0 GET /\xff\xfe-not-utf-8",
    b"cdlab-edge app aaa 200 1 -- 0 GET /del\x7f",
]


@pytest.mark.parametrize("line", LINES)
def test_a_request_line_is_stored_as_the_same_line_tagged_service_release_proxy(
    tmp_path: Path, line: bytes
) -> None:
    one = Store(tmp_path / "one", clock=lambda: T)
    one.add("app/aaa/proxy", "prod", line.decode(errors="replace"))
    plain = b"cdlab-edge app aaa 304 2 -- 0 GET /"
    Store(tmp_path / "batch", clock=lambda: T).add_proxy_lines("app", "aaa", "prod", [line])
    Store(tmp_path / "mixed", clock=lambda: T).add_proxy_lines("app", "aaa", "p", [plain, line])
    assert stored(tmp_path / "batch") == stored(tmp_path / "one")
    (doc,) = [json.loads(raw) for raw in (tmp_path / "batch" / "app" / "aaa.log").open("rb")]
    assert doc == {
        "t": T,
        "host": "prod",
        "container": "proxy",
        "service": "app",
        "release": "aaa",
        "line": line.decode(errors="replace"),
    }
    mixed = (tmp_path / "mixed" / "app" / "aaa.log").read_bytes().splitlines()
    assert [json.loads(raw)["line"] for raw in mixed] == [plain.decode(), doc["line"]]


@pytest.mark.parametrize(("service", "release"), [("App", "aaa"), ("app", ".."), ("app", "a/b")])
def test_names_that_are_not_cdlab_s_are_kept_with_their_tag(
    tmp_path: Path, service: str, release: str
) -> None:
    line = f"cdlab-edge {service} {release} 200 1 -- 0 GET /".encode()
    one = Store(tmp_path / "one", clock=lambda: T)
    one.add(f"{service}/{release}/proxy", "prod", line.decode())
    Store(tmp_path / "batch", clock=lambda: T).add_proxy_lines(service, release, "prod", [line])
    assert stored(tmp_path / "batch") == stored(tmp_path / "one")
    assert [k.service for k in files(tmp_path / "batch")] == ["_other"]


def test_a_batch_that_would_take_a_file_over_its_bound_starts_the_next_one(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path, Limits(file_bytes=1000, total_bytes=10**6), clock=lambda: T)
    lines = [f"cdlab-edge app r1 200 1 -- 0 GET /{i:03d}".encode() for i in range(40)]
    for start in range(0, 20, 4):  # batches smaller than a file
        store.add_proxy_lines("app", "r1", "prod", lines[start : start + 4])
    store.add_proxy_lines("app", "r1", "prod", lines[20:])  # one larger than a file
    current, old = tmp_path / "app" / "r1.log", tmp_path / "app" / "r1.log.1"
    assert current.stat().st_size <= 1000 and old.stat().st_size <= 1000
    kept = [json.loads(raw)["line"] for raw in old.open("rb")] + [
        json.loads(raw)["line"] for raw in current.open("rb")
    ]
    assert kept == [line.decode() for line in lines[40 - len(kept) :]] and len(kept) < 40


def filed(root: Path, *datagrams: bytes, peer: str = "10.0.0.9") -> dict[str, bytes]:
    """What a receiver storing under ``root`` files of ``datagrams`` from ``peer``."""
    settings = Settings(port=0, listen="127.0.0.1", root=str(root))
    receiver = Receiver(settings, Store(root, clock=lambda: T))
    try:
        for datagram in datagrams:
            receiver.handle(datagram, peer)
        assert receiver.failure == ""
    finally:
        receiver.close()
    return stored(root)


def syslog(tag: str, line: bytes) -> bytes:
    """A request line as the supervisor sent it before batches (RFC 5424, one a line)."""
    return b"<134>1 2026-12-01T04:10:00.123456Z prod " + tag.encode() + b" - - - " + line


def test_a_batch_is_filed_as_the_same_lines_sent_one_message_each(tmp_path: Path) -> None:
    lines = [
        b"cdlab-edge app aaa 200 1 -- 0 GET /1",
        b"cdlab-edge quotes - 503 0 SC 3 GET /2",
        b'cdlab-edge app aaa 404 1 -- 0 GET /"3"',
        b"cdlab-edge App aaa 200 1 -- 0 GET /4",
        b"cdlab-edge app bbb 200 1 -- 0 GET /5",
    ]
    tags = ["app/aaa/proxy", "quotes/-/proxy", "app/aaa/proxy", "App/aaa/proxy", "app/bbb/proxy"]
    one_each = b"\n".join(syslog(t, x) for t, x in zip(tags, lines, strict=True))
    by_batch = filed(tmp_path / "batch", batch(*lines))
    assert by_batch == filed(tmp_path / "syslog", one_each)
    assert sorted(by_batch) == [
        "_other/App_aaa_proxy.log",
        "app/aaa.log",
        "app/bbb.log",
        "quotes/-.log",
    ]
    assert len(by_batch["app/aaa.log"].splitlines()) == 2


def test_a_batch_without_a_host_is_from_its_sender_and_odd_lines_are_kept(tmp_path: Path) -> None:
    got = filed(tmp_path, batch(b"cdlab-edge app aaa 200 1 -- 0 GET /", b"odd", host=b""))
    docs = {path: json.loads(raw) for path, raw in got.items()}
    assert {path: (d["host"], d["line"]) for path, d in docs.items()} == {
        "app/aaa.log": ("10.0.0.9", "cdlab-edge app aaa 200 1 -- 0 GET /"),
        "_other/_untagged.log": ("10.0.0.9", "odd"),
    }


def test_a_batch_that_cannot_be_written_is_said_once_and_not_counted(tmp_path: Path) -> None:
    (tmp_path / "app").write_text("a file where the service's folder goes")
    settings = Settings(port=0, listen="127.0.0.1", root=str(tmp_path))
    receiver = Receiver(settings, Store(tmp_path))
    try:
        receiver.handle(batch(*[b"cdlab-edge app aaa 200 1 -- 0 GET /"] * 3), "10.0.0.9")
        assert receiver.lines == 0 and "app/aaa/proxy" in receiver.failure
        receiver.handle(batch(b"cdlab-edge quotes q1 200 1 -- 0 GET /"), "10.0.0.9")
        assert receiver.lines == 1 and receiver.failure == ""
    finally:
        receiver.close()
