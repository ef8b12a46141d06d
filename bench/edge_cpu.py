"""What one request line costs the proxy's supervisor and the log store, in CPU microseconds.

    nice -n 19 .venv/bin/python bench/edge_cpu.py [--lines 200000] [--repeat 3] [--json FILE]
        [--root CHECKOUT]   # another checkout's services/ (before and after a change)

No lab and no Docker: each component runs for real in a child process of its own, on
127.0.0.1 with ephemeral ports, and reports the CPU time (``time.process_time``: every thread,
user and system) it spent from just before the first line to just after the last one.

1. **supervisor**: a real ``EdgeMetrics`` (``cdlab_proxy.metrics``) reads realistic request
   lines (``edge.LOG_FORMAT``: 2 services, 3 releases each and no release at all, a mix of
   statuses, termination states, retries and latencies) over TCP, as from HAProxy's ring, and
   forwards them to a UDP socket of this process, which keeps the datagrams. Carbon is off
   (its cost is per second, not per line). Two ways of sending: ``bulk``, the lines as fast
   as TCP takes them (the supervisor reads big chunks: its cost at saturation), and ``paced``,
   one line per segment at 2,000 a second (the lab's rate; a ring whose reader keeps up
   forwards its lines as they come, and waking up to read one can cost more than the line).
2. **store**: a real ``Receiver`` with its ``Store`` (``cdlab_logs``), as ``serve`` builds
   them, in a temporary folder, is sent the datagrams the supervisor forwarded in step 1, in
   whatever format this checkout's supervisor sends them: ``bulk`` as fast as it takes them
   (at most a few in flight, so none is dropped), ``paced`` at the moments they came. Every
   line is checked to be in the store's files at the end.

A figure is the median of ``--repeat`` runs (each run's figure is printed too). The machine's
other work moves it: run it on a quiet machine, twice.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("app", "quotes")
RELEASES = {"app": ("3f9c2e1a0b1c", "7a1b2c3d4e5f", "c0ffee123456"), "quotes": ("q1", "q2", "q3")}
# (status, termination, retries, weight): mostly answered, some errors of every kind
OUTCOMES = (
    ("200", "--", "0", 800),
    ("304", "--", "0", 40),
    ("404", "--", "0", 40),
    ("500", "--", "0", 20),
    ("200", "--", "+1", 10),
    ("502", "SH", "3", 10),
    ("503", "SC", "3", 5),
    ("504", "sH", "0", 5),
    ("200", "CD", "0", 5),
    ("-1", "CD", "0", 5),
    ("400", "CR", "0", 5),
)
PATHS = ("/", "/version", "/api/users", "/api/users?page={n}", "/static/app.{n}.js", "/health")
MAX_IN_FLIGHT = 8  # datagrams sent to the store and not yet handled (its buffer holds them)


def request_lines(n: int, seed: int = 14) -> list[bytes]:
    """``n`` request lines as HAProxy writes them for ``edge.LOG_FORMAT`` (newline-ended)."""
    rng = random.Random(seed)
    weights = [w for *_, w in OUTCOMES]
    out = []
    for _ in range(n):
        service = rng.choice(SERVICES)
        status, term, retries, _ = rng.choices(OUTCOMES, weights)[0]
        release = "-" if term == "SC" else rng.choice(RELEASES[service])
        ms = -1 if status == "-1" and rng.random() < 0.5 else int(rng.lognormvariate(1.5, 1.0))
        method = "POST" if rng.random() < 0.1 else "GET"
        path = rng.choice(PATHS).format(n=rng.randrange(1000))
        out.append(
            f"cdlab-edge {service} {release} {status} {ms} {term} {retries} {method} {path}\n"
        )
    return [line.encode() for line in out]


# -- the children ------------------------------------------------------------------------------


def _serve_commands(status: Any, done: Any) -> None:
    """The child's side of the pipe: ``status`` and ``done`` lines in, one JSON line out each."""
    print(json.dumps({"ready": True}), flush=True)
    start = time.process_time()
    for command in sys.stdin:
        if command.strip() == "status":
            print(json.dumps(status()), flush=True)
        elif command.strip() == "done":
            done()
            print(json.dumps({"cpu": time.process_time() - start}), flush=True)
            return


