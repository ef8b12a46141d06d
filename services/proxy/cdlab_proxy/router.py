"""The Runtime API on one port for every service's HAProxy (pure parts).

Clients (the lab, people with socat) send a command line and read the answer until the
connection closes, as with HAProxy's own CLI. A command naming a backend (``set server
app/r1 ...``, ``show servers state app-match``), a frontend or a map goes to the process that
owns it; a command naming none (``show stat``, ``show servers state``, ``show info``, ``clear
counters all``) goes to every process, and the answers become one in HAProxy's format: its
preamble and column header once, then every process's rows (an answer every process gave, once).
``show cdlab`` is answered by the supervisor: the table of its services' processes
(``status_table``, read back with ``parse_status``). Several commands on a line, separated by
``;``, are answered one after the other, as HAProxy does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .document import TRY_TIMEOUT, Frontend

STATUS_COMMAND = "show cdlab"
# words of HAProxy's commands that are never the name of a backend, frontend or map
_KEYWORDS = {
    "server",
    "servers",
    "state",
    "conn",
    "frontend",
    "backend",
    "health",
    "agent",
    "weight",
    "maxconn",
    "dynamic-cookie",
    "dynamic-cookie-key",
    "map",
    "acl",
    "table",
    "stat",
    "@",
}


@dataclass(frozen=True)
class Route:
    """Where a command goes: the services whose process answers, in order; several answers are
    merged into one. ``answer``: the router's own answer (no process is asked)."""

    services: tuple[str, ...] = ()
    answer: str = ""
    status: bool = False  # ``show cdlab``: the supervisor's table


def owners(maps: Mapping[str, str]) -> dict[str, str]:
    """What each service's process owns, by name: its frontend and backends (``<service>``,
    ``<service>-match``) and its map file. ``maps``: service -> its map file's path."""
    out: dict[str, str] = {}
    for service, path in maps.items():
        out[service] = out[service + "-match"] = out[path] = service
    return out


def split(line: str) -> list[str]:
    """The commands on one line (HAProxy's ``;`` separator; ``\\;`` is not one)."""
    out, current, escaped = [], "", False
    for ch in line.strip():
        if ch == ";" and not escaped:
            out.append(current.strip())
            current = ""
        else:
            current += ch
        escaped = ch == "\\" and not escaped
    out.append(current.strip())
    return [c for c in out if c]


def dispatch(command: str, owned: Mapping[str, str], services: Sequence[str]) -> Route:
    """Where ``command`` goes (pure). ``owned``: ``owners()`` of the running processes;
    ``services``: the running processes' services."""
    words = command.split()
    if not words:
        return Route(answer="")
    if " ".join(words[:2]) == STATUS_COMMAND:
        return Route(status=True)
    for word in words[2:]:
        if word in _KEYWORDS:
            continue
        if word in owned:
            return Route((owned[word],))
        backend, slash, _ = word.partition("/")
        if slash and backend:  # backend/server: HAProxy's own answer for an unknown one
            if backend in owned:
                return Route((owned[backend],))
            return Route(answer="No such backend.\n\n")
        break  # the first argument names nothing this proxy runs
    if words[0] in ("help", "quit", "prompt"):  # the CLI's own: one process's answer will do
        return Route(tuple(sorted(services))[:1])
    # names none: about the proxy as a whole (show stat, show info, clear counters all...)
    return Route(tuple(sorted(services)))


def merge(answers: Sequence[str]) -> str:
    """Several processes' answers to one command, as one (pure): a preamble ending with a column
    header (``# ...``, in the first two lines) appears once, then every answer's rows; answers
    without one follow each other, each different one once. Each HAProxy answer ends with an
    empty line."""
    preamble: list[str] = []
    rows: list[str] = []
    blocks: list[str] = []
    for answer in answers:
        lines = answer.rstrip("\n").splitlines()
        head = next((i for i, line in enumerate(lines[:2]) if line.startswith("# ")), None)
        if head is None:
            block = "\n".join(lines)
            blocks += [block] if lines and block not in blocks else []  # the same once
            continue
        preamble = preamble or lines[: head + 1]
        rows += lines[head + 1 :]
    parts = (["\n".join(preamble + rows)] if preamble else []) + blocks
    return "".join(part + "\n\n" for part in parts) or "\n"


@dataclass(frozen=True)
class Status:
    """One service's process as the supervisor sees it."""

    service: str
    frontend: Frontend | None  # None: its document could not be read
    state: str  # starting, up, failed, refused, invalid
    pid: int | None = None
    detail: str = ""


_COLUMNS = "# service public_port port health maxconn try_timeout state pid detail"
# the previous supervisor's layout, without try_timeout: its rows read as TRY_TIMEOUT
_OLD_COLUMNS = "# service public_port port health maxconn state pid detail"


def status_table(rows: Sequence[Status]) -> str:
    """``show cdlab``'s answer (pure): a header, then one line per service."""
    lines = [_COLUMNS]
    for r in sorted(rows, key=lambda r: r.service):
        f = r.frontend
        values = (
            [str(f.public_port), str(f.port), f.health, str(f.maxconn), str(f.try_timeout)]
            if f
            else ["-"] * 5
        )
        pid = str(r.pid) if r.pid else "-"
        lines.append(" ".join([r.service, *values, r.state, pid, r.detail or "-"]))
    return "\n".join(lines) + "\n\n"


def parse_status(text: str) -> list[Status] | None:
    """``show cdlab``'s rows (None: not such an answer, e.g. an older proxy's "Unknown
    command"); a previous supervisor's answer, without try_timeout, reads as ``TRY_TIMEOUT``."""
    lines = text.strip().splitlines()
    if not lines or lines[0] not in (_COLUMNS, _OLD_COLUMNS):
        return None
    old = lines[0] == _OLD_COLUMNS
    width = len(lines[0].split()) - 1  # the columns, less the '#'
    rows = []
    for line in lines[1:]:
        parts = line.split(maxsplit=width - 1)
        if len(parts) < width:
            continue
        if old:
            parts.insert(5, str(TRY_TIMEOUT))  # after maxconn
        name, public, port, health, maxconn, tries, state, pid, detail = parts
        front = (
            None
            if public == "-"
            else Frontend(name, int(public), int(port), health, int(maxconn), int(tries))
        )
        rows.append(
            Status(
                name,
                front,
                state,
                None if pid == "-" else int(pid),
                "" if detail == "-" else detail,
            )
        )
    return rows
