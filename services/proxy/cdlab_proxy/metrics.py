"""The edge's I/O: the request lines of every HAProxy in, figures per release per second out to
carbon, and each line on to the lab's log store (see ``edge`` for what is counted).

Nothing here may slow a request down or stop the proxy: HAProxy writes its lines into a ring
that it sends on over TCP and never waits; carbon or the log store being away only costs their
copies (carbon's are kept a little while, up to ``BACKLOG`` lines, and sent when it is back).

Thousands of lines a second, on the proxy's cores: a ring's connection is read at most every
``READ_EVERY`` (each wake-up costs more than a line), every line of a read counted at one
clock reading under one lock, and passed on to the log store as it came, in batches::

    cdlab-edge-batch <host>\\n       one UDP datagram of at most BATCH_BYTES: this header,
    <request line>\\n                then HAProxy's lines (edge.LOG_FORMAT) whole, in order;
    <request line>\\n                the store files each by its service and release (its
    ...                             2nd and 3rd words), from <host> (cdlab_logs.proxy)
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping

from . import edge
from .haproxy import Process

BACKLOG = 200_000  # carbon lines kept while carbon is away (about 5 min of 20 releases)
RESOLVE_EVERY = 10.0  # seconds a looked-up address of carbon or the log store is trusted
READ_EVERY = 0.05  # seconds between two reads of a ring's connection (its lines wait there)
READ_BYTES = 1 << 18  # at most this much a read
MAX_LINE = 1 << 16  # bytes of a line without its end kept waiting for the rest (HAProxy: 1024)
BATCH_HEADER = b"cdlab-edge-batch "  # the log store's cdlab_logs.proxy.HEADER
Processes = Callable[[], Mapping[str, Process]]


def _address(target: str) -> tuple[str, int] | None:
    host, _, port = target.rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


class _Resolved:
    """``host:port`` looked up again at most every ``RESOLVE_EVERY`` seconds (a container
    restarted elsewhere has a new address)."""

    def __init__(self, target: str) -> None:
        self.target, self.at = _address(target), 0.0
        self.addr: tuple[str, int] | None = None

    def get(self) -> tuple[str, int] | None:
        if self.target is None:
            return None
        if time.monotonic() - self.at > RESOLVE_EVERY:
            self.at = time.monotonic()
            try:
                self.addr = (socket.gethostbyname(self.target[0]), self.target[1])
            except OSError:
                self.addr = None
        return self.addr


class _Forward:
    """Request lines on their way to the log store: batched into datagrams of up to
    ``BATCH_BYTES`` (a header naming ``host``, then whole lines), sent at least every
    ``BATCH_S``, over a UDP socket connected to the store's current address. An error costs
    that batch only."""

    BATCH_BYTES = 32_000
    BATCH_S = 0.1

    def __init__(self, host: str = "") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.to: tuple[str, int] | None = None
        self.lock = threading.Lock()
        self.header = BATCH_HEADER + host.encode() + b"\n"
        self.batch = bytearray()  # whole lines, each ended by a newline
        self.since = time.monotonic()

    def send(self, lines: bytes, to: tuple[str, int]) -> None:
        """``lines``: one or more whole lines, each but the last ended by a newline."""
        with self.lock:
            self.batch += lines
            self.batch += b"\n"
            full = len(self.header) + len(self.batch) >= self.BATCH_BYTES
            if full or time.monotonic() - self.since >= self.BATCH_S:
                self._flush(to)

    def flush(self, to: tuple[str, int] | None) -> None:
        with self.lock:
            self._flush(to)

    def _flush(self, to: tuple[str, int] | None) -> None:
        batch, self.batch, self.since = self.batch, bytearray(), time.monotonic()
        if not batch or to is None:
            return
        view, room, start = memoryview(batch), self.BATCH_BYTES - len(self.header), 0
        try:
            if to != self.to:
                self.sock.connect(to)
                self.to = to
            while start < len(batch):
                end = batch.rfind(b"\n", start, start + room) + 1  # the lines that fit
                if end <= start:  # a line longer than that: alone, as long as it is
                    end = batch.find(b"\n", start) + 1 or len(batch)
                self.sock.sendmsg([self.header, view[start:end]])
                start = end
        except OSError:  # the store away (ICMP refused), or its address changing
            self.to = None
        finally:
            view.release()


class EdgeMetrics:
    def __init__(
        self,
        listen: str,
        carbon: str,
        log_store: str,
        processes: Processes,
        release_map: Callable[[str], str],
        say: Callable[[str], None],
        host: str = "prod",
    ) -> None:
        self.listen, self.processes, self.release_map = listen, processes, release_map
        self.say = say
        self.carbon, self.store, self.host = _Resolved(carbon), _Resolved(log_store), host
        self.window = edge.Window()
        self.lock = threading.Lock()
        self.pending: deque[str] = deque(maxlen=BACKLOG)
        # by service: the pid of its process and its wredis counters at the last reading
        self.counters: dict[str, tuple[int, dict[tuple[str, str], int]]] = {}
        self.received = self.unparsed = self.sent = 0
        self._conn: socket.socket | None = None
        self._said = ""
        self.forward = _Forward(host)  # to the log store

    def start(self) -> None:
        """Listen for the HAProxy processes' rings (one connection each, newline-ended lines;
        HAProxy connects again whenever a connection ends), and send figures every second."""
        addr = _address(self.listen)
        if addr is None:
            raise ValueError(f"the edge's address {self.listen!r}: expected host:port")
        server = socket.create_server(addr, backlog=64)
        threading.Thread(target=self._accept, args=(server,), daemon=True, name="edge").start()
        threading.Thread(target=self._flush_forever, daemon=True, name="edge-flush").start()

    # -- in: one line per request -------------------------------------------------------------

    def _accept(self, server: socket.socket) -> None:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=self._receive, args=(conn,), daemon=True, name="ring").start()

    def _receive(self, conn: socket.socket) -> None:
        tail = b""  # the start of a line whose end has not come yet
        read = time.time()
        with conn:
            while True:
                asked = time.time()
                try:
                    data = conn.recv(READ_BYTES)
                except OSError:  # reset: a process ending (the lines it sent were read first)
                    data = b""
                # lines that were waiting came in since the last read: counted at the middle
                # of that time (the second most of them came in), not READ_EVERY late
                now = time.time()
                at, read = now if now - asked > 0.001 else (read + asked) / 2, now
                if not data:  # closed: a last line without its newline is a line still
                    if tail:
                        self._lines(tail, at)
                    return
                end = data.rfind(b"\n")
                if end < 0:
                    tail += data
                    if len(tail) > MAX_LINE:  # not a line HAProxy sends: dropped
                        with self.lock:
                            self.unparsed += 1
                        tail = b""
                    continue
                block, tail = tail + data[:end], data[end + 1 :]
                self._lines(block, at)
                if len(data) < READ_BYTES:  # all read: let the next lines gather
                    time.sleep(READ_EVERY)

    def _lines(self, block: bytes, now: float) -> None:
        """Count the request lines of ``block`` (whole lines, newline-separated) at ``now``
        and pass them on to the log store; anything else is only counted as unparsed."""
        try:
            lines = block.decode(errors="replace").split("\n")
            with self.lock:
                skipped = self.window.add_lines(lines, now)
                self.received += len(lines) - len(skipped)
                self.unparsed += len(skipped)
            store = self.store.get()
            if store is None or len(skipped) == len(lines):
                return
            if skipped:
                unparsed = set(skipped)
                block = "\n".join(line for line in lines if line not in unparsed).encode()
            self.forward.send(block, store)
        except Exception as exc:  # a defect: said, and the next lines are counted
            self._note(f"edge figures: lines not counted: {type(exc).__name__}: {exc}")

    # -- out: every second --------------------------------------------------------------------

    def _flush_forever(self) -> None:
        while True:
            # just after each second's grace: its figures go out 1.35 s after it began
            time.sleep(1.0 - (time.time() % 1.0) + edge.GRACE + 0.05)
            try:
                self.flush(time.time())
            except Exception as exc:  # never let a bad second stop the figures
                self._note(f"edge figures: {type(exc).__name__}: {exc}")

    def flush(self, now: float) -> None:
        redispatched: dict[tuple[str, str], int] = {}
        for service, proc in self.processes().items():
            for release, n in self._redispatched(service, proc).items():
                redispatched[(service, release)] = n
        with self.lock:
            self.window.add_redispatched(redispatched, now)
            self.pending.extend(self.window.flush(now))
        self.forward.flush(self.store.get())  # the last lines of a quiet moment
        self._send()

    def _redispatched(self, service: str, proc: Process) -> dict[str, int]:
        """Requests redispatched away from each of ``service``'s releases since the last call
        (HAProxy's per-server ``wredis``): failed there, served by another."""
        try:
            now = edge.stat_counters(proc.send("show stat", timeout=1.0))
            keys = proc.send(f"show map {self.release_map(service)}", timeout=1.0)
        except OSError:
            return {}
        releases = {}
        for line in keys.splitlines():
            words = line.split()
            if len(words) >= 3 and words[2] != "-":
                backend, _, server = words[1].partition("/")
                releases[(backend, server)] = words[2]
        # every process is started by the supervisor after this one: its counters, from zero
        # at its start, count from there (its first second's redispatches included)
        pid, before = self.counters.get(service, (proc.pid, {}))
        self.counters[service] = (proc.pid, now)
        return edge.stat_deltas(before if pid == proc.pid else {}, now, releases)

    def _send(self) -> None:
        if not self.pending:
            return
        if self.carbon.target is None:  # figures sent nowhere (settings)
            self.pending.clear()
            return
        addr = self.carbon.get()
        if addr is None:
            self._note("edge figures: carbon's name does not resolve; keeping them")
            return
        batch = list(self.pending)
        try:
            if self._conn is not None and select.select([self._conn], [], [], 0)[0]:
                # carbon never writes: readable is its end closed (restarted). Sending on would
                # succeed, into a connection it answers with a reset: the batch lost
                self._conn.close()
                self._conn = None
            if self._conn is None:
                self._conn = socket.create_connection(addr, timeout=2)
            self._conn.sendall(("\n".join(batch) + "\n").encode())
        except OSError as exc:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            self._note(f"edge figures: carbon at {addr[0]}:{addr[1]}: {exc}; keeping them")
            return
        for _ in batch:
            self.pending.popleft()
        self.sent += len(batch)
        if self._said:
            self.say("edge figures: carbon answers again")
            self._said = ""

    def _note(self, msg: str) -> None:
        if msg != self._said:
            self._said = msg
            self.say(msg)

    def status(self) -> dict[str, int]:
        return {
            "requests": self.received,
            "unparsed": self.unparsed,
            "carbon_lines_sent": self.sent,
            "carbon_lines_pending": len(self.pending),
        }