def child_supervisor(root: Path, edge_port: int, store_port: int) -> None:
    sys.path.insert(0, str(root / "services" / "proxy"))
    from cdlab_proxy.metrics import EdgeMetrics

    said: list[str] = []
    m = EdgeMetrics(f"127.0.0.1:{edge_port}", "", f"127.0.0.1:{store_port}", dict, str, said.append)
    m.start()
    _serve_commands(lambda: {**m.status(), "said": said[-3:]}, lambda: m.flush(time.time()))


def child_store(root: Path, port: int, folder: str) -> None:
    sys.path.insert(0, str(root / "services" / "logs"))
    from cdlab_logs.config import Settings
    from cdlab_logs.serve import Receiver
    from cdlab_logs.store import Store

    settings = Settings(port=port, listen="127.0.0.1", root=folder)
    store = Store(Path(folder), settings.limits, buffer_bytes=1 << 16)  # as ``serve`` does
    receiver = Receiver(settings, store)
    handled = 0
    handle = receiver.handle

    def counted(data: bytes, peer: str) -> None:
        nonlocal handled
        handle(data, peer)
        handled += 1

    receiver.handle = counted  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=receiver.run, args=(stop,))
    thread.start()

    def done() -> None:
        stop.set()
        thread.join()
        receiver.close()

    _serve_commands(lambda: {"datagrams": handled, "lines": receiver.lines}, done)


# -- this side ---------------------------------------------------------------------------------


