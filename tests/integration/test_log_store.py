"""The log store for real: ``python3 -m cdlab_logs serve`` on a free 127.0.0.1 port with a
temporary folder, fed the datagrams a Docker 20.10 engine sent, read back with ``query``,
``query --follow`` and probed with ``check``.

What a user relies on: a release's lines are there at once, in order, by release; a follow
shows new lines and ends on a signal or when its reader goes away; the healthcheck fails when
the store cannot write or nothing answers; a stop ends the receiver cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import PIPE, CompletedProcess
from typing import IO, TypeVar

import pytest
from cdlab_logs.syslog import format_rfc5424micro

pytestmark = pytest.mark.xdist_group("log-store")  # one receiver, its tests in order
ROOT = Path(__file__).resolve().parents[2]
CAPTURED = json.loads((ROOT / "tests" / "unit" / "data" / "docker-syslog-20.10.json").read_text())


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


T = TypeVar("T")


def until(get: Callable[[], T], ok: Callable[[T], bool], what: str, timeout: float = 10.0) -> T:
    """``get()`` once ``ok`` says it is what is awaited; fails naming the last one got."""
    deadline = time.monotonic() + timeout
    while not ok(got := get()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s (last: {got!r})")
        time.sleep(0.05)
    return got


def _passed(done: CompletedProcess[str]) -> bool:
    return done.returncode == 0


def _failed(done: CompletedProcess[str]) -> bool:
    return done.returncode == 1


def _count(n: int) -> Callable[[list[str]], bool]:
    return lambda lines: len(lines) == n


@dataclass
class Running:
    port: int
    dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path

    def send(self, *datagrams: bytes) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for d in datagrams:
                s.sendto(d, ("127.0.0.1", self.port))

    def command(self, *args: str, timeout: float = 20) -> CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cdlab_logs", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def follow(self, *args: str, stdin: int | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "cdlab_logs", "query", "--follow", *args],
            env=self.env,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def query(self, *args: str) -> list[str]:
        done = self.command("query", *args)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()


def start(tmp: Path, name: str) -> Running:
    port = free_udp_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "services" / "logs"),
        "CDLAB_LOGS_DIR": str(tmp / name),
        "CDLAB_LOGS_PORT": str(port),
        "CDLAB_LOGS_LISTEN": "127.0.0.1",
    }
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cdlab_logs", "serve"], env=env, stdout=out, stderr=out
        )
    running = Running(port, tmp / name, env, process, log)
    until(lambda: running.command("check"), _passed, "the receiver answers its probe")
    return running


def stop(running: Running) -> int:
    running.process.send_signal(signal.SIGTERM)
    try:
        return running.process.wait(10)
    finally:
        if running.process.poll() is None:
            running.process.kill()
        print(f"\n--- the receiver's log ({running.log})\n" + running.log.read_text()[-3000:])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start(tmp_path_factory.mktemp("logs"), "store")
    try:
        yield running
    finally:
        stop(running)


def lines_of(process: subprocess.Popen[str], count: int, timeout: float = 10.0) -> list[str]:
    """``count`` lines of ``process``'s output, or fail naming what came."""
    got: list[str] = []
    stdout: IO[str] = process.stdout  # type: ignore[assignment]
    os.set_blocking(stdout.fileno(), False)
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        line = stdout.readline()
        if line:
            got.append(line.rstrip("\n"))
        else:
            time.sleep(0.02)
    assert len(got) == count, f"{count} lines within {timeout:.0f} s; got {got}"
    return got


def test_docker_s_datagrams_are_stored_by_release_and_read_back_in_order(store: Running) -> None:
    store.send(*(d.encode() for d in CAPTURED["rfc5424micro"]))
    store.send(format_rfc5424micro("app/4c5d6e/cdlab-app-4c5d6e-1", "the next release", "prod"))
    lines = until(lambda: store.query("--service", "app"), _count(6), "six lines of app")
    assert lines[-1].endswith(" prod cdlab-app-4c5d6e-1 4c5d6e the next release")
    assert {line.split(" ", 4)[3] for line in lines[:-1]} == {"3f2a1b"}
    release = store.query("--service", "app", "--release", "3f2a1b", "--json")
    docs = [json.loads(line) for line in release]
    assert sorted(d["line"] for d in docs) == sorted(
        ["an error", "hello from stdout", "tab\there é", "x" * 16384, "x" * 3616]
    )
    assert {(d["host"], d["container"]) for d in docs} == {("vm", "cdlab-app-3f2a1b-1")}
    assert [d["t"] for d in docs] == sorted(d["t"] for d in docs)
    assert (store.dir / "app" / "3f2a1b.log").exists()


