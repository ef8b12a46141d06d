"""A failed test's evidence (``lab.proof.evidence``): each container's inspect document and log
tail, written with no secret in them and with the Env names kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lab.proof import evidence
from lab.proof.redact import MASK

DB = "Zr8nq-1vX_3kT0pLmW9aYc2Eb5dFh7gJ"
REG = "q2W_e3R-t4Y5u6I7o8P9a0SdFgHjKlZx"
KEY_LINE = "MIIEowIBAAKCAQEAz7Xo0m2pL9Q3VxGk1m"


class FakeContainer:
    def __init__(self, name: str, env: list[str], log: str) -> None:
        self.name = name
        self.attrs: dict[str, Any] = {"Name": f"/{name}", "Config": {"Env": env}}
        self.log = log
        self.tails: list[int] = []

    def logs(self, tail: int) -> bytes:
        self.tails.append(tail)
        return self.log.encode()


def test_evidence_is_written_redacted_with_the_env_names_kept(tmp_path: Path) -> None:
    app = FakeContainer(
        "app-3f9c2e1a0b1c",
        [f"DATABASE_URL=postgresql://app:{DB}@db:5432/app", "SERVICE_NAME=app"],
        f"boot\nconnecting to postgresql://app:{DB}@db/app\nlogin {REG}\n",
    )
    db = FakeContainer(
        "cdlab-stack_db_1",
        [f"POSTGRES_PASSWORD={DB}"],
        f"-----BEGIN PRIVATE KEY-----\n{KEY_LINE}\n-----END PRIVATE KEY-----\n\xe9 ok",
    )
    written = evidence.keep(tmp_path / "t", [app, db], [DB, REG])
    assert sorted(p.name for p in written) == [
        "app-3f9c2e1a0b1c.inspect.json",
        "app-3f9c2e1a0b1c.log",
        "cdlab-stack_db_1.inspect.json",
        "cdlab-stack_db_1.log",
    ]
    for path in written:
        text = path.read_text()
        assert DB not in text and REG not in text and KEY_LINE not in text, path.name
    inspect = json.loads((tmp_path / "t" / "cdlab-stack_db_1.inspect.json").read_text())
    assert inspect["Config"]["Env"] == [f"POSTGRES_PASSWORD={MASK}"]
    app_env = json.loads((tmp_path / "t" / "app-3f9c2e1a0b1c.inspect.json").read_text())
    assert app_env["Config"]["Env"] == [
        f"DATABASE_URL=postgresql://app:{MASK}@db:5432/app",
        "SERVICE_NAME=app",
    ]
    log = (tmp_path / "t" / "app-3f9c2e1a0b1c.log").read_text()
    assert log == f"boot\nconnecting to postgresql://app:{MASK}@db/app\nlogin {MASK}\n"
    assert app.tails == [evidence.LOG_LINES]


def test_a_test_name_becomes_a_folder_name() -> None:
    assert evidence.folder_name("test_x[app-1.5/a b]") == "test_x_app-1.5_a_b_"


def test_a_failed_lab_tests_report_is_redacted_for_the_terminal_and_junit() -> None:
    from tests.conftest import redact_report

    said = f"assert env == {{'DATABASE_URL': 'postgresql://app:{DB}@db/app'}}"
    report = pytest.TestReport(
        "tests/e2e/test_x.py::test_env",
        ("tests/e2e/test_x.py", 1, "test_env"),
        {},
        "failed",
        said,
        "call",
        [("Captured stdout call", f"login {REG}\n")],
    )
    redact_report(report, (DB, REG))
    assert (
        report.longreprtext == f"assert env == {{'DATABASE_URL': 'postgresql://app:{MASK}@db/app'}}"
    )
    assert report.sections == [("Captured stdout call", f"login {MASK}\n")]
    plain = pytest.TestReport("t", ("t", 1, "t"), {}, "failed", "assert 1 == 2", "call", [])
    redact_report(plain, (DB,))
    assert plain.longrepr == "assert 1 == 2"
