"""The fault matrix as one page, ``reports/faults.md``: a row per fault case (what was injected,
failed requests, the outage, registrations lost, what must hold and whether the test passed).

Each fault test records its row as a JSON line in ``reports/faults.jsonl`` (``append``; pytest's
xdist workers each append to the one file); the process that writes the run's output renders
the page at the session's end from the lines of its own run (``write_page``). A figure a test
does not measure is None, shown as "-". Rendering and merging are pure (``render``, ``merge``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

REPORTS = Path(__file__).resolve().parents[2] / "reports"
JSONL = REPORTS / "faults.jsonl"
PAGE = REPORTS / "faults.md"
RUN = "CDLAB_FAULT_RUN"  # the id of the test run the lines belong to (set by its controller)


@dataclass(frozen=True)
class Row:
    case: str
    injected: str  # what the test did to the lab, and when
    failed: int | None  # requests that failed (under the test's load)
    outage_s: float | None  # the longest time without a successful answer (``Traffic.gap``)
    lost: int | None  # registrations answered 201 that could not be read back afterwards
    verdict: str  # what must hold (the test's assertions, in a few words)
    outcome: str = ""  # "passed" or "failed": the test's own result
    test: str = ""  # the test's node id
    run: str = ""  # the test run's id (``RUN``)
    t: float = 0.0  # when it was recorded (unix time): the order of the rows


def to_line(row: Row) -> str:
    """One JSON line (no newline inside)."""
    return json.dumps(asdict(row), sort_keys=True)


def from_line(text: str) -> Row | None:
    """The row of a line; None for a line that is not one (cut short, another version's)."""
    try:
        doc = json.loads(text)
        return Row(**doc) if isinstance(doc, dict) else None
    except (ValueError, TypeError):
        return None


def merge(lines: Iterable[str], run: str) -> list[Row]:
    """The rows of ``run`` from every worker's lines (pure): in the order they were recorded,
    a test that recorded the same case twice (run again in the session) once, its last."""
    latest: dict[tuple[str, str], Row] = {}
    for line in lines:
        row = from_line(line)
        if row is None or row.run != run:
            continue
        key = (row.test, row.case)
        if key not in latest or row.t >= latest[key].t:
            latest[key] = row
    return sorted(latest.values(), key=lambda r: r.t)


HEAD = ("case", "injected", "failed requests", "outage", "writes lost", "what must hold", "result")


def render(rows: Sequence[Row], when: str = "") -> str:
    """The page in Markdown (pure)."""
    passed = sum(r.outcome == "passed" for r in rows)
    lines = [
        "# Fault matrix",
        "",
        f"{len(rows)} cases{f', run {when}' if when else ''}: {passed} passed, "
        f"{len(rows) - passed} failed. Under load (100 or 300 req/s through the proxy); outage: "
        "the longest time without a successful answer; writes lost: registrations answered "
        "201 and not found afterwards; -: not measured by that test.",
        "",
        "| " + " | ".join(HEAD) + " |",
        "|" + "|".join(["---", "---", "--:", "--:", "--:", "---", "---"]) + "|",
    ]
    for r in rows:
        cells = (
            r.case,
            r.injected,
            _number(r.failed),
            "-" if r.outage_s is None else f"{r.outage_s:.2f} s",
            _number(r.lost),
            r.verdict,
            r.outcome or "?",
        )
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _number(n: int | None) -> str:
    return "-" if n is None else str(n)


def _cell(text: str) -> str:
    """``text`` safe in a table cell: one line, no column break."""
    return " ".join(text.split()).replace("|", "\\|")


def append(row: Row, path: Path = JSONL) -> None:
    """``row`` as a line at the end of ``path``, stamped with this run and the time: one write
    to a file opened for appending, so lines of several workers never mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stamped = replace(row, run=row.run or os.environ.get(RUN, ""), t=row.t or time.time())
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (to_line(stamped) + "\n").encode())
    finally:
        os.close(fd)


def write_page(run: str, path: Path = JSONL, page: Path = PAGE) -> int:
    """``page`` from the lines of ``run`` in ``path``; how many rows (no rows: no page
    written, an earlier one stays)."""
    if not path.exists():
        return 0
    rows = merge(path.read_text().splitlines(), run)
    if rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(rows[0].t))
        page.write_text(render(rows, when))
    return len(rows)


def covers(args: Sequence[str], base: Path, folder: Path) -> bool:
    """Whether a test run given ``args`` (pytest's paths, each maybe with ``::`` and a name,
    relative to ``base``) may run tests of ``folder``: one is inside the other."""
    target = folder.resolve()
    for arg in args:
        path = (base / arg.split("::")[0]).resolve()
        if path == target or target in path.parents or path in target.parents:
            return True
    return False
