"""The rolling restart of prod's swarm workers (``lab.estate.rolling``): its plan as a table,
and its apply against fake ports with a failure, and a signal, at every step."""

from __future__ import annotations

import os
import signal

import pytest

from lab.errors import ConfigError, LabError
from lab.estate import rolling
from lab.estate.rolling import Worker
from lab.progress import Progress

P2 = Worker("prod-2", "n2", "ready", {"app-a": 1, "quotes-b": 1})
P3 = Worker("prod-3", "n3", "ready", {"app-a": 1})


def test_each_worker_in_turn_drained_at_the_proxy_then_in_swarm_restarted_and_back() -> None:
    steps = rolling.plan([P2, P3], {"app-a": 1, "quotes-b": 1})
    assert [s.key for s in steps] == [
        "proxy-drain prod-2",
        "swarm-drain prod-2",
        "restart prod-2",
        "swarm-active prod-2",
        "proxy-undrain prod-2",
        "proxy-drain prod-3",
        "swarm-drain prod-3",
        "restart prod-3",
        "swarm-active prod-3",
        "proxy-undrain prod-3",
    ]


@pytest.mark.parametrize(
    ("workers", "on_manager", "field", "expected"),
    [
        ([], {}, "prod's swarm", "a topology with swarm workers"),
        ([P2, Worker("prod-3", "n3", "down", {})], {}, "swarm worker prod-3", "ready: bring"),
        ([P2, P3], {"app-a": 1}, "release quotes-b", "replicas on two nodes at least"),
        ([Worker("prod-2", "n2", "ready", {"app-a": 2})], {}, "release app-a", "deploy it again"),
    ],
)
def test_a_worker_not_ready_or_a_release_on_one_worker_only_is_refused_before_anything(
    workers: list[Worker], on_manager: dict[str, int], field: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        rolling.plan(workers, on_manager)
    assert caught.value.field == field and expected in caught.value.expected


class FakePorts:
    """Keeps each worker's state as the lab would (drained at the proxy, availability in Swarm,
    host running); fails at one step (its first run), before or after its effect, or signals
    itself after it."""

    def __init__(self, at: str = "", how: str = "") -> None:
        self.at, self.how = at, how
        self.calls: list[str] = []
        self.drained: dict[str, bool] = {}
        self.availability: dict[str, str] = {}
        self.running: dict[str, bool] = {}

    def run(self, action: str, host: str) -> str:
        key = f"{action} {host}"
        first = key not in self.calls  # it fails the first time only (the undo tries again)
        self.calls.append(key)
        if not first:
            self._effect(action, host)
            return "ok"
        if key == self.at and self.how == "before":
            raise LabError(f"{key} broke")
        if action == "restart" and key == self.at:
            self.running[host] = False  # stopped halfway: down, not started again
        else:
            self._effect(action, host)
        if key == self.at and self.how == "after":
            raise LabError(f"{key} broke")
        if key == self.at and self.how == "signal":
            os.kill(os.getpid(), signal.SIGINT)
        return "ok"

    def _effect(self, action: str, host: str) -> None:
        if action in ("proxy-drain", "proxy-undrain"):
            self.drained[host] = action == "proxy-drain"
        elif action in ("swarm-drain", "swarm-active"):
            self.availability[host] = "drain" if action == "swarm-drain" else "active"
        else:  # restart, start
            self.running[host] = True

    def whole(self) -> bool:
        return (
            not any(self.drained.values())
            and set(self.availability.values()) <= {"active"}
            and all(self.running.values())
        )


STEPS = rolling.plan([P2, P3], {"app-a": 1, "quotes-b": 1})


def test_a_run_that_ends_well_undoes_nothing() -> None:
    ports = FakePorts()
    said = rolling._apply(STEPS, ports, Progress(out=None))  # type: ignore[arg-type]
    assert ports.calls == [s.key for s in STEPS] and len(said) == len(STEPS)
    assert ports.whole()


@pytest.mark.parametrize("at", range(len(STEPS)))
@pytest.mark.parametrize("how", ["before", "after", "signal"])
def test_a_run_stopped_at_any_step_leaves_every_worker_whole_and_says_so(at: int, how: str) -> None:
    """Whatever stops the run, and wherever: no address left drained at the proxy, no worker
    left drained in Swarm, no host left stopped; the error names the step and the cause."""
    key = STEPS[at].key
    ports = FakePorts(at=key, how=how)
    with pytest.raises(LabError) as caught:
        rolling._apply(STEPS, ports, Progress(out=None))  # type: ignore[arg-type]
    assert ports.calls[: at + 1] == [s.key for s in STEPS[: at + 1]]
    assert ports.whole(), (ports.drained, ports.availability, ports.running, ports.calls)
    message = str(caught.value)
    assert f"at '{key}'" in message
    assert ("SIGINT" in message) if how == "signal" else (f"{key} broke" in message)
    # nothing of the next worker was begun
    later = {s.host for s in STEPS[at + 1 :]} - {STEPS[at].host}
    assert not any(
        c.split()[1] in later for c in ports.calls[at + 1 :] if c.startswith("proxy-drain")
    )


def test_an_undo_that_fails_does_not_stop_the_others() -> None:
    class Broken(FakePorts):
        def run(self, action: str, host: str) -> str:
            if action == "swarm-active":
                self.calls.append(f"{action} {host}")
                raise LabError("manager unreachable")
            return super().run(action, host)

    ports = Broken(at="restart prod-2", how="before")
    with pytest.raises(LabError) as caught:
        rolling._apply(STEPS, ports, Progress(out=None))  # type: ignore[arg-type]
    assert ports.calls[-3:] == ["start prod-2", "swarm-active prod-2", "proxy-undrain prod-2"]
    assert "its undo failed: manager unreachable" in str(caught.value)
