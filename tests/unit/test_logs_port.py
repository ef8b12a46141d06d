"""The workstation's side of the log store (lab.ports.logs): the reader's command, --since,
and running it in the store's container through a fake engine API."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from cdlab_logs import __main__ as cli
from cdlab_logs import config

from lab.errors import ConfigError, StackError
from lab.ports import logs


@pytest.mark.parametrize(
    ("args", "tail"),
    [
        (("app", None, None, False, None, False), []),
        (
            ("app", "3f2a1b", 300.0, True, 50, True),
            [
                "--release=3f2a1b",
                "--since=300.0",
                "--lines=50",
                "--follow",
                "--while-stdin-open",
                "--json",
            ],
        ),
        (("app", "", 90, False, 0, False), ["--since=90.0", "--lines=0"]),
        (("-x", "--json", None, False, None, False), ["--release=--json"]),
    ],
)
def test_query_argv(args: tuple[Any, ...], tail: list[str]) -> None:
    argv = logs.query_argv(*args)
    assert argv == ["python3", "-m", "cdlab_logs", "query", f"--service={args[0]}", *tail]


def test_the_store_understands_the_command_the_workstation_builds() -> None:
    argv = logs.query_argv("app", "3f2a1b", 300, True, 50, True)
    parsed = cli.parser().parse_args(argv[3:])
    assert (parsed.service, parsed.release, parsed.since, parsed.lines) == (
        "app",
        "3f2a1b",
        300,
        50,
    )
    assert parsed.follow and parsed.json and parsed.while_stdin_open
    assert (logs.PORT, logs.NO_LOGS) == (config.PORT, cli.NO_LOGS)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300.0), ("90s", 90.0), ("2h", 7200.0), ("30", 30.0), ("1.5m", 90.0)],
)
def test_parse_since(text: str, seconds: float) -> None:
    assert logs.parse_since(text) == seconds


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "a duration like 30s, 5m or 2h"),
        ("5mm", "a duration like 30s, 5m or 2h"),
        ("5d", "a duration like 30s, 5m or 2h"),
        ("m", "a duration like 30s, 5m or 2h"),
        ("0", "a duration from 1s to 720h"),
        ("-5m", "a duration from 1s to 720h"),
        ("nan", "a duration from 1s to 720h"),
        ("9999h", "a duration from 1s to 720h"),
    ],
)
def test_a_bad_since_says_the_expected_form(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        logs.parse_since(text)
    assert str(err.value) == f"bad value for '--since': {text!r}; expected {expected}"


class FakeApi:
    """The engine's exec endpoints: ``output`` streamed in chunks, then ``states`` answered by
    exec_inspect one after the other (the last one again)."""

    def __init__(
        self, output: Iterable[bytes], states: list[dict[str, Any]], fail: str = ""
    ) -> None:
        self.output, self.states, self.fail = output, states, fail
        self.created: dict[str, Any] = {}
        self.closed = False

    def exec_create(self, container: str, cmd: list[str], **kwargs: Any) -> dict[str, str]:
        import docker.errors

        if self.fail:
            raise docker.errors.APIError(self.fail)
        self.created = {"container": container, "cmd": cmd, **kwargs}
        return {"Id": "e1"}

    def exec_start(self, exec_id: str, stream: bool, demux: bool) -> Stream:
        assert (exec_id, stream, demux) == ("e1", True, False)
        return Stream(self, iter(self.output))

    def exec_inspect(self, exec_id: str) -> dict[str, Any]:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


class Stream:
    def __init__(self, api: FakeApi, chunks: Iterator[bytes]) -> None:
        self.api, self.chunks = api, chunks

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks

    def close(self) -> None:
        self.api.closed = True


class FakeContainer:
    id, name = "c0ffee", "cdlab-stack-logs-1"

    def __init__(self, api: FakeApi) -> None:
        self.client = type("Client", (), {"api": api})()


def test_read_copies_the_output_as_it_comes_and_returns_the_exit_code() -> None:
    # "é" split across two chunks: decoded whole
    api = FakeApi(
        [b"line \xc3", b"\xa9\n", b"no logs\n"],
        [{"Running": True, "ExitCode": None}, {"Running": False, "ExitCode": 3}],
    )
    out = io.StringIO()
    argv = logs.query_argv("app", None, None, True, None, False)
    assert logs.read(FakeContainer(api), argv, out) == 3
    assert out.getvalue() == "line é\nno logs\n"
    assert api.created == {"container": "c0ffee", "cmd": argv, "stdin": True}
    assert api.closed


def test_read_without_follow_keeps_stdin_closed() -> None:
    api = FakeApi([b"x\n"], [{"Running": False, "ExitCode": 0}])
    argv = logs.query_argv("app", None, None, False, None, False)
    assert logs.read(FakeContainer(api), argv, io.StringIO()) == 0
    assert api.created["stdin"] is False


def test_read_an_interrupt_closes_the_connection_and_propagates() -> None:
    def interrupted() -> Iterator[bytes]:
        yield b"first\n"
        raise KeyboardInterrupt

    api = FakeApi(interrupted(), [{"Running": True, "ExitCode": None}])
    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        logs.read(FakeContainer(api), ["x"], out)
    assert api.closed and out.getvalue() == "first\n"


def test_read_says_when_the_store_cannot_run_it() -> None:
    api = FakeApi([], [{}], fail="container c0ffee is not running")
    with pytest.raises(StackError) as err:
        logs.read(FakeContainer(api), ["x"], io.StringIO())
    assert err.value.services == ("logs",)
    assert "could not read the logs in the log store's container 'cdlab-stack-logs-1'" in str(
        err.value
    )
    assert "is not running" in str(err.value) and "invoke stack.apply" in str(err.value)


def test_read_waits_for_the_exit_code_within_a_bound() -> None:
    api = FakeApi([], [{"Running": True, "ExitCode": None}])
    with pytest.raises(StackError, match=r"had not within 0 s \(running True, exit code None\)"):
        logs.read(FakeContainer(api), ["x"], io.StringIO(), timeout=0.1)
