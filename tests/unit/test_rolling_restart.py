"""The rolling restart of prod's swarm workers (``lab.estate.rolling``): its plan as a table,
and its apply against fake ports with a failure, and a signal, at every step."""

from __future__ import annotations

import os
import signal

import pytest

from lab.errors import ConfigError, LabError
from lab.estate import rolling
from lab.estate.rolling import Step, Worker
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
    """Records each action; raises (or signals itself) at one of them."""

    def __init__(self, fail_at: str = "", signal_at: str = "") -> None:
        self.fail_at, self.signal_at = fail_at, signal_at
        self.calls: list[str] = []

    def run(self, action: str, host: str) -> str:
        key = f"{action} {host}"
        self.calls.append(key)
        if key == self.fail_at:
            raise LabError(f"{key} broke")
        if key == self.signal_at:
            os.kill(os.getpid(), signal.SIGINT)
        return "ok"


STEPS = rolling.plan([P2, P3], {"app-a": 1, "quotes-b": 1})


def test_a_run_that_ends_well_undoes_nothing() -> None:
    ports = FakePorts()
    said = rolling._apply(STEPS, ports, Progress(out=None))  # type: ignore[arg-type]
    assert ports.calls == [s.key for s in STEPS] and len(said) == len(STEPS)


def _undo_expected(done: list[Step]) -> list[str]:
    """What must be undone after ``done`` (the failing step included): each worker left
    drained at the proxy or in Swarm, or with its host maybe stopped, made whole again."""
    completed = {(s.action, s.host) for s in done}
    want = []
    for s in reversed(done):
        undo = rolling.UNDO.get(s.action)
        if undo and (undo, s.host) not in completed:
            want.append(f"{undo} {s.host}")
    return want


@pytest.mark.parametrize("at", range(len(STEPS)))
@pytest.mark.parametrize("how", ["failure", "signal"])
def test_a_run_stopped_at_any_step_undoes_what_it_did_and_says_so(at: int, how: str) -> None:
    key = STEPS[at].key
    ports = FakePorts(fail_at=key) if how == "failure" else FakePorts(signal_at=key)
    with pytest.raises(LabError) as caught:
        rolling._apply(STEPS, ports, Progress(out=None))  # type: ignore[arg-type]
    done = list(STEPS[: at + 1])
    undo = _undo_expected(done)
    assert ports.calls == [s.key for s in done] + undo
    message = str(caught.value)
    assert f"at '{key}'" in message
    assert ("SIGINT" in message) if how == "signal" else (f"{key} broke" in message)
    # the worker in hand is whole again: active in Swarm, nothing drained at the proxy
    host = STEPS[at].host
    ran = ports.calls
    if f"swarm-drain {host}" in ran:
        assert f"swarm-active {host}" in ran
    if f"proxy-drain {host}" in ran:
        assert f"proxy-undrain {host}" in ran


def test_an_undo_that_fails_does_not_stop_the_others() -> None:
    class Broken(FakePorts):
        def run(self, action: str, host: str) -> str:
            if action == "swarm-active":
                self.calls.append(f"{action} {host}")
                raise LabError("manager unreachable")
            return super().run(action, host)

    ports = Broken(fail_at="restart prod-2")
    with pytest.raises(LabError) as caught:
        rolling._apply(STEPS, ports, Progress(out=None))  # type: ignore[arg-type]
    assert ports.calls[-3:] == ["start prod-2", "swarm-active prod-2", "proxy-undrain prod-2"]
    assert "its undo failed: manager unreachable" in str(caught.value)
