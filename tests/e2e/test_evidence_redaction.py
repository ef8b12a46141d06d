"""What the suite writes down carries no secret of the lab: a failed test's evidence (each of
prod's containers' inspect document and log tail), and every other file under ``reports/``
(load reports, junit, earlier evidence). The database password is in the stack's database
container and in every release's DATABASE_URL, so prod's inspect documents are where it would
leak first; the evidence keeps the Env names, with the values masked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lab.estate.state import State
from lab.ports import engines
from lab.proof.redact import MASK
from lab.release import api as release
from lab.stack import project as stack
from tests.conftest import EVIDENCE, keep_evidence, running_container

pytestmark = pytest.mark.xdist_group("prod")  # reads prod's containers while none is replaced

REPORTS = EVIDENCE.parent
PROBE = "redaction-probe"


def key_material(state_dir: Path) -> dict[str, str]:
    """Each private key line under ``.lab/`` (the lab's CAs, its certificates' keys, the SSH
    keys), by where it is: the base64 between a key's armour, lines of 16+ characters."""
    found: dict[str, str] = {}
    for path in sorted(state_dir.rglob("*")):
        if not path.is_file() or path.stat().st_size > 64_000 or "cache" in path.parts:
            continue
        text = path.read_text(errors="replace")
        if "PRIVATE KEY-----" not in text:
            continue
        body = text.split("PRIVATE KEY-----", 1)[1].split("-----END", 1)[0]
        for n, line in enumerate(line.strip() for line in body.splitlines()):
            if len(line) >= 16:
                found[f"{path.relative_to(state_dir)} line {n}"] = line
    return found


@pytest.fixture(scope="module")
def secrets(lab: State) -> dict[str, str]:
    """The lab's secret values, by what they are (the names go in a failure message; the
    values never do)."""
    found = {
        "the database password": lab.secret("db-password"),
        "the registry password": lab.password_file.read_text().strip(),
        **{f"private key {where}": line for where, line in key_material(lab.dir).items()},
    }
    assert len(found) > 2, "no private key found under .lab/: the lab is not what this expects"
    return found


@pytest.fixture(scope="module")
def evidence(lab: State) -> Path:
    """The evidence a failed lab test leaves, taken now (as the hook does on a failure)."""
    folder = keep_evidence(PROBE)
    assert folder == EVIDENCE / PROBE and any(folder.glob("*.inspect.json"))
    return folder


def leaks(root: Path, secrets: dict[str, str]) -> list[str]:
    """Where under ``root`` a secret appears: '<file>: <what>' (never the value)."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        where = path.relative_to(root)
        found += [f"{where}: {what}" for what, v in secrets.items() if v.encode() in data]
    return found


PYTEST = (sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-q")
FAILING = """
def test_fails_on_purpose(lab):
    password = lab.secret("db-password")
    print(f"DATABASE_URL=postgresql://app:{password}@db:5432/app")
    assert password == "", f"the database password is {password}"
"""


@pytest.fixture(scope="module")
def failed_on_purpose(lab: State, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A lab test that fails on purpose, printing the database password and naming it in its
    assertion, run as the suite runs a test (the suite's hooks and ``lab`` fixture): its
    evidence, its junit report and what pytest printed. Returns the printed output."""
    folder = tmp_path_factory.mktemp("failing")
    (folder / "test_on_purpose.py").write_text(FAILING)
    root = Path(__file__).resolve().parents[2]
    junit = REPORTS / "junit-on-purpose.xml"
    done = subprocess.run(
        [*PYTEST, "--rootdir", str(folder), "--junitxml", str(junit), str(folder)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "1 failed" in done.stdout, done.stdout[-2000:]
    assert any((EVIDENCE / "test_fails_on_purpose").glob("*.inspect.json"))
    assert junit.exists()
    return done.stdout + done.stderr


def test_a_test_failed_on_purpose_writes_and_prints_no_secret(
    failed_on_purpose: str, secrets: dict[str, str]
) -> None:
    assert MASK in failed_on_purpose, failed_on_purpose[-2000:]
    printed = [what for what, value in secrets.items() if value in failed_on_purpose]
    assert printed == [], f"pytest printed {printed}"
    found = leaks(REPORTS, secrets)
    assert found == [], "secrets written under reports/:\n  " + "\n  ".join(found)


def test_no_file_under_reports_holds_a_secret(evidence: Path, secrets: dict[str, str]) -> None:
    assert evidence.is_relative_to(REPORTS)
    found = leaks(REPORTS, secrets)
    assert found == [], (
        "secrets written under reports/ (a file older than this branch's redaction may be "
        "removed and the suite run again):\n  " + "\n  ".join(found)
    )


def inspect_doc(evidence: Path, container: str) -> dict[str, Any]:
    return dict(json.loads((evidence / f"{container}.inspect.json").read_text()))


def env_names(env: list[str]) -> list[str]:
    return [entry.partition("=")[0] for entry in env]


def test_the_evidence_keeps_the_env_names_with_the_secrets_masked(
    lab: State, evidence: Path
) -> None:
    live = release.current_routes(lab, "app").live
    assert live, "no live release of app"
    db_name = f"{stack.PROJECT}_db_1"
    with engines.connect(lab, lab.config.host("prod")) as prod:
        app_name = running_container(prod, "app", live).name
        raw = {name: prod.containers.get(name).attrs for name in (db_name, app_name)}
    db_env = inspect_doc(evidence, db_name)["Config"]["Env"]
    assert env_names(db_env) == env_names(raw[db_name]["Config"]["Env"])
    assert f"POSTGRES_PASSWORD={MASK}" in db_env
    app_env = inspect_doc(evidence, app_name)["Config"]["Env"]
    assert env_names(app_env) == env_names(raw[app_name]["Config"]["Env"])
    url = next(e for e in app_env if e.startswith("DATABASE_URL="))
    assert url == f"DATABASE_URL=postgresql://app:{MASK}@db:5432/app"
    # what is not secret is kept as it was: the evidence is still evidence
    kept = [e for e in raw[app_name]["Config"]["Env"] if e.startswith(("RELEASE=", "IMAGE="))]
    assert len(kept) == 2 and set(kept) <= set(app_env)
    assert inspect_doc(evidence, app_name)["HostConfig"] == raw[app_name]["HostConfig"]
    assert (evidence / f"{app_name}.log").exists()
