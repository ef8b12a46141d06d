"""One service's HAProxy process: started from its files, spoken to on its admin socket."""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from .config import Files, Settings, map_file, release_map, render_config, slot_keys
from .document import Frontend


def _with_parent(argv: list[str]) -> list[str]:
    """``argv`` run so that it gets SIGTERM if the supervisor dies (no orphaned HAProxy):
    util-linux's setpriv (Essential in Debian) sets PR_SET_PDEATHSIG, then execs it. (Not a
    preexec_fn: that is unsafe in a process with threads.)"""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", *argv] if setpriv else argv


class ProcessError(RuntimeError):
    """A process that did not start; the message holds its last lines of output."""


class Process:
    def __init__(
        self,
        frontend: Frontend,
        files: Files,
        popen: subprocess.Popen[bytes],
        on_exit: Callable[[], None] = lambda: None,
    ) -> None:
        self.frontend, self.files, self.popen, self.on_exit = frontend, files, popen, on_exit
        self.output: collections.deque[str] = collections.deque(maxlen=12)
        threading.Thread(target=self._relay, daemon=True, name=f"log-{frontend.name}").start()

    @classmethod
    def start(
        cls,
        settings: Settings,
        frontend: Frontend,
        files: Files,
        seed: str = "",
        patterns: Sequence[str] = (),
        takeover: str = "",
        on_exit: Callable[[], None] = lambda: None,
        releases: Mapping[str, str] | None = None,
    ) -> Process:
        """Write the process's config, its map (``patterns``), its slot map (``releases``:
        slot -> release, "-" for the others) and its server-state file (``seed``), then start
        HAProxy; ``takeover``: the admin socket of the process it
        replaces, whose listening sockets it takes over (``haproxy -x``). ``on_exit`` is
        called when the process has ended, whatever ended it."""
        os.makedirs(settings.run_dir, exist_ok=True)
        with open(files.config, "w") as fh:
            fh.write(render_config(frontend, settings, files))
        with open(files.state, "w") as fh:
            fh.write(seed)
        with open(map_file(settings, frontend.name), "w") as fh:
            fh.write("".join(f"{key} 1\n" for key in patterns))
        with open(release_map(settings, frontend.name), "w") as fh:
            known = releases or {}
            fh.write(
                "".join(f"{k} {known.get(k, '-')}\n" for k in slot_keys(frontend.name, settings))
            )
        argv = [settings.haproxy, "-db", "-f", files.config]
        if takeover:
            argv += ["-x", takeover]
        popen = subprocess.Popen(
            _with_parent(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        return cls(frontend, files, popen, on_exit)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def exit(self) -> str:
        code = self.popen.poll()
        if code is None:
            return ""
        return f"exit code {code}" if code >= 0 else f"killed by signal {-code}"

    def _relay(self) -> None:
        """HAProxy's output into the container's log, each line naming its service."""
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.output.append(line)
            print(f"[{self.frontend.name}] {line}", file=sys.stderr, flush=True)
        self.popen.wait()
        self.on_exit()

    def send(self, command: str, timeout: float = 5.0) -> str:
        """One Runtime API command on the admin socket; its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(self.files.socket)
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the admin socket answers (HAProxy opens it once its frontend listens)."""
        deadline, last = time.monotonic() + timeout, "no admin socket yet"
        while time.monotonic() < deadline:
            if not self.alive:
                last = self.exit
                break
            try:
                self.send("show info", timeout=1)
                return
            except OSError as exc:
                last = str(exc) if os.path.exists(self.files.socket) else last
            time.sleep(0.02)
        if self.alive:
            self.kill()
        output = "\n".join(f"    {line}" for line in self.output)
        raise ProcessError(
            f"the HAProxy of '{self.frontend.name}' (pid {self.pid}, {self.files.config}) did "
            f"not answer on {self.files.socket} within {timeout:.0f} s: {last}\n{output}"
        )

    def soft_stop(self) -> None:
        """Stop listening now and end once the requests in flight are answered (at most
        ``hard-stop-after``); the files go when it has ended."""
        if self.alive:
            self.popen.send_signal(signal.SIGUSR1)
        threading.Thread(target=self._reap, daemon=True, name=f"reap-{self.pid}").start()

    def wait(self, timeout: float) -> bool:
        """Whether the process ended within ``timeout`` seconds."""
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        if self.alive:
            self.popen.kill()
        self._reap()

    def _reap(self) -> None:
        self.popen.wait()
        for path in (self.files.config, self.files.socket, self.files.state):
            with contextlib.suppress(OSError):
                os.unlink(path)
