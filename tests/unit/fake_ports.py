"""``FakePorts``: the release engine's ports (``lab.release.ports.ReleasePorts``) in memory, with
failures injected at a chosen call. A fake prod: containers by release (running or not), the
route record of each service, the proxy's frontends, and a log of every call, tagged with the
key of the step that made it (``Tracking`` progress tells it). ``FakeEtcd``: the route store's
key-value calls, with etcd's revisions."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from lab.errors import EtcdError, MigrationFailed, ReleaseError, Stop
from lab.ports.etcd import Entry, Fence
from lab.progress import Progress, StageHandle
from lab.release import judge, routes
from lab.release.model import Candidate, Drained, Pruned, StepVerdict


@dataclass(frozen=True)
class Fault:
    """Raise ``exc`` at call ``at`` (an index in the call log, or the first call so named from
    then on): before the call has any effect, or ``after`` it had its effect. Fires once.
    ``exc`` may be a signal number instead: then that signal is sent to this process."""

    at: int | str
    exc: BaseException | signal.Signals
    after: bool = False

    def fire(self) -> None:
        if isinstance(self.exc, BaseException):
            raise self.exc
        os.kill(os.getpid(), self.exc)


@dataclass(frozen=True)
class Snapshot:
    """What the fake prod looks like: compared before and after a run."""

    containers: tuple[tuple[str, bool], ...]  # (release, running), sorted
    routes: tuple[tuple[str, routes.Routes], ...]
    frontends: tuple[tuple[str, int], ...]


@dataclass
class FakePorts:
    containers: dict[str, bool] = field(default_factory=dict)  # release -> running
    routes: dict[str, routes.Routes] = field(default_factory=dict)
    frontends: dict[str, int] = field(default_factory=dict)  # service -> public port
    _before_frontend: dict[str, int | None] = field(default_factory=dict)  # what a write replaced
    faults: list[Fault] = field(default_factory=list)
    verdicts: list[tuple[str, str]] = field(default_factory=list)  # judge_step: (decision, by hand)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (step key, call name)
    images: set[str] = field(default_factory=set)
    events: list[str] = field(default_factory=list)
    slept: list[float] = field(default_factory=list)
    step: str = ""  # the key of the step running (set by ``Tracking``)
    # the database's schema: its version, what each release's code needs, the releases whose
    # integration tests fail on a migrated scratch copy, whether the migration itself fails
    schema: str = "0001"
    heads: dict[str, str] = field(default_factory=dict)
    breaks: set[str] = field(default_factory=set)
    migration_fails: bool = False

    def snapshot(self) -> Snapshot:
        return Snapshot(
            tuple(sorted(self.containers.items())),
            tuple(sorted(self.routes.items())),
            tuple(sorted(self.frontends.items())),
        )

    @property
    def names(self) -> list[str]:
        return [name for _, name in self.calls]

    @contextmanager
    def _call(self, name: str) -> Iterator[None]:
        index = len(self.calls)
        self.calls.append((self.step, name))
        fault = next((f for f in self.faults if f.at in (index, name)), None)
        if fault is not None:
            self.faults.remove(fault)
            if not fault.after:
                fault.fire()
        yield
        if fault is not None and fault.after:
            fault.fire()

    def _routed(self, service: str, host: str) -> bool:
        current = self.routes.get(service, routes.Routes(service, ()))
        return host in {s.host for s in current.servers}

    # prod's engine
    def pull(self, images: tuple[str, ...]) -> int:
        with self._call("pull"):
            new = set(images) - self.images
            self.images |= new
            return len(new)

    def start(self, c: Candidate, replicas: int = 0) -> str:
        with self._call("start"):
            self.containers[c.release] = True
            return c.image

    def wait_healthy(self, c: Candidate, timeout: float) -> float:
        with self._call("wait_healthy"):
            if not self.containers.get(c.release):
                raise ReleaseError(f"{c.project} is not running")
            return 0.5

    def remove(self, service: str, release: str, stop_timeout: int) -> None:
        with self._call("remove"):
            self.containers.pop(release, None)

    def out_of_pool(self, service: str, keep: frozenset[str]) -> list[str]:
        with self._call("out_of_pool"):
            return sorted(r for r in self.containers if r not in keep)

    def run_hook(self, c: Candidate, which: str, command: str) -> str:
        with self._call("run_hook"):
            return f"{which} {command}: exit 0"

    def test_image(self, c: Candidate) -> str | None:
        with self._call("test_image"):
            return c.test_image

    def integration_tests(self, c: Candidate, test_image: str | None) -> str:
        with self._call("integration_tests"):
            return "3 passed"

    def schema_version(self, c: Candidate) -> str:
        with self._call("schema_version"):
            return self.schema

    def schema_state(self, c: Candidate) -> tuple[str, str]:
        with self._call("schema_state"):
            return self.schema, self.heads.get(c.release, self.schema)

    def migrate(self, c: Candidate, command: str = "") -> str:
        with self._call("migrate"):
            if self.migration_fails:  # transactional: nothing changed
                raise ReleaseError('syntax error at or near "TABEL"')
            down = command.rsplit(" ", 1)[-1] if command.startswith("down ") else None
            self.schema = down or self.heads.get(c.release, self.schema)
            return "migrated"

    def schema_check(
        self, c: Candidate, keep_working: tuple[Candidate, ...], command: str = ""
    ) -> str:
        with self._call("schema_check"):
            if self.migration_fails:
                raise MigrationFailed('syntax error at or near "TABEL"')
            for k in keep_working:
                if k.release in self.breaks:
                    raise ReleaseError(
                        f"integration tests failed against {k.project}-schema-check (exit 1):\n"
                        'E   psycopg2.errors.UndefinedColumn: column "name" does not exist',
                        k.service.name,
                        k.release,
                    )
            return "3 passed"

    def addresses(self, c: Candidate) -> tuple[str, ...]:
        with self._call("address"):
            if not self.containers.get(c.release):
                raise ReleaseError(f"{c.project} has no running container on prod")
            return ("172.19.0.9",)

    # the route store and the proxy
    def read_routes(self, service: str) -> routes.Routes:
        with self._call("read_routes"):
            return self.routes.get(service, routes.Routes(service, ()))

    def write_routes(self, new: routes.Routes) -> None:
        with self._call("write_routes"):
            self.routes[new.service] = new

    def answers_probe(self, c: Candidate, release: str) -> str:
        with self._call("answers_probe"):
            if not self.containers.get(release):
                raise ReleaseError(f"{release} is not running")
            return "exit 0"

    def write_frontend(self, c: Candidate) -> bool:
        with self._call("write_frontend"):
            new = c.service.name not in self.frontends
            self._before_frontend[c.service.name] = self.frontends.get(c.service.name)
            self.frontends[c.service.name] = c.service.public_port
            return new

    def restore_frontend(self, service: str) -> None:
        with self._call("restore_frontend"):
            if service not in self._before_frontend:
                return
            before = self._before_frontend.pop(service)
            if before is None:
                self.frontends.pop(service, None)
            else:
                self.frontends[service] = before

    def wait_up(self, backend: str, host: str, addresses: tuple[str, ...]) -> float:
        with self._call("wait_up"):
            service = backend.removesuffix("-match")
            if not self._routed(service, host):  # the proxy checks only what is in the pool
                raise ReleaseError(f"{host} is not in the pool of {backend}")
            return 0.2

    def wait_released(self, backend: str, host: str) -> None:
        with self._call("wait_released"):
            if self._routed(backend, host):
                raise ReleaseError(f"{host} is still in the pool of {backend}")

    def wait_drained(self, backend: str, host: str) -> Drained:
        with self._call("wait_drained"):
            return Drained(seconds=0.3, left=0)

    def verify(self, service: str, release: str, headers: dict[str, str] | None) -> float:
        """Every response from ``release``: the live one, or the matched one with headers."""
        with self._call("verify"):
            current = self.routes.get(service, routes.Routes(service, ()))
            answers = current.match.release if headers and current.match else current.live
            if answers != release or not self.containers.get(release):
                raise ReleaseError(f"{service} answered from {answers}, not {release}")
            return 0.011

    # metrics and time
    def judge_step(
        self, c: Candidate, live: str, interval: float, thresholds: judge.Thresholds
    ) -> StepVerdict:
        with self._call("judge_step"):
            decision, command = self.verdicts.pop(0) if self.verdicts else ("promote", "")
            return StepVerdict(judge.Verdict(decision, f"judged {decision}"), by_hand=command)

    def bake(
        self, c: Candidate, previous: str, seconds: float, thresholds: judge.Thresholds
    ) -> str:
        with self._call("bake"):
            return f"{c.release} healthy for {seconds:.0f} s"

    def event(self, what: str, tags: list[str], data: str = "") -> None:
        with self._call("event"):
            self.events.append(what)

    def sleep(self, seconds: float) -> None:
        with self._call("sleep"):
            self.slept.append(seconds)

    # the registry
    def prune(self, service: str, made_live: str) -> Pruned:
        with self._call("prune"):
            return Pruned(kept=(made_live,), pruned=())

    def retire(self, service: str, keep: frozenset[str]) -> list[str]:
        with self._call("retire"):
            gone = sorted(r for r in self.containers if r not in keep)
            for release in gone:
                del self.containers[release]
            return gone

    def copy(self) -> FakePorts:
        """A fresh fake in the same state (no calls, no faults)."""
        return dataclasses.replace(
            self,
            containers=dict(self.containers),
            routes=dict(self.routes),
            frontends=dict(self.frontends),
            faults=[],
            verdicts=list(self.verdicts),
            calls=[],
            images=set(self.images),
            heads=dict(self.heads),
            breaks=set(self.breaks),
            events=[],
            slept=[],
        )


@dataclass
class Tracking(Progress):
    """Silent progress that tells the fake which step (or undo) each call belongs to, keeps
    what is said, and raises ``Stop`` as the step ``stop_at`` begins (a signal between steps)."""

    ports: FakePorts | None = None
    stop_at: str = ""
    said: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.said.append(text)

    @contextmanager
    def stage(self, title: str, key: str | None = None) -> Iterator[StageHandle]:
        if self.ports is not None:
            self.ports.step = key or ""
        with super().stage(title, key) as handle:
            if key == self.stop_at:
                raise Stop("SIGTERM")
            yield handle


@dataclass
class FakeEtcd:
    """The route store's key-value calls, in memory, keeping revisions as etcd does: one
    counter for the whole store, raised by every put, create and delete; a key's
    ``create_revision`` is the write that created it (a new one after a delete), its
    ``mod_revision`` its last write. ``down`` makes every call fail as an unreachable etcd."""

    kv: dict[str, Entry] = field(default_factory=dict)
    revision: int = 0
    down: bool = False

    def _up(self, action: str) -> None:
        if self.down:
            raise EtcdError(action, "https://prod:2379", "connection refused")

    def put(self, key: str, value: bytes, fence: object = None, lease: str | None = None) -> None:
        self._up(f"write {key}")
        self.revision += 1
        old = self.kv.get(key)
        created = old.create_revision if old else self.revision
        self.kv[key] = Entry(key, value, created, self.revision)

    def put_json(self, key: str, doc: object) -> None:
        self.put(key, json.dumps(doc, sort_keys=True).encode())

    def create(self, key: str, value: bytes, lease: str | None = None) -> Fence | bytes:
        self._up(f"create {key}")
        if key in self.kv:
            return self.kv[key].value
        self.put(key, value)
        return Fence(key, self.revision)

    def delete(self, key: str) -> None:
        self._up(f"delete {key}")
        self.revision += 1
        self.kv.pop(key, None)

    def get(self, key: str) -> bytes | None:
        self._up(f"read {key}")
        entry = self.kv.get(key)
        return entry.value if entry else None

    def get_json(self, key: str) -> object:
        raw = self.get(key)
        return json.loads(raw) if raw else None

    def get_prefix(self, prefix: str) -> dict[str, bytes]:
        return {e.key: e.value for e in self.get_prefix_with_revisions(prefix)}

    def get_prefix_with_revisions(self, prefix: str) -> list[Entry]:
        self._up(f"read {prefix}*")
        return [self.kv[k] for k in sorted(self.kv) if k.startswith(prefix)]
