"""What Docker's syslog driver sends, read back (cdlab_logs.syslog): datagrams captured from a
real Docker 20.10 engine in every format, other senders' RFC 3164 and 5424, garbage, and tags
meant to escape the store's folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cdlab_logs.syslog import Message, Tag, format_rfc5424micro, parse, parse_tag, safe_name

CAPTURED = json.loads((Path(__file__).parent / "data" / "docker-syslog-20.10.json").read_text())
TAG = "app/3f2a1b/cdlab-app-3f2a1b-1"


@pytest.mark.parametrize("fmt", ["rfc5424micro", "rfc5424", "rfc3164"])
def test_every_line_docker_sends_reads_back_with_its_host_tag_and_stream(fmt: str) -> None:
    got = sorted((parse(d.encode()) for d in CAPTURED[fmt]), key=lambda m: m.line)
    assert got == [
        Message("vm", TAG, "an error", 3),  # stderr: severity err
        Message("vm", TAG, "hello from stdout", 6),
        Message("vm", TAG, "tab\there é", 6),
        # a line over 16 KiB comes as two messages: both kept, as they came
        Message("vm", TAG, "x" * (20000 - 16384), 6),
        Message("vm", TAG, "x" * 16384, 6),
    ]


def test_without_a_format_docker_sends_no_hostname() -> None:
    got = [parse(d.encode()) for d in CAPTURED["none"]]
    assert got == [Message("", TAG, "hello from stdout", 6), Message("", TAG, "err", 3)]


def test_a_tag_longer_than_rfc5424_allows_is_sent_whole_and_kept_whole() -> None:
    (message,) = (parse(d.encode()) for d in CAPTURED["long"])
    assert len(message.tag) == 110 > 48 and message.line == "long tag"
    assert parse_tag(message.tag) == Tag(
        "quotes-service-long",
        "0123456789abcdef0123456789abcdef01234567",
        "cdlab-logs-wtlogs-cap-with-a-long-name-0123456789",
    )


@pytest.mark.parametrize(
    ("datagram", "expected"),
    [
        # other senders: structured data, a BOM, nil fields, no MSG
        (
            b"<165>1 2026-12-01T04:10:00.1+01:00 h a/1/c 9 ID47 "
            b'[ex@1 k="v \\] x"][b@2] \xef\xbb\xbfhi',
            Message("h", "a/1/c", "hi", 5),
        ),
        (b"<14>1 - - - - - -", Message("", "", "", 6)),
        (b"<14>1 - prod a/1/c - - - two  spaces ", Message("prod", "a/1/c", "two  spaces ", 6)),
        # RFC 3164 from others: a tag without a pid, a single-digit day, no message
        (b"<13>Dec  1 04:10:00 prod a/1/c: hi", Message("prod", "a/1/c", "hi", 5)),
        (b"<13>Jan 12 04:10:00 prod a/1/c[1]:\n", Message("prod", "a/1/c", "", 5)),
        # srslog's default formatter: an RFC 3339 time after a space
        (b"<30> 2026-12-01T04:10:00Z prod a/1/c[7]: hi\n", Message("prod", "a/1/c", "hi", 6)),
        # garbage is kept as an untagged line
        (b"hello world\n", Message("", "", "hello world", -1)),
        (b"<30>not a header", Message("", "", "not a header", 6)),
        (b"<30>1 too short", Message("", "", "1 too short", 6)),
        (b"<30>1 t h a p m [unclosed", Message("", "", "1 t h a p m [unclosed", 6)),
        (b"\xff\xfe<30>", Message("", "", "\ufffd\ufffd<30>", -1)),
        (b"", Message("", "", "", -1)),
    ],
)
def test_other_senders_and_garbage(datagram: bytes, expected: Message) -> None:
    assert parse(datagram) == expected


@pytest.mark.parametrize(
    ("tag", "found"),
    [
        ("app/3f2a1b/cdlab-app-3f2a1b-1", Tag("app", "3f2a1b", "cdlab-app-3f2a1b-1")),
        ("app/-/proxy", Tag("app", "-", "proxy")),  # the proxy's line no release answered
        ("quotes/1.2.0-rc1/q_1", Tag("quotes", "1.2.0-rc1", "q_1")),
        ("app/../x", None),
        ("app/./x", None),
        ("app/.hidden/x", None),
        ("../etc/passwd/x", None),
        ("app/3f2a1b/../x", None),
        ("app/3f/2a/x", None),
        ("app/3f2a1b/x\x00y", None),
        ("App/3f2a1b/x", None),
        ("app/3F2A1B/x", None),
        ("app/3f2a1b/", None),
        ("app/3f2a1b", None),
        ("3app/r/x", None),
        ("a" * 64 + "/r/x", None),
        ("", None),
    ],
)
def test_only_cdlab_tags_name_a_service_and_release(tag: str, found: Tag | None) -> None:
    assert parse_tag(tag) == found


@pytest.mark.parametrize(
    ("tag", "name"),
    [
        ("8c1f0d2e9a7b", "8c1f0d2e9a7b"),  # Docker's default tag: the container's short id
        ("..", "_."),
        (".", "_"),
        ("../../etc/passwd", "_._.._etc_passwd"),
        ("/abs/path", "_abs_path"),
        ("a\x00b", "a_b"),
        ("a b\nc", "a_b_c"),
        ("é", "_"),
        ("", "_untagged"),
        ("x" * 500, "x" * 100),
    ],
)
def test_an_unknown_tag_becomes_a_file_name_that_stays_in_its_folder(tag: str, name: str) -> None:
    assert safe_name(tag) == name
    assert "/" not in name and "\x00" not in name and not name.startswith(".")


def test_what_the_proxy_sends_reads_back_as_docker_s_own() -> None:
    datagram = format_rfc5424micro("app/-/proxy", "GET /version 200 3ms", "prod", when=1.5)
    assert datagram.startswith(b"<30>1 1970-01-01T00:00:01.500000Z prod app/-/proxy ")
    assert parse(datagram) == Message("prod", "app/-/proxy", "GET /version 200 3ms", 6)
