"""Signals while a release run works (lab/release/signals.py), with real signals sent to this
process, and the deploy lock's lease-loss callback (lab/release/lock.py) with a fake etcd."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.errors import LabError, Stop
from lab.ports.etcd import EtcdError, Fence
from lab.release import lock, signals

ROOT = Path(__file__).resolve().parents[2]
SIGNALS = [
    (signal.SIGINT, "SIGINT"),
    (signal.SIGTERM, "SIGTERM"),
    (signals.LEASE_SIGNAL, "a lost lock lease"),
]


def handlers() -> dict[int, object]:
    return {sig: signal.getsignal(sig) for sig in signals.NAMES}


def wait_until(done: Callable[[], bool], what: str, timeout: float = 2.0) -> None:
    """A bounded poll (interruptible: a signal's handler runs meanwhile)."""
    __tracebackhide__ = True
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        threading.Event().wait(0.005)


@pytest.fixture(autouse=True)
def handlers_kept() -> Iterator[None]:
    """Every test leaves the process's handlers as it found them."""
    before = handlers()
    yield
    assert handlers() == before


@pytest.mark.parametrize(("sig", "name"), SIGNALS)
def test_within_stoppable_a_signal_raises_stop(sig: int, name: str) -> None:
    with pytest.raises(Stop) as err, signals.stoppable():
        os.kill(os.getpid(), sig)
        wait_until(lambda: False, f"Stop after {name}")
    assert err.value.signal == name


@pytest.mark.parametrize(("sig", "name"), SIGNALS)
def test_within_deferred_a_signal_is_noted_not_raised(sig: int, name: str) -> None:
    said: list[str] = []
    with signals.stoppable(), signals.deferred(said.append) as seen:
        os.kill(os.getpid(), sig)
        wait_until(lambda: bool(seen), f"{name} noted")
        assert seen == [name]
    assert said == [f"    ({name} received: undoing what was done first; it takes seconds)"]


def test_after_deferred_the_outer_stoppable_raises_again() -> None:
    with pytest.raises(Stop) as err, signals.stoppable():
        with signals.deferred(lambda _: None) as seen:
            os.kill(os.getpid(), signal.SIGINT)
            wait_until(lambda: bool(seen), "SIGINT noted")
        os.kill(os.getpid(), signal.SIGTERM)
        wait_until(lambda: False, "Stop after SIGTERM")
    assert err.value.signal == "SIGTERM"


def test_out_of_the_main_thread_nothing_is_installed() -> None:
    seen: list[BaseException] = []

    def body() -> None:
        try:
            with signals.stoppable(), signals.deferred(lambda _: None):
                pass
        except BaseException as exc:  # signal.signal refuses other threads: it must not be called
            seen.append(exc)

    worker = threading.Thread(target=body)
    worker.start()
    worker.join(5)
    assert seen == []


@pytest.mark.parametrize("from_thread", [False, True])
def test_a_lost_lease_raises_stop_in_the_main_thread(from_thread: bool) -> None:
    with pytest.raises(Stop) as err, signals.stoppable():
        if from_thread:  # as the lock's keeper does
            threading.Thread(target=signals.lease_lost).start()
        else:
            signals.lease_lost()
        wait_until(lambda: False, "Stop after a lost lease")
    assert err.value.signal == "a lost lock lease"


@pytest.mark.parametrize(
    "code",
    [
        "signals.lease_lost()",
        "t = threading.Thread(target=signals.lease_lost); t.start(); t.join()",
    ],
)
def test_a_lost_lease_outside_a_run_does_not_kill_the_process(code: str) -> None:
    # SIGUSR1's default action ends the process: the guard must not send it then (a process
    # of its own, so that a broken guard kills that one, not the test run)
    script = (
        "import signal, threading\n"
        "from lab.release import signals\n"
        "assert signal.getsignal(signals.LEASE_SIGNAL) == signal.SIG_DFL\n"
        f"{code}\n"
        "print('alive')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (0, "alive\n"), done.stderr


# The deploy lock's lease


class FakeEtcd:
    """The lock's calls on etcd, in memory; ``keepalive`` answers as told."""

    def __init__(self, keepalive: Callable[[], int]) -> None:
        self.kv: dict[str, bytes] = {}
        self.revoked: list[str] = []
        self.renewals = 0
        self._keepalive = keepalive

    def grant(self, ttl: float) -> str:
        return "7587"

    def create(self, key: str, value: bytes, lease: str) -> Fence | bytes:
        if key in self.kv:
            return self.kv[key]
        self.kv[key] = value
        return Fence(key, 41)

    def keepalive(self, lease: str) -> int:
        self.renewals += 1
        return self._keepalive()

    def revoke(self, lease: str) -> None:
        self.revoked.append(lease)
        self.kv.clear()  # the key bound to the lease goes with it


def expired() -> int:
    return 0


def unreachable() -> int:
    raise EtcdError("renew a lease", "http://prod:2379", "connection refused")


def broken() -> int:
    raise ValueError("not JSON")  # e.g. a gateway's garbled answer


def renewed() -> int:
    return 20


@pytest.fixture
def short_ttl(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(lock, "TTL", 0.2)
    return 0.2


@pytest.mark.parametrize(
    ("keepalive", "at_least"),
    [
        (expired, 0.0),  # etcd says the lease is gone: at the first renewal
        (unreachable, 1.0),  # no renewal for the TTL: a blip does not count before
        (broken, 1.0),  # whatever the error, no renewal for the TTL
    ],
)
def test_a_lost_lease_calls_back_once(
    short_ttl: float, keepalive: Callable[[], int], at_least: float
) -> None:
    etcd = FakeEtcd(keepalive)
    lost: list[float] = []
    started = time.monotonic()
    with lock.held(etcd, "deploy app bbbbbbbbbbbb", lambda: lost.append(time.monotonic())):
        assert lock.KEY in etcd.kv
        wait_until(lambda: bool(lost), "on_lost", timeout=10 * short_ttl)
        renewals = etcd.renewals
        threading.Event().wait(short_ttl)  # the keeper has stopped: no more renewals or calls
        assert (len(lost), etcd.renewals) == (1, renewals)
    assert lost[0] - started >= at_least * short_ttl
    assert etcd.revoked == ["7587"] and lock.KEY not in etcd.kv


def test_a_renewed_lease_never_calls_back(short_ttl: float) -> None:
    etcd = FakeEtcd(renewed)
    lost: list[float] = []
    with lock.held(etcd, "deploy app bbbbbbbbbbbb", lambda: lost.append(0.0)):
        wait_until(lambda: etcd.renewals >= 4, "four renewals", timeout=10 * short_ttl)
    assert lost == []
    assert etcd.revoked == ["7587"]


def test_a_lost_lease_stops_the_run_in_the_main_thread(short_ttl: float) -> None:
    etcd = FakeEtcd(expired)
    with (
        pytest.raises(Stop) as err,
        signals.stoppable(),
        lock.held(etcd, "deploy app bbbbbbbbbbbb", signals.lease_lost),
    ):
        wait_until(lambda: False, "Stop after the lease expired", timeout=10 * short_ttl)
    assert err.value.signal == "a lost lock lease"
    assert etcd.revoked == ["7587"]


def test_a_held_lock_is_refused_and_its_lease_revoked(short_ttl: float) -> None:
    etcd = FakeEtcd(renewed)
    etcd.kv[lock.KEY] = b'{"who": "ada@ws", "pid": 42, "since": "t", "what": "deploy app x"}'
    with pytest.raises(lock.LockHeld, match="ada@ws"), lock.held(etcd, "deploy app y"):
        pytest.fail("the lock was taken twice")
    assert etcd.revoked == ["7587"]
    assert isinstance(lock.LockHeld(None, b"x", lock.TTL), LabError)
