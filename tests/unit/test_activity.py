"""The stage a release run is at, for ``invoke watch``: published from the board's own thread
on a lease of its own, gone when the run ends, and a slow or unreachable store never delays
nor fails the run."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from lab.errors import EtcdError
from lab.progress import Progress
from lab.release import activity


class LeaseStore:
    """Keys bound to leases; revoking a lease deletes its keys. ``down``: every call fails;
    ``slow``: every call takes that long."""

    def __init__(self, down: bool = False, slow: float = 0.0) -> None:
        self.kv: dict[str, tuple[bytes, str | None]] = {}
        self.leases: set[str] = set()
        self.down, self.slow, self.lock = down, slow, threading.Lock()
        self.calls = 0

    def _call(self) -> None:
        self.calls += 1
        time.sleep(self.slow)
        if self.down:
            raise EtcdError("write", "https://prod:2379", "connection refused")

    def grant(self, ttl: int) -> str:
        self._call()
        with self.lock:
            lease = str(len(self.leases) + 1)
            self.leases.add(lease)
        return lease

    def keepalive(self, lease: str) -> int:
        self._call()
        return activity.TTL if lease in self.leases else 0

    def revoke(self, lease: str) -> None:
        self._call()
        with self.lock:
            self.leases.discard(lease)
            self.kv = {k: v for k, v in self.kv.items() if v[1] != lease}

    def put(self, key: str, value: bytes, fence: Any = None, lease: str | None = None) -> None:
        self._call()
        with self.lock:
            self.kv[key] = (value, lease)

    def get_prefix(self, prefix: str) -> dict[str, bytes]:
        with self.lock:
            return {k: v for k, (v, _) in self.kv.items() if k.startswith(prefix)}


def wait_for(check: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within 3 s"
        time.sleep(0.01)


def test_each_stage_is_published_and_the_line_goes_with_the_run() -> None:
    store, progress = LeaseStore(), Progress(out=None)
    with activity.board(store, "deploy app 3f9c2e1a0b1c", progress):
        wait_for(lambda: activity.current(store))
        assert activity.current(store)[0].stage == ""  # the run shows before its first stage
        progress.plan(["build", "switch"])
        with progress.stage("build the image", "build"):
            pass
        with progress.stage("switch the proxy", "switch"):
            wait_for(lambda: activity.current(store)[0].stage == "[2/2] switch the proxy")
        (now,) = activity.current(store)
        assert now.what == "deploy app 3f9c2e1a0b1c" and "@" in now.by
    wait_for(lambda: not activity.current(store))  # revoked: the key went with its lease
    assert progress.watchers == []


@pytest.mark.parametrize("store", [LeaseStore(down=True), LeaseStore(slow=2.0)])
def test_a_store_that_is_gone_or_slow_costs_the_run_nothing(store: LeaseStore) -> None:
    progress = Progress(out=None)
    started = time.monotonic()
    with (
        activity.board(store, "rollback app to 3f9c2e1a0b1c", progress),
        progress.stage("switch the proxy", "switch"),
    ):
        pass
    assert time.monotonic() - started < 0.5
    assert progress.stages[0].status == "changed"


def test_values_of_another_shape_are_skipped_and_runs_come_oldest_first() -> None:
    store = LeaseStore()
    line = {"what": "deploy app b", "stage": "[1/9] checks", "since": 20.0, "by": "u@h (1)"}
    store.put(activity.PREFIX + "x", json.dumps(line).encode())
    store.put(activity.PREFIX + "y", json.dumps({**line, "since": 10.0, "what": "a"}).encode())
    store.put(activity.PREFIX + "z", b"not json")
    store.put(activity.PREFIX + "w", json.dumps({"what": "no stage"}).encode())
    assert [a.what for a in activity.current(store)] == ["a", "deploy app b"]
    assert activity.age(activity.current(store)[0], now=25.0) == "15 s"
    assert activity.age(activity.current(store)[0], now=10.0 + 600) == "10 min"


class FlakyStore(LeaseStore):
    """Its first write fails (etcd busy for a moment), the next ones succeed."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    def put(self, key: str, value: bytes, fence: Any = None, lease: str | None = None) -> None:
        if self.failures:
            self.failures -= 1
            raise EtcdError("write", "https://prod:2379", "timed out")
        super().put(key, value, fence, lease)


def test_a_write_that_failed_is_made_again_without_waiting_for_the_next_stage() -> None:
    store, progress = FlakyStore(), Progress(out=None)
    with activity.board(store, "deploy app 3f9c2e1a0b1c", progress):
        wait_for(lambda: activity.current(store))  # within 3 s, not at the next stage
    wait_for(lambda: not activity.current(store))
