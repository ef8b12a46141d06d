"""One deploy at a time: a lock in etcd bound to a lease.

The holder renews the lease while it works; a run that crashes stops renewing, and the lock
expires with the lease (``TTL`` seconds). ``invoke lock.release`` removes it by hand.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from lab.errors import LockHeld as LockHeld  # its home before lab.errors held every error
from lab.ports.etcd import Etcd

KEY = "/cdlab/locks/deploy"
TTL = 20


@dataclass(frozen=True)
class Holder:
    who: str
    pid: int
    since: str  # ISO time
    what: str  # e.g. "deploy app 3f9c2e1a0b1c"

    @classmethod
    def me(cls, what: str) -> Holder:
        who = f"{getpass.getuser()}@{socket.gethostname()}"
        return cls(who, os.getpid(), dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), what)


def parse_holder(raw: bytes) -> Holder | None:
    try:
        doc: dict[str, Any] = json.loads(raw)
        return Holder(str(doc["who"]), int(doc["pid"]), str(doc["since"]), str(doc["what"]))
    except (ValueError, KeyError, TypeError):
        return None


@contextmanager
def held(etcd: Etcd, what: str, on_lost: Callable[[], None] | None = None) -> Iterator[Holder]:
    """Hold the deploy lock for the ``with`` body, renewing its lease; ``LockHeld`` if taken.
    ``on_lost`` is called (once, from the renewing thread) when the lease is gone: etcd says
    it expired, or no renewal succeeded for ``TTL`` seconds."""
    me = Holder.me(what)
    lease = etcd.grant(TTL)
    existing = etcd.create(KEY, json.dumps(me.__dict__).encode(), lease)
    if existing is not None:
        etcd.revoke(lease)
        raise LockHeld(parse_holder(existing), existing, TTL)
    stop = threading.Event()

    def renew() -> None:
        renewed = time.monotonic()
        while not stop.wait(TTL / 4):
            try:
                alive = etcd.keepalive(lease) > 0
                renewed = time.monotonic() if alive else 0.0
            except Exception:  # any failure (not only LabError) is a blip, unless it lasts the TTL
                alive = time.monotonic() - renewed < TTL
            if not alive and not stop.is_set():
                if on_lost is not None:
                    on_lost()
                return

    thread = threading.Thread(target=renew, daemon=True, name="deploy-lock")
    thread.start()
    try:
        yield me
    finally:
        stop.set()
        thread.join(2)
        etcd.revoke(lease)  # deletes the key bound to it


def current(etcd: Etcd) -> Holder | None:
    raw = etcd.get(KEY)
    return parse_holder(raw) if raw else None


def release(etcd: Etcd) -> Holder | None:
    """Remove the lock whoever holds it; returns who held it."""
    holder = current(etcd)
    etcd.delete(KEY)
    return holder
