"""The edge's I/O: the request lines of every HAProxy in, figures per release per second out to
carbon, and each line on to the lab's log store (see ``edge`` for what is counted).

Nothing here may slow a request down or stop the proxy: HAProxy writes its lines to a datagram
socket and never waits; carbon or the log store being away only costs their copies (carbon's
are kept a little while, up to ``BACKLOG`` lines, and sent when it is back).
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


_stamp: tuple[int, str] = (-1, "")  # the last second formatted (thousands of lines each)


def syslog_line(line: str, req: edge.Request, host: str, now: float) -> bytes:
    """A request line as an RFC 5424 message tagged ``<service>/<release>/proxy`` (local0.info),
    the tag the log store files by."""
    global _stamp
    second = int(now)
    if _stamp[0] != second:
        _stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    micros = min(999999, int((now - second) * 1_000_000))
    tag = f"{req.service}/{req.release}/proxy"
    return f"<134>1 {_stamp[1]}.{micros:06d}Z {host} {tag} - - - {line}".encode()


class _Forward:
    """Request lines on their way to the log store: batched, one line each, into datagrams of
    up to ``BATCH_BYTES`` sent at least every ``BATCH_S`` (the store splits them), over a UDP
    socket connected to the store's current address. An error costs that batch only."""

    BATCH_BYTES = 32_000
    BATCH_S = 0.05

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.to: tuple[str, int] | None = None
        self.lock = threading.Lock()
        self.batch: list[bytes] = []
        self.size, self.since = 0, time.monotonic()

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        with self.lock:
            if self.size + len(data) + 1 > self.BATCH_BYTES:
                self._flush(to)
            self.batch.append(data)
            self.size += len(data) + 1
            if time.monotonic() - self.since >= self.BATCH_S:
                self._flush(to)

    def flush(self, to: tuple[str, int] | None) -> None:
        with self.lock:
            self._flush(to)

    def _flush(self, to: tuple[str, int] | None) -> None:
        batch, self.batch, self.size, self.since = self.batch, [], 0, time.monotonic()
        if not batch or to is None:
            return
        try:
            if to != self.to:
                self.sock.connect(to)
                self.to = to
            self.sock.send(b"\n".join(batch))
        except OSError:  # the store away (ICMP refused), or its address changing
            self.to = None


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
        self.forward = _Forward()  # to the log store

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
        with conn, conn.makefile("rb") as lines:
            for raw in lines:
                try:
                    self._one(raw, self.forward)
                except Exception as exc:  # a bad line never stops the counting
                    self._note(f"edge figures: a line not counted: {type(exc).__name__}: {exc}")

    def _one(self, raw: bytes, out: _Forward) -> None:
        now = time.time()
        line = raw.decode(errors="replace").rstrip("\n")
        req = edge.parse(line)
        if req is None:
            self.unparsed += 1
            return
        self.received += 1
        with self.lock:
            self.window.add(req, now)
        store = self.store.get()
        if store is not None:
            out.send(syslog_line(line, req, self.host, now), store)

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
