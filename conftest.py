"""Project-wide pytest setup: a suite's marker follows from its folder."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

SUITES = {
    "unit": "unit",
    "integration": "integration",
    "e2e": "e2e",
    "load": "load",
    "fault": "fault",
    "multilab": "multilab",
    "cluster": "cluster",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.path)).parts
        for folder, marker in SUITES.items():
            if folder in parts:
                item.add_marker(getattr(pytest.mark, marker))


LOAD_REPORTS = Path(__file__).parent / "reports" / "load"


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STARTED] = time.time()
    _REPORTER.append(not hasattr(config, "workerinput"))  # xdist's workers report to it
    if not hasattr(config, "workerinput"):  # the run's id, for its workers too (inherited)
        from lab.proof import faultreport

        os.environ[faultreport.RUN] = uuid.uuid4().hex[:12]


_REPORTER: list[bool] = []  # whether this process writes the run's output


_STARTED = pytest.StashKey[float]()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """The load tests' counts, in the test command's own output (read from their reports,
    since xdist workers' prints never reach it)."""
    if hasattr(config, "workerinput"):
        return
    since = config.stash.get(_STARTED, 0.0)
    found = [
        json.loads(p.read_text())
        for p in sorted(LOAD_REPORTS.glob("*.summary.json"))
        if p.stat().st_mtime >= since
    ]
    if not found:
        return
    terminalreporter.section("cdlab: requests under load (pages in reports/load/)")
    for s in found:
        what = ", ".join(
            f"{k} {s[k]}"
            for k in ("deploys", "rollbacks", "lost", "control", "replayed")
            if k in s and (k != "replayed" or s[k])
        )
        terminalreporter.write_line(
            f"{s['name']}: {s['total']} requests in {s['seconds']} s "
            f"({s['achieved_rate']} req/s), failed {s['failed']}, longest gap "
            f"{s['longest_gap_ms']} ms, p99 {s['p99_ms']} ms" + (f"; {what}" if what else "")
        )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """A failure named the moment it happens, with its error's last line, not only in the
    summary at the end: a run cut short (a timeout, a killed job) still says what failed."""
    if not report.failed or not all(_REPORTER):
        return
    crash = getattr(report.longrepr, "reprcrash", None)
    text = getattr(crash, "message", "") or report.longreprtext.strip()
    reason = text.splitlines()[0][:300] if text else "(no message)"
    print(f"\nFAILED {report.nodeid} ({report.when}): {reason}", flush=True)


_BEFORE = pytest.StashKey[Any]()  # lab.proof.restore.Held: the live releases, pinned for the run


def pytest_sessionstart(session: pytest.Session) -> None:
    """The live release of each service, when the lab is up (read by the process that writes
    the run's output only), to put back at the end; the fault matrix's lines of earlier runs
    cleared when this run may run fault tests (a run of other suites leaves them: it may run
    beside one that does); with the lab up, the evidence of earlier runs' failed tests removed
    (``reports/evidence``: a run's evidence is of its own failures)."""
    _stop_as_ctrl_c_on(*_STOP_SIGNALS)  # the controller and each worker
    if hasattr(session.config, "workerinput") or session.config.option.collectonly:
        return
    from lab.proof import faultreport

    here = session.config.invocation_params.dir
    if faultreport.covers(session.config.args, here, Path(__file__).parent / "tests" / "fault"):
        faultreport.JSONL.unlink(missing_ok=True)
    lab = _lab_if_up()
    if lab is not None:
        import shutil

        from lab.proof import restore

        # evidence is of this run's failures only (an earlier version of cdlab did not redact)
        shutil.rmtree(Path(__file__).parent / "reports" / "evidence", ignore_errors=True)

        session.config.stash[_BEFORE] = restore.hold(lab)


STOPPED_LOG = Path(__file__).parent / "reports" / "stopped-run.log"
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _stop_as_ctrl_c_on(*signals: signal.Signals) -> None:
    """A run stopped by ``signals`` (a CI job's timeout, ``kill``, the terminal closed) ends as
    Ctrl-C ends it, in the controller and in each xdist worker: the tests stop (a release run
    undoes what it did; fixtures tear down), then the session's end still puts each service's
    live release back. A second signal kills. After SIGHUP the terminal is gone: the rest of the
    output goes to ``reports/stopped-run.log``, so that writing it cannot stop the put-back."""

    def stop(signum: int, frame: Any) -> None:
        for sig in signals:
            signal.signal(sig, signal.SIG_DFL)
        if signum == signal.SIGHUP:
            STOPPED_LOG.parent.mkdir(exist_ok=True)
            log = os.open(STOPPED_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(log, 1)
            os.dup2(log, 2)
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    for sig in signals:
        signal.signal(sig, stop)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The fault matrix's page from the rows this run recorded (``reports/faults.md``); each
    service's live release back to what it was before the run (a test's commit never stays
    live: after the test command the lab serves the checkout's commit again)."""
    if hasattr(session.config, "workerinput") or session.config.option.collectonly:
        return
    from lab.proof import faultreport

    rows = faultreport.write_page(os.environ.get(faultreport.RUN, ""))
    if rows:
        print(f"\ncdlab: the fault matrix ({rows} cases) in {faultreport.PAGE}", flush=True)
    before = session.config.stash.get(_BEFORE, None)
    if before is None or not before.live:
        return
    for sig in _STOP_SIGNALS:  # the put-back runs to its end (SIGKILL still stops it)
        signal.signal(sig, signal.SIG_IGN)
    lab = _lab_if_up()
    if lab is not None:
        from lab.proof import restore

        def say(line: str) -> None:
            print(f"\ncdlab: {line}", flush=True)

        try:
            restore.put_back(lab, before.live, say)
            restore.put_back_dev(lab, before, say)
        finally:
            restore.let_go(lab, before)


def _lab_if_up() -> Any:
    """The running lab (``Lab``), or None when there is none to read."""
    from lab import config
    from lab.errors import LabError
    from lab.estate.state import State
    from lab.ports.lab import Lab

    try:
        state = State(config.load())
        if not state.password_file.exists():
            return None
        socket.create_connection((state.config.host("prod").address, 2379), 1).close()
        lab = Lab(state)
        lab.etcd.get("/cdlab/routes/")
    except (LabError, OSError):
        return None
    return lab
