"""Signals while a release run works: SIGINT, SIGTERM and a lost lock lease become ``Stop`` in
the main thread (so the run's undo can run), and are held back while that undo runs."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from lab.errors import Stop

LEASE_SIGNAL = signal.SIGUSR1  # sent to the main thread by the lock's keeper when the lease is lost
NAMES: dict[int, str] = {
    signal.SIGINT: "SIGINT",
    signal.SIGTERM: "SIGTERM",
    signal.SIGHUP: "SIGHUP",  # the terminal closed (an SSH session ended)
    LEASE_SIGNAL: "a lost lock lease",
}


def _main() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def _handlers(handler: Callable[[int, FrameType | None], Any]) -> Iterator[None]:
    if not _main():  # signals reach the main thread only: elsewhere, nothing to install
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in NAMES}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def stoppable() -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and a lost lease raise ``Stop`` (once)."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise Stop(NAMES.get(signum, f"signal {signum}"))

    with _handlers(stop):
        yield


@contextmanager
def deferred(
    say: Callable[[str], None], doing: str = "undoing what was done first"
) -> Iterator[list[str]]:
    """Within the block the signals are noted, not raised (an undo runs to its end); a note of
    them is yielded. The process then goes on as the caller decides. ``doing``: what the
    block does meanwhile, as the note says it."""
    seen: list[str] = []

    def note(signum: int, frame: FrameType | None) -> None:
        seen.append(NAMES.get(signum, f"signal {signum}"))
        say(f"    ({seen[-1]} received: {doing}; it takes seconds)")

    with _handlers(note):
        yield seen


def lease_lost() -> None:
    """Tell the main thread the lock's lease is gone (called from the lock's keeper thread)."""
    main = threading.main_thread().ident
    if main is not None and signal.getsignal(LEASE_SIGNAL) not in (signal.SIG_DFL, None):
        signal.pthread_kill(main, LEASE_SIGNAL)
