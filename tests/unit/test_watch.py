"""``invoke watch``'s pure parts: the edge's series into figures per release over the window,
the proxy's slots into a pool, and a frame as a person reads it (both releases of a canary
with their shares)."""

from __future__ import annotations

from types import SimpleNamespace

from rich.console import Console

from lab.proof import watch
from lab.release.activity import Activity

A, B = "a" * 12, "b" * 12
NOW = 1_000_000.0


def points(per_second: dict[int, float]) -> list[tuple[float | None, int]]:
    """Points of the 20 s before NOW (None where a release had no traffic)."""
    return [(per_second.get(t), t) for t in range(int(NOW) - 20, int(NOW) + 1)]


def test_figures_per_release_over_the_window_only() -> None:
    window = range(int(NOW) - watch.LAG - watch.WINDOW, int(NOW) - watch.LAG)
    series = [
        (f"edge.app.{A}.requests.2xx", points({t: 90 for t in window} | {int(NOW) - 1: 500})),
        (f"edge.app.{A}.requests.5xx", points({t: 1 for t in window})),
        (f"edge.app.{B}.requests.2xx", points({t: 10 for t in window})),
        (f"edge.app.{B}.requests.proxy", points({min(window): 3})),
        (f"edge.app.{B}.redispatched", points({min(window): 2})),
        (f"edge.app.{A}.latency.p50", points({t: 4.0 for t in window})),
        (f"edge.app.{A}.latency.p99", points({t: 9.0 for t in window} | {min(window): 30.0})),
        (f"edge.quotes.{A}.requests.2xx", points({t: 1000 for t in window})),  # another service
        ("edge.app.broken", points({min(window): 1})),  # another shape
    ]
    a, b = watch.figures(series, "app", NOW)
    assert (a.release, a.rps, a.failed_rps, a.p50_ms, a.p99_ms) == (A, 91.0, 1.0, 4.0, 30.0)
    assert (b.release, b.rps, b.failed_rps, b.p50_ms, b.p99_ms) == (B, 11.0, 1.0, None, None)
    assert watch.figures([], "app", NOW) == ()


def slot(fqdn: str, weight: int, admin: int = 0, operational: int = 2) -> SimpleNamespace:
    return SimpleNamespace(
        fqdn=fqdn,
        weight=weight,
        operational=operational,
        in_maintenance=bool(admin & 0x23),
        draining=bool(admin & 0x18),
    )


def test_the_pool_names_each_release_and_its_state() -> None:
    slots = [
        slot(f"app-{A}", 10),
        slot(f"app-{B}", 90),
        slot("", 0, admin=0x21, operational=0),  # a free slot
        slot(f"app-{'c' * 12}", 0, admin=0x08),
        slot(f"app-{'d' * 12}", 0, operational=0),
    ]
    assert [(s.release, s.weight, s.state) for s in watch.pool(slots, "app")] == [
        (B, 90, "UP"),
        (A, 10, "UP"),
        ("c" * 12, 0, "DRAIN"),
        ("d" * 12, 0, "DOWN"),
    ]


def test_a_releases_replicas_are_one_row_with_its_share_and_how_many_are_up() -> None:
    """A Swarm service's replicas: slots named tasks.<host>, HAProxy's weights scaled to 256."""
    slots = [
        *(slot(f"tasks.app-{A}", 256) for _ in range(3)),
        slot(f"tasks.app-{B}", 29),
        slot(f"tasks.app-{B}", 29, operational=0),
        slot(f"tasks.app-{B}", 28, admin=0x08),
        slot("", 0, admin=0x21, operational=0),
    ]
    got = watch.pool(slots, "app")
    assert [(s.release, s.weight, s.state, s.up, s.slots) for s in got] == [
        (A, 90, "UP", 3, 3),
        (B, 10, "UP", 1, 3),
    ]
    assert [watch._pooled(s) for s in got] == ["w90 UP 3/3", "w10 UP 1/3"]
    down = watch.pool([slot(f"tasks.app-{A}", 256, operational=0)] * 2, "app")
    assert [watch._pooled(s) for s in down] == ["w100 DOWN 0/2"]


def test_a_frame_during_a_canary_shows_both_releases_with_their_shares() -> None:
    view = watch.ServiceView(
        "app",
        "http://127.0.0.1:8000",
        A,
        "",
        (watch.Figures(A, 270.0, 0.0, 3.2, 11.0), watch.Figures(B, 30.0, 0.4, 3.9, 14.0)),
        (watch.Slot(A, 90, "UP"), watch.Slot(B, 10, "UP")),
        (),
    )
    run = Activity(f"deploy app {B}", "[12/16] canary at 10 %", NOW - 7, "me@cd (42)")
    frame = watch.Frame(NOW, (view,), "held by me@cd since ...", (run,), ("graphite: slow",))
    console = Console(width=110, record=True, color_system=None)
    console.print(watch.render(frame))
    text = console.export_text()
    assert f"running: deploy app {B}: [12/16] canary at 10 % (7 s)" in text
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if "│ " in line}
    assert "w90 UP" in rows[A] and "90.0 %" in rows[A] and "270.0" in rows[A]
    assert "w10 UP" in rows[B] and "10.0 %" in rows[B] and "0.4" in rows[B]
    assert "! graphite: slow" in text and "live: " + A in text


def test_a_service_with_nothing_routed_says_so() -> None:
    view = watch.ServiceView("quotes", "http://127.0.0.1:8001", None, "", (), (), ("proxy: x",))
    console = Console(width=110, record=True, color_system=None)
    console.print(watch.render(watch.Frame(NOW, (view,), "free", (), ())))
    text = console.export_text()
    assert "nothing live" in text and "empty" in text and "! proxy: x" in text
    assert "no release run in progress" in text and "deploy lock: free" in text
