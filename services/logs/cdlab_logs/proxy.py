"""The proxy's request lines as its supervisor sends them (``cdlab_proxy.metrics``), parsed
(pure).

One UDP datagram carries a batch of them, thousands a second::

    cdlab-edge-batch prod\\n
    cdlab-edge app 3f9c2e1a0b1c 200 3 -- 0 GET /api/users\\n
    cdlab-edge quotes - 503 0 SC 3 GET /\\n
    ...

The first line is the header: ``HEADER`` and the name of the host the proxy runs on (none: the
sender's address is the host). Each other line is one request line as HAProxy logged it
(``cdlab_proxy.edge.LOG_FORMAT``: ``cdlab-edge <service> <release> <status> ...``), whole, in
the order the requests ended; the last one's newline may be missing. A line is filed as a
syslog message tagged ``<service>/<release>/proxy`` would be (the format this one replaced,
still read: ``syslog``), from its second and third words (an empty release is ``-``, as the
proxy counts it); a line without them is filed as an untagged message. The lines of a batch
are received at once: their times are a microsecond apart in the order they came (``store``),
so a reader merging releases shows them in that order.
"""

from __future__ import annotations

from dataclasses import dataclass

HEADER = b"cdlab-edge-batch "  # cdlab_proxy.metrics.BATCH_HEADER
MARK = b"cdlab-edge"  # the first word of a request line
CONTAINER = "proxy"  # the third part of the tag the lines are filed under


@dataclass(frozen=True)
class Batch:
    host: str  # "" when the header names none
    lines: dict[tuple[str, str], list[bytes]]  # by (service, release), in the order they came
    places: dict[tuple[str, str], list[int]]  # where each of those is in the batch (0: first)
    others: list[bytes]  # lines that are not request lines
    size: int  # places in the batch


def is_batch(data: bytes) -> bool:
    return data.startswith(HEADER)


def parse(data: bytes) -> Batch:
    """The batch in ``data`` (blank lines skipped)."""
    header, _, body = data.partition(b"\n")
    by_release: dict[tuple[bytes, bytes], tuple[list[bytes], list[int]]] = {}
    others = []
    parts = body.split(b"\n")
    for place, line in enumerate(parts):
        words = line.split(b" ", 3)
        if len(words) < 4 or words[0] != MARK:
            words = line.strip().split(b" ", 3)  # spaces around it, or not a request line
            if len(words) < 4 or words[0] != MARK:
                if line.strip():
                    others.append(line)
                continue
        key = (words[1], words[2] or b"-")
        found = by_release.get(key)
        if found is None:
            by_release[key] = ([line], [place])
        else:
            found[0].append(line)
            found[1].append(place)
    lines: dict[tuple[str, str], list[bytes]] = {}
    places: dict[tuple[str, str], list[int]] = {}
    for (service, release), (kept, where) in by_release.items():
        names = (service.decode(errors="replace"), release.decode(errors="replace"))
        if names in lines:  # names not in UTF-8 may read the same: one release (in _other)
            both = sorted(zip(places[names] + where, lines[names] + kept, strict=True))
            where, kept = [p for p, _ in both], [x for _, x in both]
        lines[names], places[names] = kept, where
    host = header[len(HEADER) :].decode(errors="replace").strip()
    return Batch(host, lines, places, others, len(parts))


def tag(service: str, release: str) -> str:
    """The tag a request line of ``service``'s ``release`` is filed under."""
    return f"{service}/{release}/{CONTAINER}"
