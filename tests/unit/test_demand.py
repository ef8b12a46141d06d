"""Load on demand (``invoke load``): bad input refused saying what is expected, the progress
read from a file that is still being written, and the summary a person reads at the end. The
run itself (a real locust against the lab) is tried in tests/e2e/test_demand.py."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from lab.errors import ConfigError, LoadError
from lab.proof import demand, load

ROOT = Path(__file__).resolve().parents[2]
A, B = "a" * 12, "b" * 12


def test_a_plan_takes_the_services_public_port_and_its_load_paths() -> None:
    app = demand.plan(ROOT, "app", "50", "90s")
    assert (app.url, app.rate, app.seconds, app.paths) == ("http://127.0.0.1:8000", 50, 90, ())
    pypi = demand.plan(ROOT, "pypiserver", 20, "5m", ui_port=8089)
    assert pypi.url.startswith("http://127.0.0.1:") and pypi.paths and pypi.ui_port == 8089


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("app", "0", "5m"), "--rate"),
        (("app", "fast", "5m"), "requests per second"),
        (("app", "nan", "5m"), "--rate"),
        (("app", "501", "5m"), "1 to 500"),
        (("app", "50", "2s"), "--for"),
        (("app", "50", "2h"), "from 5s to 60m"),
        (("app", "50", "soon"), "a duration like 30s"),
        (("app", "500", "1h"), "at most 600,000 requests"),
        (("nosuch", "50", "5m"), "one of: app"),
    ],
)
def test_bad_input_is_refused_before_anything_runs(args: tuple[str, str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        demand.plan(ROOT, *args)


def test_a_bad_ui_port_is_refused() -> None:
    with pytest.raises(ConfigError, match="1024 to 65535"):
        demand.plan(ROOT, "app", "50", "5m", ui_port=80)


def test_a_taken_ui_port_is_refused_naming_the_way_out() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(LoadError, match=f"(?s)127.0.0.1:{port} is in use.*--ui-port"):
            demand._port_free(port)


def test_with_a_ui_locust_serves_its_page_on_loopback_only() -> None:
    argv = load.argv("http://127.0.0.1:8000", 50, 60, ui_port=8089)
    assert "--headless" not in argv and "--autostart" in argv
    assert argv[argv.index("--web-host") + 1] == "127.0.0.1"
    assert argv[argv.index("--web-port") + 1] == "8089"


def line(t: float, status: int = 200, release: str = A) -> str:
    verdict = "ok" if status == 200 else f"status {status}"
    return json.dumps(
        {
            "t": t,
            "ms": 5.0,
            "kind": "read",
            "user": "keepalive",
            "status": status,
            "error": "",
            "release": release,
            "verdict": verdict,
        }
    )


def test_the_tail_reads_only_whole_new_lines(tmp_path: Path) -> None:
    file = tmp_path / "load.jsonl"
    tail = demand.Tail(file)
    assert tail.read() == []  # not there yet
    now = time.time()
    first, second = line(now), line(now + 0.1, 503)
    file.write_text(first + "\n" + second[:20])  # the second line is being written
    assert [r.status for r in tail.read()] == [200]
    with file.open("a") as f:
        f.write(second[20:] + "\n")
    assert [r.status for r in tail.read()] == [503]
    assert tail.read() == []


def test_a_progress_line_counts_everything_and_shares_the_last_interval() -> None:
    wanted = demand.Demand("app", "http://127.0.0.1:8000", 50, 300, ())
    counts = demand.Progress()
    counts.add(load.parse("\n".join(line(1, 200, A) for _ in range(10))).requests)
    counts.add(
        load.parse(
            "\n".join([line(2, 200, A)] * 3 + [line(2, 200, B)] + [line(2, 502, B)])
        ).requests
    )
    assert counts.line(wanted, 10.2) == (
        "load app: 10 s of 300 s, 15 requests, 1 failed; now aaaaaaaaaaaa 75 %, bbbbbbbbbbbb 25 %"
    )


def traffic(tmp_path: Path, lines: list[str]) -> load.Traffic:
    t = load.Traffic("load-app", 50, tmp_path / "load-app.jsonl", started=0.5, ended=4.5)
    t.lines = load.parse("\n".join(lines))
    t.requests = t.lines.requests
    return t


def test_the_summary_gives_counts_latency_and_each_releases_share(tmp_path: Path) -> None:
    wanted = demand.Demand("app", "http://127.0.0.1:8000", 50, 4, ())
    seen = [line(1 + i / 100) for i in range(90)] + [line(2, 200, B)] * 10 + [line(3, 503)]
    got = demand.summarize(wanted, traffic(tmp_path, seen), stopped_early=True)
    assert (got.requests, got.failed, got.shares) == (101, 1, ((A, 90), (B, 10)))
    assert got.errors == (("status 503", 1),)
    text = demand.render(got)
    assert text.splitlines()[0] == (
        "load on app (http://127.0.0.1:8000) at 50 req/s stopped early (Ctrl-C): 101 requests "
        "in 4.0 s (25.2/s), 1 failed"
    )
    assert "p50 5.0 ms, p99 5.0 ms" in text and "90.0 %" in text and "10.0 %" in text
    assert "failed: 1 x status 503" in text
    # locust's own totals were never written: the oracle says it cannot vouch for the run
    assert "the oracle cannot vouch" in text


def test_a_run_with_no_good_answer_says_what_to_check(tmp_path: Path) -> None:
    wanted = demand.Demand("quotes", "http://127.0.0.1:8001", 10, 4, ())
    got = demand.summarize(wanted, traffic(tmp_path, [line(1, 0, "")] * 3), stopped_early=False)
    assert got.shares == () and "no good answer came" in demand.render(got)
