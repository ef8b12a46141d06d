"""Flight records: one JSON file per deploy or rollback in ``.lab/runs/``, and a copy in the
route store (etcd) that every runner shares.

The order of a service's history (``history``) never comes from a clock: the runners (the
workstation, cd's git hook) each stamp ``started`` with their own clock, and cd's may be off by
minutes. Shared records are ordered by etcd's revision of their key (``create_revision``: the
store's counter when the record was first written; it only grows, for every client alike). A
record only on this machine (etcd was down when it was written, or it predates the shared
history) has nothing but its time: it is merged in by ``started``, before the first shared
record that started after it, without ever reordering the shared ones (``order``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import os
import socket
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from lab.errors import ConfigError, LabError
from lab.ports.etcd import Entry, Fence
from lab.progress import Progress, Stage
from lab.proof.redact import redact_doc


@dataclass(frozen=True)
class Record:
    kind: str  # "deploy" or "rollback" (made a release live); "match" or "abort" (did not)
    service: str
    release: str  # the release this run made (or tried to make) live
    previous: str | None  # the live release before the run
    image: str  # pinned by digest, "" when unknown
    strategy: str
    trigger: str  # who ran it
    started: str
    seconds: float
    result: str  # "succeeded", "failed" or "interrupted"
    failed_stage: str | None = None  # the key of the stage it stopped at
    error: str = ""
    stages: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # healthy, switch, ... (seconds)
    undone: list[str] = field(default_factory=list)  # keys of the steps undone
    warnings: list[str] = field(default_factory=list)  # after the release was live
    logs: str = ""  # a failed run whose candidate ran: the command that shows its output
    # the database schema (a service with [migrate]): what the release needs ("needs"), the
    # version before the run and the one it left ("before", "left"), and which release a
    # scratch copy at which version was checked with ("checked", "checked_at"); see schema.py
    schema: dict[str, str] = field(default_factory=dict)
    run: str = ""  # this run's unique id ("" in a record of a cdlab before run ids)

    @property
    def identity(self) -> tuple[str, ...]:
        """The same run wherever its record is kept (a local file, etcd, a copy on cd)."""
        return (self.run,) if self.run else (self.started, self.kind, self.release)


def new_run_id() -> str:
    """A run's unique id: 12 hex digits of a random UUID (no clock in it)."""
    return uuid.uuid4().hex[:12]


def logs_command(service: str, release: str) -> str:
    return f"invoke logs --service {service} --release {release} --since 1h"


def trigger() -> str:
    """Who ran it: ``CDLAB_TRIGGER`` (the cd host's git hook sets it) or user@host."""
    return os.environ.get("CDLAB_TRIGGER") or f"{getpass.getuser()}@{socket.gethostname()}"


CLOCK_OFFSET = "CDLAB_CLOCK_OFFSET_S"
CLOCK_OFFSET_FORM = "a number of seconds to add to the clock, e.g. -600 or 600"


def now(environ: Mapping[str, str] | None = None) -> dt.datetime:
    """The runner's wall clock (UTC) for a record's ``started``, moved by
    ``CDLAB_CLOCK_OFFSET_S`` seconds when that is set: how a test gives one runner a skewed
    clock (every container shares the kernel's clock, and setting it needs privileges and
    moves it for everyone). Nothing orders records by this time (see ``history``)."""
    text = (os.environ if environ is None else environ).get(CLOCK_OFFSET, "").strip()
    try:
        offset = float(text) if text else 0.0
    except ValueError:
        raise ConfigError(CLOCK_OFFSET, text, CLOCK_OFFSET_FORM) from None
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset)


