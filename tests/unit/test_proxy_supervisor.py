"""The supervisor applying its plan, against fake HAProxy processes and a dict for etcd: who is
started with what, who is told to stop and when, where routes and Runtime API commands go."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from cdlab_proxy import router
from cdlab_proxy.config import Files, Settings
from cdlab_proxy.document import Frontend
from cdlab_proxy.haproxy import ProcessError
from cdlab_proxy.supervisor import Supervisor

HEADER = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_fqdn srv_port"
)
APP = {"name": "app", "public_port": 8000, "port": 8000, "health": "/health", "maxconn": 0}
QUOTES = {"name": "quotes", "public_port": 8001, "port": 9000, "health": "/ready", "maxconn": 0}


class FakeProcess:
    pids = iter(range(100, 1000))

    def __init__(self, frontend: Frontend, files: Files, seed: str, takeover: str) -> None:
        self.frontend, self.files, self.seed, self.takeover = frontend, files, seed, takeover
        self.pid = next(self.pids)
        self.alive, self.exit = True, ""
        self.sent: list[str] = []
        self.stopped = False
        self.releases: dict[str, str] = {}
        name = frontend.name
        # (backend, slot) -> [fqdn, admin state, weight], as HAProxy keeps them
        self.slots = {
            (b, f"r{i}"): ["cdlab-unassigned.invalid", 5, 1]
            for b in (name, name + "-match")
            for i in (1, 2)
        }

    def send(self, command: str, timeout: float = 5.0) -> str:
        self.sent.append(command)
        words = command.split()
        if words[:2] == ["set", "server"]:
            slot = self.slots[tuple(words[2].split("/"))]  # type: ignore[index]
            what, value = words[3], words[4]
            if what == "fqdn":
                slot[0] = value
            elif what == "weight":
                slot[2] = int(value)
            elif what == "state":
                slot[1] = {
                    "maint": slot[1] | 1,
                    "ready": slot[1] & ~0x19,
                    "drain": (slot[1] & ~1) | 0x08,
                }[value]
            return "\n"
        if command == "show servers state":
            rows = "".join(
                f"3 {b} 1 {r} - 2 {admin} {weight} 1 {fqdn} {self.frontend.port}\n"
                for (b, r), (fqdn, admin, weight) in self.slots.items()
            )
            return f"1\n{HEADER}\n{rows}\n"
        if command == "show info":
            return f"Name: HAProxy\nPid: {self.pid}\n\n"
        if words[:2] == ["set", "map"] and words[2].endswith(".releases"):
            self.releases[words[3]] = words[4]
            return "\n"
        if command.startswith("show map") and words[2].endswith(".releases"):
            return "".join(f"0x1 {k} {v}\n" for k, v in self.releases.items()) + "\n"
        if command.startswith("show map"):
            return "\n"
        return "\n"

    def wait_ready(self, timeout: float = 10.0) -> None:
        if self.frontend.health == "/broken":
            self.alive, self.exit = False, "exit code 1"
            raise ProcessError("the HAProxy of 'x' did not answer: exit code 1")

    def soft_stop(self) -> None:
        self.stopped, self.alive = True, False

    def wait(self, timeout: float) -> bool:
        return not self.alive

    def kill(self) -> None:
        self.alive = False


class World:
    def __init__(self) -> None:
        self.store: dict[str, bytes] = {}
        self.started: list[FakeProcess] = []
        self.said: list[str] = []
        self.sup = Supervisor(
            Settings(run_dir="/run/p"),
            self,
            start=self.start,
            say=self.said.append,
            lookup=lambda hosts: {h: "172.19.0.9" for h in hosts},
        )

    def get_prefix(self, prefix: str) -> dict[str, bytes]:
        return {k: v for k, v in self.store.items() if k.startswith(prefix)}

    def put(self, key: str, doc: Any) -> None:
        self.store[key] = json.dumps(doc).encode()

    def start(
        self,
        settings: Settings,
        frontend: Frontend,
        files: Files,
        seed: str = "",
        patterns: Sequence[str] = (),
        takeover: str = "",
        on_exit: object = None,
        releases: dict[str, str] | None = None,
    ) -> FakeProcess:
        proc = FakeProcess(frontend, files, seed, takeover)
        proc.releases = dict(releases or {})
        self.started.append(proc)
        return proc

    def running(self) -> dict[str, Any]:
        return dict(self.sup.processes)


@pytest.fixture
def world() -> World:
    w = World()
    w.put("/cdlab/frontends/app", APP)
    w.put(
        "/cdlab/routes/app",
        {"service": "app", "servers": [{"release": "a", "host": "app-a", "weight": 100}]},
    )
    w.sup.reconcile()
    return w


def test_a_process_per_frontend_document_with_its_routes(world: World) -> None:
    (app,) = world.started
    assert app.frontend == Frontend("app", 8000, 8000) and (app.seed, app.takeover) == ("", "")
    assert app.files.socket == "/run/p/app.1.sock"
    assert "set server app/r1 fqdn app-a" in app.sent
    assert world.sup.healthy() == (True, "1 service(s)")


def test_a_new_frontend_starts_its_process_and_touches_no_other(world: World) -> None:
    (app,) = world.started
    before = list(app.sent)
    world.put("/cdlab/frontends/quotes", QUOTES)
    world.sup.reconcile()
    quotes = world.started[1]
    assert world.running() == {"app": app, "quotes": quotes}
    assert not app.stopped
    changed = [c for c in app.sent[len(before) :] if not c.startswith("show ")]
    assert changed == [], "app's process got commands when quotes started"
    assert any("quotes: started its HAProxy" in s for s in world.said)


def test_a_changed_frontend_replaces_that_process_from_the_old_ones_slots(world: World) -> None:
    world.put("/cdlab/frontends/quotes", QUOTES)
    world.sup.reconcile()
    app, old = world.started
    world.put("/cdlab/frontends/quotes", {**QUOTES, "port": 9100})
    world.sup.reconcile()
    new = world.started[2]
    assert new.takeover == old.files.socket, "the new process takes the listening socket over"
    assert " 9100\n" in new.seed and " 9000\n" not in new.seed
    assert old.stopped and not app.stopped
    assert world.running() == {"app": app, "quotes": new}
    assert any("replaced its HAProxy" in s and "port 9000 -> 9100" in s for s in world.said)


def test_a_replacement_that_does_not_start_leaves_the_old_process_serving(world: World) -> None:
    (app,) = world.started
    world.put("/cdlab/frontends/app", {**APP, "health": "/broken"})
    world.sup.reconcile()
    assert world.running() == {"app": app} and not app.stopped
    (row,) = world.sup.statuses()
    assert (row.state, row.pid) == ("failed", app.pid) and "exit code 1" in row.detail
    assert world.sup.healthy()[0] is False


def test_a_deleted_frontend_stops_its_process(world: World) -> None:
    (app,) = world.started
    del world.store["/cdlab/frontends/app"]
    world.sup.reconcile()
    assert app.stopped and world.running() == {}
    assert world.sup.healthy() == (True, "0 service(s)")


def test_an_unreadable_document_is_reported_and_its_process_kept(world: World) -> None:
    (app,) = world.started
    world.store["/cdlab/frontends/app"] = b'{"name": "app", "public_port": 80}'
    world.put("/cdlab/frontends/new", {**QUOTES, "name": "new", "public_port": 8000})
    world.sup.reconcile()
    assert world.running() == {"app": app} and not app.stopped
    rows = {r.service: r for r in world.sup.statuses()}
    assert rows["app"].state == "invalid" and "frontends[app].public_port" in rows["app"].detail
    assert (rows["new"].state, rows["new"].detail) == ("refused", "public port 8000 is app's")


def test_runtime_commands_go_to_their_process_and_shows_are_merged(world: World) -> None:
    world.put("/cdlab/frontends/quotes", QUOTES)
    world.sup.reconcile()
    app, quotes = world.started
    assert world.sup.answer("set server quotes/r1 weight 10\n") == "\n"
    assert quotes.sent[-1] == "set server quotes/r1 weight 10"
    assert "set server quotes/r1 weight 10" not in app.sent
    merged = world.sup.answer("show servers state")
    assert merged.count("# be_id") == 1 and " app " in merged and " quotes-match " in merged
    table = router.parse_status(world.sup.answer("show cdlab"))
    assert table is not None and [(r.service, r.state) for r in table] == [
        ("app", "up"),
        ("quotes", "up"),
    ]


def test_a_route_event_reaches_only_the_services_it_names(world: World) -> None:
    world.put("/cdlab/frontends/quotes", QUOTES)
    world.sup.reconcile()
    app, quotes = world.started
    world.put(
        "/cdlab/routes/quotes",
        {"service": "quotes", "servers": [{"release": "q", "host": "quotes-q", "weight": 100}]},
    )
    app_before, quotes_before = len(app.sent), len(quotes.sent)
    world.sup.reconcile_routes(["/cdlab/routes/quotes"])
    assert len(app.sent) == app_before, "app's process was asked about quotes' routes"
    assert "set server quotes/r1 fqdn quotes-q" in quotes.sent[quotes_before:]


def test_watch_events_name_the_keys_they_changed() -> None:
    from cdlab_proxy.etcd import changed_keys

    line = (
        b'{"result":{"header":{"revision":"9"},"events":[{"kv":{"key":"L2NkbGFiL3JvdXRlcy9hcHA=",'
        b'"value":"e30="}},{"type":"DELETE","kv":{"key":"L2NkbGFiL3JvdXRlcy9xdW90ZXM="}}]}}'
    )
    assert changed_keys(line) == ["/cdlab/routes/app", "/cdlab/routes/quotes"]
    assert changed_keys(b'{"result":{"created":true}}') is None
    assert changed_keys(b"not json") is None


def test_once_stopping_nothing_is_started_again(world: World) -> None:
    """Stopping ends every process, and each end wakes the resync: it must start none."""
    (app,) = world.started
    world.sup.stop_all(timeout=0)
    world.sup.reconcile()
    world.sup.reconcile_routes()
    assert app.stopped and world.started == [app] and world.running() == {}
