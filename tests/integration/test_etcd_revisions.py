"""The route store's client (``lab.ports.etcd.Etcd``) over HTTP against the fake v3 JSON gateway:
revisions come back per key, records are ordered by them, and a record is never overwritten."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.ports.etcd import Etcd, Fence
from lab.release import records
from tests.integration.fakes import FakeEtcd


@pytest.fixture
def gateway() -> Iterator[FakeEtcd]:
    etcd = FakeEtcd()
    yield etcd
    etcd.shutdown()


def test_revisions_come_back_per_key_in_key_order(gateway: FakeEtcd) -> None:
    client = Etcd("127.0.0.1", gateway.port)
    client.put("/p/b", b"1")
    client.put("/p/a", b"2")
    client.put("/p/b", b"3")  # rewritten: created at 2, last written at 4 (a new store is at 1)
    client.put("/q/c", b"4")  # outside the prefix
    got = [
        (e.key, e.value, e.create_revision, e.mod_revision)
        for e in client.get_prefix_with_revisions("/p/")
    ]
    assert got == [("/p/a", b"2", 3, 3), ("/p/b", b"3", 2, 4)]
    assert client.get_prefix("/p/") == {"/p/a": b"2", "/p/b": b"3"}
    assert client.get_prefix_with_revisions("/none/") == []


def test_create_never_overwrites(gateway: FakeEtcd) -> None:
    client = Etcd("127.0.0.1", gateway.port)
    assert isinstance(client.create("/k", b"first"), Fence)
    assert client.create("/k", b"second") == b"first"
    (entry,) = client.get_prefix_with_revisions("/k")
    assert (entry.value, entry.create_revision, entry.mod_revision) == (b"first", 2, 2)


def _record(release: str, started: str, run: str) -> records.Record:
    return records.Record(
        "deploy", "app", release, None, "", "bluegreen", "t", started, 1.0, "succeeded", run=run
    )


def test_history_through_the_gateway_is_in_write_order_whatever_the_clocks(
    gateway: FakeEtcd, tmp_path: Path
) -> None:
    client = Etcd("127.0.0.1", gateway.port)
    # each run's clock 10 minutes behind the one before: key order and time order both reversed
    written = [
        _record("a", "2026-11-23T10:20:00+00:00", "run0000000a"),
        _record("b", "2026-11-23T10:10:00+00:00", "run0000000b"),
        _record("c", "2026-11-23T10:00:00+00:00", "run0000000c"),
    ]
    for rec in written:
        records.publish(client, rec)
    assert [r.release for r in records.history(tmp_path, "app", client)] == ["a", "b", "c"]
