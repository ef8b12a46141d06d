"""Flight records: one JSON file per deploy or rollback in ``.lab/runs/``."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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


def logs_command(service: str, release: str) -> str:
    return f"invoke logs --service {service} --release {release} --since 1h"


def trigger() -> str:
    """Who ran it: ``CDLAB_TRIGGER`` (the cd host's git hook sets it) or user@host."""
    return os.environ.get("CDLAB_TRIGGER") or f"{getpass.getuser()}@{socket.gethostname()}"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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


def write(directory: Path, record: Record) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = record.started.replace(":", "").replace("-", "").split("+")[0]
    path = directory / f"{record.kind}-{stamp}-{record.service}-{record.release}.json"
    path.write_text(json.dumps(asdict(record), indent=2) + "\n")
    return path


ETCD_PREFIX = "/cdlab/runs/"  # + service/started-kind: the history every runner shares


def publish(store: Any, record: Record) -> None:
    """The record in the route store too, so runs from the workstation and from a push to cd
    share one history (best effort: the local file is the record of last resort)."""
    import contextlib

    from lab.errors import LabError

    key = f"{ETCD_PREFIX}{record.service}/{record.started}-{record.kind}"
    with contextlib.suppress(LabError):
        store.put_json(key, asdict(record))


def history(directory: Path, service: str, store: Any = None) -> list[Record]:
    """Every record of ``service`` (local files, and the route store's when given), oldest
    first, each run once."""
    docs = []
    for path in sorted(directory.glob(f"*-{service}-*.json")):
        try:
            docs.append(json.loads(path.read_text()))
        except ValueError:
            continue
    if store is not None:
        from lab.errors import LabError

        try:
            shared = store.get_prefix(f"{ETCD_PREFIX}{service}/")
        except LabError:
            shared = {}
        for raw in shared.values():
            try:
                docs.append(json.loads(raw))
            except ValueError:
                continue
    out: dict[tuple[str, str, str], Record] = {}
    for doc in docs:
        try:
            rec = Record(**doc)
        except TypeError:
            continue  # a record from another version of cdlab: skipped, not fatal
        if rec.service == service:
            out[(rec.started, rec.kind, rec.release)] = rec
    return sorted(out.values(), key=lambda r: r.started)


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
