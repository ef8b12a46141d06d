"""One deploy at a time: a lock in etcd bound to a lease.

The holder renews the lease while it works; a run that crashes stops renewing, and the lock
expires with the lease (``TTL`` seconds). ``invoke lock.release`` removes it by hand.

The holder's ``fence`` (the lock key's create revision: renewals keep it, a lock deleted and
taken again has another) guards the run's writes to the route store: a run whose lock is gone
or taken by another cannot write routes, whether or not it noticed the loss.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import getpass
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from lab.errors import LabError
from lab.errors import LockHeld as LockHeld  # its home before lab.errors held every error
from lab.ports.etcd import Etcd, Fence
from lab.release import signals

KEY = "/cdlab/locks/deploy"
TTL = 20


@dataclass(frozen=True)
class Holder:
    who: str
    pid: int
    since: str  # ISO time
    what: str  # e.g. "deploy app 3f9c2e1a0b1c"
    # while this process holds the lock: what guards its writes (None when read from the store)
    fence: Fence | None = field(default=None, compare=False)

    @classmethod
    def me(cls, what: str) -> Holder:
        who = f"{getpass.getuser()}@{socket.gethostname()}"
        return cls(who, os.getpid(), dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), what)

    def to_json(self) -> bytes:
        """The lock's stored value (what ``parse_holder`` reads)."""
        doc = {"who": self.who, "pid": self.pid, "since": self.since, "what": self.what}
        return json.dumps(doc).encode()


def parse_holder(raw: bytes) -> Holder | None:
    try:
        doc: dict[str, Any] = json.loads(raw)
        return Holder(str(doc["who"]), int(doc["pid"]), str(doc["since"]), str(doc["what"]))
    except (ValueError, KeyError, TypeError):
        return None


@contextmanager
def held(etcd: Etcd, what: str, on_lost: Callable[[], None] | None = None) -> Iterator[Holder]:
    """Hold the deploy lock for the ``with`` body, renewing its lease; ``LockHeld`` if taken.
    The holder yielded carries the lock's ``fence`` for the run's route writes. ``on_lost`` is
    called (once, from the renewing thread) when the lease is gone: etcd says it expired, or
    no renewal succeeded for ``TTL`` seconds."""
    me = Holder.me(what)
    lease = etcd.grant(TTL)
    try:
        created = etcd.create(KEY, me.to_json(), lease)
    except BaseException:  # a signal or an error mid-request: the key may exist; let it go
        _revoke(etcd, lease)
        raise
    if not isinstance(created, Fence):
        _revoke(etcd, lease)
        raise LockHeld(parse_holder(created), created, TTL)
    me = dataclasses.replace(me, fence=created)
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
        with signals.deferred(lambda text: None):  # a signal here must not keep the lock held
            stop.set()
            thread.join(2)
            _revoke(etcd, lease)  # deletes the key bound to it


def _revoke(etcd: Etcd, lease: str) -> None:
    """Revoke ``lease``; one already gone (expired, or etcd unreachable: why it was lost) is
    not an error of the run, whose own error must come through."""
    with contextlib.suppress(LabError):
        etcd.revoke(lease)


def current(etcd: Etcd) -> Holder | None:
    raw = etcd.get(KEY)
    return parse_holder(raw) if raw else None


def release(etcd: Etcd) -> Holder | None:
    """Remove the lock whoever holds it; returns who held it."""
    holder = current(etcd)
    etcd.delete(KEY)
    return holder