def make(
    kind: str,
    service: str,
    release: str,
    previous: str | None,
    image: str,
    strategy: str,
    started: dt.datetime,
    progress: Progress,
    error: BaseException | None,
    result: str = "",
    stage: str | None = None,
    undone: tuple[str, ...] = (),
    warnings: tuple[str, ...] = (),
) -> Record:
    """The record of a run; ``result`` defaults to succeeded or failed by ``error``, and the
    stage it stopped at to the first that failed or was interrupted."""
    failed = stage or next(
        (s.key for s in progress.stages if s.status in ("failed", "interrupted")), None
    )
    return Record(
        kind,
        service,
        release,
        previous,
        image,
        strategy,
        trigger(),
        started.isoformat(timespec="seconds"),
        round(progress.total_seconds, 3),
        result or ("failed" if error else "succeeded"),
        failed if (error or result not in ("", "succeeded")) else None,
        str(error).splitlines()[0] if error else "",
        [asdict(s) for s in progress.stages],
        timings(progress.stages),
        list(undone),
        list(warnings),
        schema=notes(progress.stages),
        run=new_run_id(),
    )


def notes(stages: list[Stage]) -> dict[str, str]:
    """Every stage's notes, a later stage's winning (pure)."""
    return {name: text for stage in stages for name, text in stage.notes.items()}


TIMED = ("start", "healthy", "tests", "switch", "drain", "bake", "retire")


def timings(stages: list[Stage]) -> dict[str, float]:
    """Durations of the stages readers compare, by key, and their figures (pure): e.g.
    ``switch`` (the stage) and ``to_100_s`` (its figure)."""
    out: dict[str, float] = {}
    for stage in stages:
        if stage.key in TIMED and stage.status != "skipped":
            out[stage.key] = round(stage.seconds, 3)
        for name, value in stage.figures.items():
            out[name] = round(value, 4)
    return out


def redacted(record: Record, secrets: Iterable[str]) -> Record:
    """``record`` with every secret masked (``lab.proof.redact``): its error, its stages'
    details and notes may quote a command's output. Its keys and figures are unchanged."""
    return Record(**redact_doc(asdict(record), secrets))


def as_json(record: Record, secrets: Iterable[str], **extra: Any) -> str:
    """The record as one JSON document for a program reading a task's output (``--json``),
    redacted of ``secrets``; ``extra`` adds figures a task measured beside it."""
    return json.dumps({**asdict(redacted(record, secrets)), **extra}, indent=2)


@contextlib.contextmanager
def json_on_failure(
    directory: Path, service: str, store: Store, secrets: Iterable[str], out: TextIO
) -> Iterator[None]:
    """A failed run's record as JSON on ``out`` (``--json``: a program reads it there too),
    then its error raised on; nothing when the run failed before it had a record (bad input)."""
    before = {r.identity for r in history(directory, service, store)}
    try:
        yield
    except LabError:
        new = [r for r in history(directory, service, store) if r.identity not in before]
        if new:
            print(as_json(new[-1], secrets), file=out, flush=True)
        raise


