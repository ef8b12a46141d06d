"""The supervisor: one HAProxy per frontend document, and each service's routes applied to its
own process through the Runtime API.

``reconcile`` reads both prefixes, plans the processes (``fleet.plan``), applies the plan and
then the routes; ``reconcile_routes`` does the routes only (what a route change needs). Both run
at start, on every change etcd reports (two watches), and every few seconds (a resync that also
restarts a process that died). A process replaced for a changed document hands its listening
socket and its slots (address, weight, drain, maintenance) to the next one, which serves before
the old one stops; other services' processes are never touched.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import Protocol

from . import document, edge, fleet, router, runtime, slots
from .config import Files, Settings, map_file, release_map
from .document import DocumentError, Frontend
from .haproxy import Process, ProcessError

Starter = Callable[..., Process]


class Store(Protocol):
    """What the supervisor reads from etcd (``etcd.Etcd``; a dict-backed fake in tests)."""

    def get_prefix(self, prefix: str) -> dict[str, bytes]: ...


def log(msg: str) -> None:
    print(f"cdlab-proxy: {msg}", file=sys.stderr, flush=True)


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        etcd: Store,
        start: Starter = Process.start,
        say: Callable[[str], None] = log,
        lookup: runtime.Lookup = runtime.resolve,
    ) -> None:
        self.settings, self.etcd, self.start, self.say = settings, etcd, start, say
        self.lookup = lookup
        self.lock = threading.Lock()  # one reconcile at a time
        self.table = threading.Lock()  # guards processes and notes (held briefly)
        self.processes: dict[str, Process] = {}
        self.notes: dict[str, router.Status] = {}  # refused, invalid, failed to start
        self.generation = itertools.count(1)
        self.ready = False  # the frontend documents were read once
        self.wake = threading.Event()  # a process ended: the resync should not wait
        self.stopping = False  # the container is stopping: start nothing more
        self._said: dict[str, str] = {}

    def _once(self, key: str, msg: str) -> None:
        """Say ``msg`` unless it is what was last said about ``key`` (a retry loop's error)."""
        if self._said.get(key) != msg:
            self._said[key] = msg
            self.say(msg)

    # -- reading etcd ------------------------------------------------------------------------

    def _frontends(self) -> tuple[dict[str, Frontend], set[str]]:
        raw = self.etcd.get_prefix(document.FRONTENDS_PREFIX)
        wanted, invalid = {}, set()
        for key, value in sorted(raw.items()):
            name = key[len(document.FRONTENDS_PREFIX) :]
            try:
                wanted[name] = document.parse_frontend(document.decode(value, key), name)
            except DocumentError as exc:
                invalid.add(name)
                self._note(router.Status(name, None, "invalid", detail=str(exc)))
        return wanted, invalid

    def _routes(self) -> dict[str, bytes]:
        raw = self.etcd.get_prefix(document.ROUTES_PREFIX)
        return {k[len(document.ROUTES_PREFIX) :]: v for k, v in raw.items()}

    def _drained(self) -> frozenset[str]:
        """Every address of the drained-addresses documents (one that cannot be read is said
        once and counts for nothing)."""
        out: set[str] = set()
        for key, value in sorted(self.etcd.get_prefix(document.DRAINED_PREFIX).items()):
            name = key[len(document.DRAINED_PREFIX) :]
            try:
                out.update(document.parse_drained(document.decode(value, key), name).addrs)
                self._said.pop(f"drained:{name}", None)
            except DocumentError as exc:
                self._once(f"drained:{name}", f"drained addresses {name!r} ignored: {exc}")
        return frozenset(out)

    def _note(self, status: router.Status) -> None:
        with self.table:
            self.notes[status.service] = status
        self._once(f"note:{status.service}", f"{status.service}: {status.state}: {status.detail}")

    def _clear_note(self, name: str) -> None:
        with self.table:
            self.notes.pop(name, None)
        self._said.pop(f"note:{name}", None)

    # -- reconciling -------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Processes from the frontend documents, then every service's routes."""
        with self.lock:
            if self.stopping:
                return
            wanted, invalid = self._frontends()
            routes = self._routes()
            with self.table:
                facts = {
                    n: fleet.Running(p.frontend, p.alive, p.exit) for n, p in self.processes.items()
                }
            for step in fleet.plan(wanted, facts, invalid):
                self._apply(step, routes)
            with self.table:
                settled = {
                    n for n, p in self.processes.items() if p.alive and p.frontend == wanted.get(n)
                }
                stale = set(self.notes) - (set(wanted) | invalid)
            for name in settled | stale:
                self._clear_note(name)
            self.ready = True
            self._apply_routes(routes)

    def reconcile_routes(self, keys: list[str] | None = None) -> None:
        """Every service's routes, or only those of the services whose route ``keys``
        changed (a watch event): a switch of one service waits for no other. (A change of
        the drained addresses concerns every service: ``keys`` None.)"""
        names = None if keys is None else {k.rpartition("/")[2] for k in keys}
        with self.lock:
            if not self.stopping:
                self._apply_routes(self._routes(), names)

    def wait(self, seconds: float) -> None:
        """Until the next resync: ``seconds``, or less when a process has ended."""
        self.wake.wait(seconds)
        self.wake.clear()

    def _apply(self, step: fleet.Step, routes: Mapping[str, bytes]) -> None:
        name = step.service
        if step.action == "refuse":
            with self.table:
                running = self.processes.get(name)
            still = f"; its HAProxy (pid {running.pid}) runs on" if running else ""
            self._note(router.Status(name, step.frontend, "refused", detail=step.reason + still))
            return
        if step.action == "stop":
            with self.table:
                gone = self.processes.pop(name)
            gone.soft_stop()
            self.say(f"{name}: stopped its HAProxy (pid {gone.pid}): {step.reason}")
            return
        assert step.frontend is not None
        front = step.frontend
        with self.table:
            previous = self.processes.get(name)
        old = previous if step.action == "replace" else None
        seed, takeover, releases = "", "", {}
        if old is not None:
            try:
                state = old.send("show servers state")
                backends = [name, name + slots.MATCH_SUFFIX]
                seed = slots.seed(state, backends, front.port)
                takeover = old.files.socket
                releases = self._releases(name, routes, state, backends)
            except OSError as exc:  # the new process starts like a first one
                self.say(f"{name}: could not read the slots of pid {old.pid}: {exc}")
        files = Files.of(self.settings, name, next(self.generation))
        try:
            new = self.start(
                self.settings,
                front,
                files,
                seed,
                self._patterns(name, routes),
                takeover,
                on_exit=self.wake.set,
                releases=releases,
            )
            new.wait_ready()
        except (OSError, ProcessError) as exc:
            self._note(router.Status(name, front, "failed", detail=str(exc).splitlines()[0]))
            self._once(f"start:{name}", f"{name}: {step.action} failed: {exc}")
            return
        with self.table:
            self.processes[name] = new
        if old is None and previous is not None:
            previous.kill()  # it had ended: its files go
        self._said.pop(f"start:{name}", None)
        self._apply_routes(routes, {name})
        where = f"port {front.public_port + self.settings.port_shift}"
        if old is not None:
            old.soft_stop()
            self.say(
                f"{name}: replaced its HAProxy (pid {old.pid} -> {new.pid}, {where}): "
                f"{step.reason}; pid {old.pid} finishes its requests; other services untouched"
            )
        else:
            self.say(f"{name}: started its HAProxy (pid {new.pid}, {where}): {step.reason}")

    def _releases(
        self, name: str, routes: Mapping[str, bytes], state: str, backends: list[str]
    ) -> dict[str, str]:
        """The slot map a new process starts with: the slots it takes over, by release."""
        try:
            wanted = slots.wanted(self._parse_routes(name, routes.get(name)))
        except DocumentError:
            return {}
        hosts = {
            name: {document.fqdn(d): d.release for d in wanted.servers},
            name + slots.MATCH_SUFFIX: {document.fqdn(d): d.release for d in wanted.matched},
        }
        return edge.release_keys(
            ((b, s.name, s.fqdn) for b in backends for s in slots.parse_servers_state(state, b)),
            hosts,
        )

    def _patterns(self, name: str, routes: Mapping[str, bytes]) -> tuple[str, ...]:
        try:
            return slots.wanted(self._parse_routes(name, routes.get(name))).patterns
        except DocumentError:
            return ()

    @staticmethod
    def _parse_routes(name: str, raw: bytes | None) -> document.Routes:
        key = document.ROUTES_PREFIX + name
        return document.parse_routes(document.decode(raw, key), name)

    def _apply_routes(
        self, routes: Mapping[str, bytes], only: Collection[str] | None = None
    ) -> None:
        with self.table:
            procs = {
                n: p for n, p in self.processes.items() if p.alive and (only is None or n in only)
            }
        drained = self._drained() if procs else frozenset()
        for name, proc in sorted(procs.items()):
            try:
                wanted = slots.wanted(self._parse_routes(name, routes.get(name)))
                path = map_file(self.settings, name)
                runtime.apply_routes(
                    proc,
                    name,
                    wanted,
                    path,
                    self.lookup,
                    self.say,
                    release_map(self.settings, name),
                    drained,
                )
                self._said.pop(f"routes:{name}", None)
            except (OSError, ValueError) as exc:  # this service's; the others carry on
                self._once(f"routes:{name}", f"{name}: routes not applied: {exc}")

    # -- what the router and the web port ask ------------------------------------------------

    def statuses(self) -> list[router.Status]:
        with self.table:
            rows = {
                n: router.Status(n, p.frontend, "up" if p.alive else "failed", p.pid, p.exit)
                for n, p in self.processes.items()
            }
            for n, note in self.notes.items():
                pid = rows[n].pid if n in rows else None
                rows[n] = router.Status(n, note.frontend, note.state, pid, note.detail)
        return list(rows.values())

    def healthy(self) -> tuple[bool, str]:
        """Healthy once the frontend documents were read and every process runs (a refused or
        unreadable document is the lab's to fix, and does not count)."""
        if not self.ready:
            return False, "the frontend documents were not read from etcd yet"
        bad = [s for s in self.statuses() if s.state in ("failed", "starting")]
        if bad:
            return False, "; ".join(f"{s.service}: {s.state} {s.detail}" for s in bad)
        return True, f"{len(self.statuses())} service(s)"

    def answer(self, line: str) -> str:
        """The Runtime API router: each command on ``line`` to the process(es) it concerns."""
        with self.table:
            procs = {n: p for n, p in self.processes.items() if p.alive}
        maps = {n: map_file(self.settings, n) for n in procs}
        return runtime.answer(line, procs, maps, lambda: router.status_table(self.statuses()))

    def stop_all(self, timeout: float = 35.0) -> None:
        """Every process finishes its requests and ends (SIGTERM of the container); nothing is
        started again meanwhile (their ends wake the resync)."""
        with self.lock, self.table:
            self.stopping = True
            procs = list(self.processes.values())
            self.processes.clear()
        for p in procs:
            p.soft_stop()
        deadline = time.monotonic() + timeout
        for p in procs:
            if not p.wait(max(0.0, deadline - time.monotonic())):
                p.kill()  # past hard-stop-after: nothing left worth waiting for
