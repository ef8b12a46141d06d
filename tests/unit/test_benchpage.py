"""The bench page's charts (pure): one bar per measured row, red where requests failed."""

from __future__ import annotations

import xml.dom.minidom

from lab import bench, benchpage


def test_failed_requests_chart_marks_losses_and_parses_as_svg() -> None:
    results = {
        "deploys": [
            {"strategy": "bluegreen", "rate": 300, "total": 9000, "failed": 0},
            {"strategy": "swarm", "rate": 300, "total": 3000, "failed": 150},
        ],
        "rollback": {"warm_to_100_ms": 8.0, "pruned_command_s": 7.5},
    }
    chart, rollback = benchpage.charts(results)
    svg = xml.dom.minidom.parseString(chart.split("</h2>")[1])
    fills = [r.getAttribute("fill") for r in svg.getElementsByTagName("rect")]
    assert fills == [benchpage.GOOD, benchpage.BAD]
    assert "150 of 3000" in chart and "0 of 9000" in chart
    assert "7.5 s" in rollback and "8.0 ms" in rollback


def test_the_lead_time_is_the_median_run_with_every_run_beside_it() -> None:
    runs = [{"seconds": s, "ratio": s / 2} for s in (2.6, 2.2, 2.4)]
    got = bench.median_run(runs)
    assert got["seconds"] == 2.4 and got["ratio"] == 1.2
    assert got["runs_s"] == [2.6, 2.2, 2.4] and got["runs_ratio"] == [1.3, 1.1, 1.2]
    assert bench.median_run(runs[:2])["seconds"] == 2.2  # even: the lower middle
