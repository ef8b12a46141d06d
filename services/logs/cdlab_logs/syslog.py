"""Syslog datagrams as Docker's ``syslog`` logging driver sends them, parsed (pure).

What Docker 20.10 sends (moby ``daemon/logger/syslog/syslog.go`` with its vendored
``RackSec/srslog``), one message per UDP datagram, no framing; the log line with one ``\\n``
added; an empty line is not sent; a line over 16 KiB arrives as several messages:

    rfc5424micro  <30>1 2026-12-01T04:10:00.123456Z prod TAG 812 TAG - LINE\\n
    rfc5424       <30>1 2026-12-01T04:10:00Z prod TAG 812 TAG - LINE\\n
    rfc3164       <30>Dec  1 04:10:00 prod TAG[812]: LINE\\n
    (no format)   <30>Dec  1 04:10:00 TAG[812]: LINE\\n

TAG (the ``tag`` log option) is both APP-NAME and MSGID, never cut to RFC 5424's 48 characters;
812 is dockerd's pid; the timestamp is the daemon's local time; HOSTNAME is the daemon's
``os.Hostname()``. PRI is facility ``daemon`` (3) unless ``syslog-facility`` says otherwise,
with severity ``info`` (6) for stdout and ``err`` (3) for stderr. Over ``tcp`` the message is
the same, ended by its newline; over ``tcp+tls`` the RFC 5424 formats are octet-counted
(``LEN SP MSG``). This store listens on UDP only.

cdlab's tag is ``<service>/<release>/<container>`` (``parse_tag``); anything else is kept
under ``_other`` by a name that cannot leave the store's folder (``safe_name``).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

_PRI = re.compile(r"<(\d{1,3})>")
_STAMP_3164 = re.compile(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d ")
_STAMP_3339 = re.compile(r" ?\d{4}-\d\d-\d\dT\S+ ")  # srslog's default formatter, leniently
_TAG_3164 = re.compile(r"(?P<tag>[^\s\[\]:]+)(?:\[[^\]\s]*\])?:(?: |$)")
SERVICE = r"[a-z][a-z0-9-]{0,62}"
RELEASE = r"[0-9a-z-][0-9a-z.-]{0,63}"  # never ".", "..": a release names a file
CONTAINER = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"  # Docker's own rule for names
_TAG = re.compile(f"(?P<service>{SERVICE})/(?P<release>{RELEASE})/(?P<container>{CONTAINER})")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
SAFE_MAX = 100  # characters of a tag kept in an ``_other`` file's name


@dataclass(frozen=True)
class Message:
    """One datagram: ``host`` and ``tag`` are "" when it did not carry them; ``severity`` is
    -1 when it had no PRI."""

    host: str
    tag: str
    line: str
    severity: int = 6


@dataclass(frozen=True)
class Tag:
    service: str
    release: str
    container: str


def parse(data: bytes) -> Message:
    """The message in ``data`` (RFC 5424, RFC 3164, leniently); what does not parse is kept
    whole as the line of an untagged message."""
    text = data.decode("utf-8", errors="replace")
    pri = _PRI.match(text)
    if pri is None:
        return Message("", "", _chomp(text), -1)
    rest, severity = text[pri.end() :], int(pri.group(1)) & 7
    if rest.startswith("1 "):
        found = _rfc5424(rest[2:], severity)
        if found is not None:
            return found
    stamp = _STAMP_3164.match(rest) or _STAMP_3339.match(rest)
    if stamp is not None:
        rest = rest[stamp.end() :]
        tag = _TAG_3164.match(rest)
        host = ""
        if tag is None:  # HOSTNAME first
            host, _, after = rest.partition(" ")
            tag = _TAG_3164.match(after)
            rest = after if tag is not None else rest
        if tag is not None:
            return Message(host, tag.group("tag"), _chomp(rest[tag.end() :]), severity)
    return Message("", "", _chomp(rest), severity)


def _rfc5424(rest: str, severity: int) -> Message | None:
    """TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [SP MSG], or None."""
    fields = rest.split(" ", 5)
    if len(fields) < 6:
        return None
    _, host, app, _, _, tail = fields
    msg = _after_structured_data(tail)
    if msg is None:
        return None
    return Message(_nil(host), _nil(app), _chomp(msg.removeprefix("\ufeff")), severity)


def _after_structured_data(text: str) -> str | None:
    """The MSG after STRUCTURED-DATA (``-`` or ``[id k="v"]...``, ``\\]`` escaped)."""
    if text == "-" or text.startswith("- "):
        return text[2:]
    i = 0
    while i < len(text) and text[i] == "[":
        quoted = False
        i += 1
        while i < len(text) and (quoted or text[i] != "]"):
            if text[i] == "\\":
                i += 1
            elif text[i] == '"':
                quoted = not quoted
            i += 1
        i += 1  # past "]"
    if i == 0 or i > len(text):
        return None
    return text[i + 1 :]


def _nil(value: str) -> str:
    return "" if value == "-" else value


def _chomp(line: str) -> str:
    """The line without the newline its sender added."""
    return line[:-1] if line.endswith("\n") else line


def parse_tag(tag: str) -> Tag | None:
    """``<service>/<release>/<container>``, or None. A release may not start with a dot."""
    m = _TAG.fullmatch(tag)
    return Tag(m["service"], m["release"], m["container"]) if m else None


def safe_name(tag: str) -> str:
    """A file name for an unknown ``tag`` that stays in its folder: letters, digits, ``_.-``
    only, not starting with a dot, at most ``SAFE_MAX`` characters, never empty."""
    name = _UNSAFE.sub("_", tag[:SAFE_MAX])
    if name.startswith("."):
        name = "_" + name[1:]
    return name or "_untagged"


def format_rfc5424micro(
    tag: str, line: str, host: str, severity: int = 6, facility: int = 3, when: float = 0.0
) -> bytes:
    """A datagram exactly as Docker's ``rfc5424micro`` format sends ``line``: for a sender that
    is not a container (the proxy's supervisor, tests)."""
    t = when or time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"
    pri = facility * 8 + severity
    return f"<{pri}>1 {stamp} {host} {tag} {os.getpid()} {tag} - {line}\n".encode()