def test_since_lines_and_a_service_without_logs(store: Running) -> None:
    time.sleep(1.1)  # the lines above are over a second old
    store.send(format_rfc5424micro("app/4c5d6e/cdlab-app-4c5d6e-1", "fresh", "prod"))
    recent = until(lambda: store.query("--service", "app", "--since", "1"), bool, "a fresh line")
    assert [line.rsplit(" ", 1)[1] for line in recent] == ["fresh"]
    assert store.query("--service", "app", "--lines", "2")[-1].endswith(" fresh")
    missing = store.command("query", "--service", "web")
    assert missing.returncode == 3 and missing.stdout == ""
    assert (
        "no logs for service 'web'" in missing.stderr and "app (3f2a1b, 4c5d6e)" in missing.stderr
    )


def test_a_hostile_tag_stays_in_the_store(store: Running) -> None:
    store.send(b"<30>Dec  1 04:10:00 prod ../../../escaped[1]: evil\n", b"just garbage")
    until(lambda: store.command("query", "--service", "_other"), _passed, "_other filled")
    other = until(lambda: store.query("--service", "_other"), _count(2), "two lines in _other")
    assert sorted(line.split(" ", 4)[3] for line in other) == ["_._.._.._escaped", "_untagged"]
    outside = [p for p in store.dir.parent.rglob("*escaped*") if store.dir not in p.parents]
    assert outside == []


def test_the_proxy_s_batches_are_read_back_by_service_and_release(store: Running) -> None:
    lines = [f"cdlab-edge shop {r} 200 {i} -- 0 GET /{i}" for i, r in enumerate("ab-ab")]
    store.send(b"cdlab-edge-batch prod\n" + "\n".join(lines).encode())
    # the format it replaced: one syslog message a line, still read
    store.send(b"<134>1 2026-12-01T04:10:00.1Z prod shop/a/proxy - - - cdlab-edge shop a 200 5")
    got = until(lambda: store.query("--service", "shop"), _count(6), "six lines of shop")
    assert [line.split(" ", 3)[1:] for line in got] == [
        ["prod", "proxy", f"{r} {line}"] for r, line in zip("ab-ab", lines, strict=True)
    ] + [["prod", "proxy", "a cdlab-edge shop a 200 5"]]
    docs = [
        json.loads(line) for line in store.query("--service", "shop", "--release", "-", "--json")
    ]
    assert [(d["service"], d["release"], d["container"], d["line"]) for d in docs] == [
        ("shop", "-", "proxy", lines[2])
    ]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_follow_shows_new_lines_and_ends_cleanly_on_a_signal(
    store: Running, sig: signal.Signals
) -> None:
    follower = store.follow("--service", "app", "--release", "4c5d6e", "--lines", "1")
    try:
        lines_of(follower, 1)  # it has read what is stored: what comes now is new
        for i in range(3):
            store.send(format_rfc5424micro("app/4c5d6e/c", f"followed {i}", "prod"))
        store.send(format_rfc5424micro("app/3f2a1b/c", "another release", "prod"))
        assert [line.rsplit(" ", 2)[1:] for line in lines_of(follower, 3)] == [
            ["followed", str(i)] for i in range(3)
        ]
        follower.send_signal(sig)
        assert follower.wait(5) == 0
    finally:
        if follower.poll() is None:
            follower.kill()


def test_follow_ends_when_its_reader_goes_away(store: Running) -> None:
    follower = store.follow("--service", "app", "--lines", "1", "--while-stdin-open", stdin=PIPE)
    try:
        lines_of(follower, 1)
        store.send(format_rfc5424micro("app/4c5d6e/c", "seen by a remote reader", "prod"))
        assert lines_of(follower, 1)[0].endswith(" seen by a remote reader")
        assert follower.stdin is not None
        follower.stdin.close()  # what the engine does when the workstation's connection ends
        assert follower.wait(5) == 0
    finally:
        if follower.poll() is None:
            follower.kill()


def test_check_fails_when_nothing_answers(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "services" / "logs")}
    env["CDLAB_LOGS_PORT"] = str(free_udp_port())
    done = subprocess.run(
        [sys.executable, "-m", "cdlab_logs", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 1
    assert "did not answer a probe" in done.stderr


def test_check_fails_when_the_store_cannot_write_and_recovers(tmp_path: Path) -> None:
    broken = start(tmp_path, "broken")
    try:
        broken.dir.mkdir(exist_ok=True)
        (broken.dir / "app").write_text("a file where a service's folder goes")
        broken.send(format_rfc5424micro("app/r1/c", "cannot be stored", "prod"))
        failed = until(lambda: broken.command("check"), _failed, "check fails")
        assert "could not store a line tagged 'app/r1/c'" in failed.stderr
        broken.send(format_rfc5424micro("quotes/q1/c", "can be stored", "prod"))
        until(lambda: broken.command("check"), _passed, "check passes again")
    finally:
        code = stop(broken)
    assert code == 0 and "stopped after storing 1 lines" in broken.log.read_text()
