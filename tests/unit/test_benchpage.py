"""The bench page's charts (pure): one bar per measured row, red where requests failed."""

from __future__ import annotations

import subprocess
import xml.dom.minidom
from pathlib import Path

import pytest

from lab.build import git
from lab.proof import bench, benchpage, measures, strategies


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
    got = measures.median_run(runs)
    assert got["seconds"] == 2.4 and got["ratio"] == 1.2
    assert got["runs_s"] == [2.6, 2.2, 2.4] and got["runs_ratio"] == [1.3, 1.1, 1.2]
    assert measures.median_run(runs[:2])["seconds"] == 2.2  # even: the lower middle


WRK = """\
Running 3s test @ http://proxy:8000/version
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.04ms    3.19ms  61.68ms   96.60%
    Req/Sec     1.47k   214.84     1.81k    75.00%
  Latency Distribution
     50%    2.57ms
     75%    3.37ms
     90%    4.34ms
     99%   13.38ms
  8768 requests in 3.00s, 2.88MB read
Requests/sec:   2919.10
Transfer/sec:      0.96MB
"""


def test_a_wrk_report_gives_rate_percentiles_and_errors() -> None:
    assert measures.parse_wrk(WRK) == {
        "rps": 2919.1,
        "p50_ms": 2.57,
        "p99_ms": 13.38,
        "requests": 8768,
        "errors": 0,
    }
    slow = WRK.replace("50%    2.57ms", "50%  850.00us").replace("99%   13.38ms", "99%    1.20s")
    worse = slow.replace(
        "Requests/sec:",
        "  Socket errors: connect 0, read 3, write 0, timeout 2\n"
        "  Non-2xx or 3xx responses: 4\nRequests/sec:",
    )
    got = measures.parse_wrk(worse)
    assert (got["p50_ms"], got["p99_ms"], got["errors"]) == (0.85, 1200.0, 9)
    with pytest.raises(ValueError, match="not a wrk"):
        measures.parse_wrk("wrk: unable to connect to proxy:8000 Connection refused")


def test_two_bench_chains_never_commit_the_same_tree(tmp_path: Path) -> None:
    """A repeated tree is a cache hit on cd (no unit tests run): each run's change is its own."""
    base = tmp_path / "base"
    web = base / "services/app/app/web.py"
    web.parent.mkdir(parents=True)
    web.write_text("<title>app</title>\n")
    subprocess.run(["git", "init", "-q", str(base)], check=True)
    subprocess.run(["git", "-C", str(base), "add", "."], check=True)
    git.commit_all(base, "base")
    trees = []
    for name in ("one", "two"):
        clone = base.parent / name
        subprocess.run(["git", "clone", "-q", str(base), str(clone)], check=True)
        ch = strategies.Chain(state=None, root=clone)  # type: ignore[arg-type]  # commit() needs no lab
        ch.commit()
        trees.append(subprocess.check_output(["git", "-C", str(clone), "rev-parse", "HEAD^{tree}"]))
        assert f"bench {ch.token}.1 " in (clone / "services/app/app/web.py").read_text()
    assert trees[0] != trees[1]


FAULTS = {
    "rate": 100,
    "cases": [
        {
            "case": "a worker killed (prod-2)",
            "failed": 0,
            "total": 2400,
            "outage_s": 0.55,
            "lost": 0,
            "replicas_elsewhere_s": 18.2,
        },
        {
            "case": "prod's engine restarted",
            "failed": 1012,
            "total": 6100,
            "outage_s": 9.8,
            "lost": 0,
            "back_s": 41.3,
        },
    ],
}


def test_the_fault_cases_stand_side_by_side_with_their_recovery() -> None:
    lines = bench.faults_table(FAULTS).splitlines()
    assert "CASE @ 100 req/s" in lines[0] and "FAILED" in lines[0]
    worker, restart = lines[-2], lines[-1]
    assert "0 of 2400" in worker and "replicas elsewhere in 18.2 s" in worker
    assert "1012 of 6100" in restart and "serving again in 41.3 s" in restart


def test_a_fault_case_not_measured_says_why_instead_of_figures() -> None:
    results = {
        "rate": 100,
        "cases": [{"case": "a worker killed", "not_measured": "prod is one host"}],
    }
    (row,) = bench.faults_table(results).splitlines()[-1:]
    assert "not measured: prod is one host" in row and " - " in row
