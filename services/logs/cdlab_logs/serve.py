"""The receiver: syslog datagrams on UDP into the store (Docker's, one message each; the
proxy's request lines, in batches: ``proxy``), and the probe that ``check`` sends.

A probe is a datagram ``cdlab-logs probe <nonce>`` (padded); the receiver answers from its
own loop, so an answer means datagrams are being read and handled, not only that the port is
bound: ``cdlab-logs ok <nonce>``, or ``cdlab-logs error <nonce> <why>`` when the store cannot
be written (its last write failed, or its folder is not writable). An answer is never longer
than the probe it answers.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from . import proxy, syslog
from .config import Settings
from .store import Store

PROBE, OK, ERROR = b"cdlab-logs probe ", b"cdlab-logs ok ", b"cdlab-logs error "
PROBE_SIZE = 512  # bytes a probe is padded to: room for the answer's reason
MAX_DATAGRAM = 65535
RECEIVE_BUFFER = 4 * 1024 * 1024  # a burst of lines waits here (the kernel may cap it)


FLUSH_S = 0.05  # stored lines reach their files at most this late


def log(message: str) -> None:
    print(f"cdlab-logs: {message}", file=sys.stderr, flush=True)


class Receiver:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings, self.store = settings, store
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            self.sock.bind((settings.listen, settings.port))
        except OSError:
            self.sock.close()
            raise
        self.sock.settimeout(FLUSH_S)  # how soon a stop is seen, and lines reach their files
        self.lines = 0
        self.failure = ""  # why the last line could not be stored ("" once one is)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def run(self, stop: threading.Event) -> None:
        """Receive until ``stop`` is set; one bad datagram or failed write never ends it.
        Stored lines reach their files within ``FLUSH_S``."""
        flushed = time.monotonic()
        while not stop.is_set():
            if time.monotonic() - flushed >= FLUSH_S:
                self._flush()
                flushed = time.monotonic()
            try:
                data, peer = self.sock.recvfrom(MAX_DATAGRAM)
            except TimeoutError:
                continue
            except OSError as exc:  # e.g. ICMP errors reported on a UDP socket
                log(f"receive failed: {exc}")
                continue
            try:
                if data.startswith(PROBE):
                    self._answer(data, peer)
                else:
                    self.handle(data, peer[0])
            except Exception as exc:  # a defect: said, and the next datagram is read
                log(f"a datagram from {peer[0]} was not handled: {type(exc).__name__}: {exc}")

    def _flush(self) -> None:
        try:
            self.store.flush()
        except OSError as exc:
            failure = f"could not write lines to their files: {exc}"
            if failure != self.failure:
                log(failure)
            self.failure = failure

    def handle(self, data: bytes, peer: str) -> None:
        """One datagram: a batch of the proxy's request lines (``proxy``), a message (Docker's,
        ended by a newline), or several, one a line (the proxy's, as it sent them before)."""
        if proxy.is_batch(data):
            self._handle_batch(data, peer)
            return
        for part in data.split(b"\n"):
            if part.strip():
                message = syslog.parse(part)
                add = partial(self.store.add, message.tag, message.host or peer, message.line)
                self._stored(message.tag, 1, add)

    def _handle_batch(self, data: bytes, peer: str) -> None:
        batch = proxy.parse(data)
        host, first = batch.host or peer, self.store.times(batch.size)
        for (service, release), lines in batch.lines.items():
            times = [first + place for place in batch.places[(service, release)]]
            add = partial(self.store.add_proxy_lines, service, release, host, lines, times)
            self._stored(proxy.tag(service, release), len(lines), add)
        for line in batch.others:  # not a request line: as an untagged message
            self._stored("", 1, partial(self.store.add, "", host, line.decode(errors="replace")))

    def _stored(self, tag: str, lines: int, add: Callable[[], object]) -> None:
        """``add`` ``lines`` lines tagged ``tag``; a failure is said once, not once a line."""
        try:
            add()
        except (OSError, ValueError) as exc:
            failure = f"could not store a line tagged {tag!r}: {exc}"
            if failure != self.failure:
                log(failure)
            self.failure = failure
        else:
            self.lines += lines
            self.failure = ""

    def health(self) -> str:
        """Why lines cannot be stored now; "" when they can."""
        root = self.store.root
        if self.failure:
            return self.failure
        if root.exists() and not os.access(root, os.W_OK):
            return f"the store's folder {root} is not writable by uid {os.getuid()}"
        return ""

    def _answer(self, probe: bytes, peer: tuple[str, int]) -> None:
        nonce = probe[len(PROBE) :].split(b" ", 1)[0]
        why = self.health()
        answer = OK + nonce if not why else ERROR + nonce + b" " + why.encode()
        try:
            self.sock.sendto(answer[: len(probe)], peer)
        except OSError as exc:
            log(f"could not answer a probe from {peer[0]}: {exc}")

    def close(self) -> None:
        self.sock.close()
        self.store.close()


def serve(settings: Settings, stop: threading.Event) -> None:
    """Receive into the store until ``stop`` is set."""
    os.umask(0o027)
    # lines written in batches, each within FLUSH_S: at the proxy's busiest, thousands of
    # lines a second would each be a write(2)
    store = Store(Path(settings.root), settings.limits, buffer_bytes=1 << 16)
    receiver = Receiver(settings, store)
    mb = 1024 * 1024
    log(
        f"receiving syslog on udp {settings.listen}:{receiver.port} into {settings.root} "
        f"(a file up to {settings.limits.file_bytes / mb:g} MB, "
        f"{settings.limits.total_bytes / mb:g} MB in all)"
    )
    try:
        receiver.run(stop)
    finally:
        receiver.close()
        log(f"stopped after storing {receiver.lines} lines")


def check(address: tuple[str, int], timeout: float = 3.0, tries: int = 3) -> str:
    """Probe the receiver at ``address``: what went wrong, or "" when it answered that it
    stores lines. A datagram may be lost: up to ``tries`` probes share ``timeout``."""
    nonce = secrets.token_hex(8).encode()
    probe = (PROBE + nonce + b" ").ljust(PROBE_SIZE, b".")
    last = "no answer"
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(tries):
            try:
                sock.sendto(probe, address)
            except OSError as exc:
                return f"could not send a probe to udp {address[0]}:{address[1]}: {exc}"
            sock.settimeout(max(0.05, min(timeout / tries, deadline - time.monotonic())))
            try:
                while True:
                    answer = sock.recv(PROBE_SIZE)
                    if answer == OK + nonce:
                        return ""
                    if answer.startswith(ERROR + nonce):
                        return answer[len(ERROR + nonce) + 1 :].decode(errors="replace")
            except TimeoutError:
                last = "no answer"
            except OSError as exc:  # refused: nothing bound there
                last = str(exc)
    return f"the log store at udp {address[0]}:{address[1]} did not answer a probe ({last})"
