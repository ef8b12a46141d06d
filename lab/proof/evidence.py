"""What a failed test leaves behind: each container's ``docker inspect`` document and the last
lines of its log, in a folder of ``reports/evidence/``, redacted of the lab's secrets
(``lab.proof.redact``) before anything is written."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lab.proof.redact import redact, redact_doc

LOG_LINES = 200


def folder_name(test_name: str) -> str:
    """A test's name as a folder's (pure): letters, digits and ``-_.``; anything else ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in test_name)


def keep(folder: Path, containers: Iterable[Any], secrets: Iterable[str]) -> list[Path]:
    """``<name>.inspect.json`` and ``<name>.log`` in ``folder`` for each of ``containers`` (the
    SDK's: ``name``, ``attrs``, ``logs``), every secret of ``secrets`` and every secret-looking
    value masked; the files written."""
    known = tuple(secrets)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for container in containers:
        inspect = folder / f"{container.name}.inspect.json"
        doc = redact_doc(container.attrs, known)
        inspect.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        log = folder / f"{container.name}.log"
        log.write_text(redact(container.logs(tail=LOG_LINES).decode(errors="replace"), known))
        written += [inspect, log]
    return written