class Child:
    root = ROOT  # the checkout whose services run

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--child", str(self.root), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.ask("") == {"ready": True}

    def ask(self, command: str) -> Any:
        stdin: IO[str] = self.process.stdin  # type: ignore[assignment]
        stdout: IO[str] = self.process.stdout  # type: ignore[assignment]
        if command:
            stdin.write(command + "\n")
            stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"the child {self.process.args[3:]} ended: {self.process.wait()}")
        return json.loads(line)

    def cpu(self) -> float:
        cpu = float(self.ask("done")["cpu"])
        self.process.wait(10)
        return cpu


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sink:
    """A UDP socket keeping every datagram sent to it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.datagrams: list[tuple[float, bytes]] = []  # (when it came, the datagram)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
                self.datagrams.append((time.monotonic(), data))
            except TimeoutError:
                continue
            except OSError:
                return

    def quiet(self, seconds: float = 0.3) -> list[tuple[float, bytes]]:
        """The datagrams, once none has come for ``seconds``."""
        while True:
            n = len(self.datagrams)
            time.sleep(seconds)
            if len(self.datagrams) == n:
                self.sock.close()
                return self.datagrams


def wait_until(ask: Any, ok: Any, what: str, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while not ok(got := ask()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout:.0f} s (last: {got})")
        time.sleep(0.05)
    return got


def run_supervisor(
    lines: list[bytes], burst: int, rate: float
) -> tuple[float, list[tuple[float, bytes]]]:
    """CPU seconds the supervisor spent on ``lines`` (sent ``burst`` a segment, ``rate`` lines
    a second; 0: all at once), and the datagrams it forwarded."""
    sink, port = Sink(), free_tcp_port()
    child = Child("supervisor", str(port), str(sink.sock.getsockname()[1]))
    conn = socket.create_connection(("127.0.0.1", port))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if burst <= 0:
        conn.sendall(b"".join(lines))
    else:
        start = time.monotonic()
        for i in range(0, len(lines), burst):
            if rate > 0:
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            conn.sendall(b"".join(lines[i : i + burst]))
    got = wait_until(
        lambda: child.ask("status"),
        lambda s: s["requests"] + s["unparsed"] >= len(lines),
        f"the supervisor to read {len(lines)} lines",
    )
    if got["requests"] != len(lines):
        raise RuntimeError(f"the supervisor counted {got} of {len(lines)} request lines")
    cpu = child.cpu()
    conn.close()
    return cpu, sink.quiet()


def run_store(datagrams: list[tuple[float, bytes]], expected: int, paced: bool) -> float:
    """CPU seconds the store spent on ``datagrams`` (``expected`` lines in all, checked in
    its files), sent as fast as it takes them or, ``paced``, as they came from the
    supervisor."""
    with tempfile.TemporaryDirectory(prefix="edge-cpu-") as folder:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        child = Child("store", str(port), folder)
        handled, start = 0, time.monotonic()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            for i, (came, d) in enumerate(datagrams):
                if paced:
                    time.sleep(max(0.0, start + came - datagrams[0][0] - time.monotonic()))
                while i - handled >= MAX_IN_FLIGHT:
                    handled = child.ask("status")["datagrams"]
                out.sendto(d, ("127.0.0.1", port))
        got = wait_until(
            lambda: child.ask("status"),
            lambda s: s["datagrams"] >= len(datagrams),
            f"the store to handle {len(datagrams)} datagrams",
        )
        cpu = child.cpu()
        stored = sum(
            1 for p in Path(folder).rglob("*.log") for _ in p.open("rb") if not _.isspace()
        )
        if stored != expected or got["lines"] != expected:
            raise RuntimeError(f"the store kept {stored} lines ({got}), {expected} expected")
        return cpu


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--lines", type=int, default=200_000, help="request lines in a bulk run")
    p.add_argument("--paced-lines", type=int, default=20_000, help="request lines in a paced run")
    p.add_argument("--paced-rate", type=float, default=2000, help="lines a second, paced")
    p.add_argument("--paced-burst", type=int, default=1, help="lines a segment, paced")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--root", type=Path, default=ROOT, help="the checkout measured (default: this)")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        root, role, *rest = args.child
        if role == "supervisor":
            child_supervisor(Path(root), int(rest[0]), int(rest[1]))
        else:
            child_store(Path(root), int(rest[0]), rest[1])
        return 0
    Child.root = args.root.resolve()

    bulk, paced = request_lines(args.lines), request_lines(args.paced_lines, seed=15)
    names = {
        "supervisor bulk": f"supervisor, {args.lines} lines at once",
        "supervisor paced": f"supervisor, {args.paced_lines} lines, {args.paced_burst} a "
        f"segment at {args.paced_rate:g}/s",
        "store bulk": f"log store, the {args.lines} lines forwarded",
        "store paced": f"log store, the {args.paced_lines} lines as forwarded, paced",
    }
    runs: dict[str, list[float]] = {k: [] for k in names}
    for i in range(args.repeat):
        cpu, datagrams = run_supervisor(bulk, 0, 0)
        runs["supervisor bulk"].append(cpu / len(bulk) * 1e6)
        cpu = run_store(datagrams, len(bulk), paced=False)
        runs["store bulk"].append(cpu / len(bulk) * 1e6)
        cpu, datagrams = run_supervisor(paced, args.paced_burst, args.paced_rate)
        runs["supervisor paced"].append(cpu / len(paced) * 1e6)
        cpu = run_store(datagrams, len(paced), paced=True)
        runs["store paced"].append(cpu / len(paced) * 1e6)
        print(f"run {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in runs.items()), flush=True)
    print(
        f"CPU µs per request line, median of {args.repeat} (Python {sys.version.split()[0]}, "
        f"{Child.root}):"
    )
    for key, name in names.items():
        print(f"  {name:<52} {statistics.median(runs[key]):6.2f}")
    if args.json:
        figures = {k: round(statistics.median(v), 3) for k, v in runs.items()}
        args.json.write_text(json.dumps({"us_per_line": figures, "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