def write(directory: Path, record: Record) -> Path:
    """The record as ``KIND-STAMP-RUN-SERVICE-RELEASE.json`` in ``directory``: the run id keeps
    two runs apart even when their clocks gave them the same ``started`` (on cd, records from
    the workstation sit beside cd's own)."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = record.started.replace(":", "").replace("-", "").split("+")[0]
    run = f"-{record.run}" if record.run else ""
    path = directory / f"{record.kind}-{stamp}{run}-{record.service}-{record.release}.json"
    part = path.with_name(f".{path.name}.part")
    try:  # whole or not at all: a full disk leaves no cut record behind
        part.write_text(json.dumps(asdict(record), indent=2) + "\n")
        part.replace(path)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    return path


ETCD_PREFIX = "/cdlab/runs/"  # + service/started-kind-run: the history every runner shares


class Store(Protocol):
    """What records need of the route store (``lab.ports.etcd.Etcd``)."""

    def create(self, key: str, value: bytes, lease: str | None = None) -> Fence | bytes: ...

    def get_prefix_with_revisions(self, prefix: str) -> list[Entry]: ...


def key(record: Record) -> str:
    """Where ``record`` is kept in the route store: unique to its run (its run id; a record
    without one has its release in the key instead), never to its clock alone."""
    tail = record.run or record.release
    return f"{ETCD_PREFIX}{record.service}/{record.started}-{record.kind}-{tail}"


def publish(store: Store, record: Record) -> None:
    """The record in the route store too, so runs from the workstation and from a push to cd
    share one history (best effort: the local file is the record of last resort). Created,
    never overwritten: a key already there keeps its record and its revision."""
    doc = json.dumps(asdict(record), sort_keys=True).encode()
    with contextlib.suppress(LabError):
        store.create(key(record), doc)


@dataclass(frozen=True)
class Shared:
    """A record read from the route store, with the revision that created its key."""

    revision: int
    record: Record


def order(shared: Iterable[Shared], local: Iterable[Record]) -> list[Record]:
    """One history, oldest first, each run once (pure).

    Shared records go by revision, whatever their ``started`` says. A local record that is
    shared too (the same run) is dropped for the shared one. A local-only record goes by its
    ``started``: before the first shared record that started after it (a merge of the two
    lists, so neither one's own order changes). Its place is exact when the clocks agree, and
    off by at most their skew otherwise; a shared record never moves.
    """
    by_revision: list[Record] = []
    seen: set[tuple[str, ...]] = set()
    for item in sorted(shared, key=lambda s: s.revision):
        if item.record.identity not in seen:
            seen.add(item.record.identity)
            by_revision.append(item.record)
    only_here: list[Record] = []
    for rec in sorted(local, key=lambda r: _time(r.started)):
        if rec.identity not in seen:
            seen.add(rec.identity)
            only_here.append(rec)
    out: list[Record] = []
    i = j = 0
    while i < len(by_revision) and j < len(only_here):
        if _time(only_here[j].started) < _time(by_revision[i].started):
            out.append(only_here[j])
            j += 1
        else:
            out.append(by_revision[i])
            i += 1
    return out + by_revision[i:] + only_here[j:]


_NO_TIME = dt.datetime.min.replace(tzinfo=dt.UTC)


def _time(started: str) -> dt.datetime:
    """``started`` as a time (a record with none readable sorts first)."""
    try:
        t = dt.datetime.fromisoformat(started)
    except ValueError:
        return _NO_TIME
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _record(doc: Any, service: str) -> Record | None:
    """The record of ``service`` in ``doc``; None for another service's, or a document of
    another version of cdlab (skipped, not fatal)."""
    try:
        rec = Record(**doc)
    except TypeError:
        return None
    return rec if rec.service == service else None


def history(directory: Path, service: str, store: Store | None = None) -> list[Record]:
    """Every record of ``service`` (local files, and the route store's when given), oldest
    first by the route store's revisions, each run once (see ``order``)."""
    local = []
    for path in sorted(directory.glob(f"*-{service}-*.json")):
        try:
            rec = _record(json.loads(path.read_text()), service)
        except ValueError:
            continue
        if rec is not None:
            local.append(rec)
    shared = []
    if store is not None:
        try:
            entries = store.get_prefix_with_revisions(f"{ETCD_PREFIX}{service}/")
        except LabError:
            entries = []
        for entry in entries:
            try:
                rec = _record(json.loads(entry.value), service)
            except ValueError:
                continue
            if rec is not None:
                shared.append(Shared(entry.create_revision, rec))
    return order(shared, local)


CD_RUNS = "/var/lib/cdlab/state/runs"  # where the cd host keeps records (its git hook too)


def copy_to_cd(config: Any, path: Path) -> bool:
    """A copy of a record on the cd host, beside the records of pushes (best effort; False
    when the cd host is not a container of this machine's engine, e.g. on cd itself)."""
    import io
    import tarfile

    import docker
    import docker.errors

    try:
        local = docker.from_env(timeout=10)
        cd = local.containers.get(config.container_name(config.builder))
        cd.exec_run(["mkdir", "-p", "-m", "0700", CD_RUNS])
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w") as tar:
            tar.add(str(path), arcname=path.name)
        return bool(cd.put_archive(CD_RUNS, data.getvalue()))
    except docker.errors.DockerException:
        return False
