"""``invoke bench``: cdlab's figures beside what a user would otherwise do, measured in one run
on this machine, written to ``bench/results/<stamp>-<commit>.json`` and ``.md``.

Scenarios: failed requests during deploys (blue/green, canary, a switch by proxy restart, a
naive stop/start, Docker Swarm's rolling update) under the same load; lead time of a code-only
change, stage by stage, against its irreducible part; rebuild after a code change and after a
dependency change; rollback warm and from the registry; the proxy's overhead; ``lab.up`` warm
(and cold, and ``lab.destroy``, from their last records).
Benchmarks are not tests: nothing here fails on a timing.

This module runs the scenarios in order and records the results (``run``, ``table``, ``write``);
the deploys under load are in ``lab.proof.strategies``, the single measurements in
``lab.proof.measures``, the page's charts in ``lab.proof.benchpage``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab import report
from lab.build import git
from lab.estate.state import State
from lab.proof import benchpage, nodefaults
from lab.proof.measures import (
    LEAD_RUNS,
    WRK_CONNECTIONS,
    lab_up_figures,
    lead_time,
    median_run,
    proxy_overhead,
    rebuild,
    rollbacks,
)
from lab.proof.measures import (
    edge_cost as measure_edge_cost,
)
from lab.proof.strategies import SWARM, chain, quiet, strategy_runs
from lab.release import pipeline
from lab.stack import project as stack

__all__ = ["RESULTS", "edge_cost", "faults", "faults_table", "run", "table", "write"]

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def run(lab: State, quick: bool, say: Callable[[str], None] = print) -> Path:
    deploys = 2 if quick else 10
    rates = [300] if quick else [300, 1000]
    strategies = ["bluegreen", "canary", "reload", "restart", "naive", "swarm", "swarm-start-first"]
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": git.short(git.commit(lab.config.root)),
        "quick": quick,
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
        "load_client": "locust (FastHttpUser), half keep-alive, half a connection per request",
        "swarm": SWARM,
    }
    with tempfile.TemporaryDirectory(prefix="cdlab-bench-") as tmp:
        ch = chain(lab, Path(tmp) / "clone")
        say("failed requests during deploys")
        results["deploys"] = [
            strategy_runs(lab, ch, strategy, deploys, rate, say)
            for rate in rates
            for strategy in strategies
        ]
        say(f"lead time (code-only change, warm; median of {LEAD_RUNS})")
        results["lead_time"] = median_run([lead_time(lab, ch) for _ in range(LEAD_RUNS)])
        say("rebuild")
        results["rebuild"] = rebuild(lab, ch, with_deps=not quick)
        say("rollback")
        results["rollback"] = rollbacks(lab)
    say("proxy overhead")
    results["proxy"] = proxy_overhead(lab, 5 if quick else 20)
    if not quick:  # minutes of a host down: the full bench only (or ``invoke bench --faults``)
        results["faults"] = {"rate": FAULT_RATE, "cases": fault_cases(lab, FAULT_RATE, say)}
    pipeline.deploy(
        lab, quiet(), "app", "HEAD"
    )  # the checkout's commit live again, as lab.up left it
    # the bench's own builds off cd (it holds the lab: nothing else builds meanwhile)
    stack.tidy_builder(lab, [], every_build=True)
    say("lab.up")
    results["lab"] = lab_up_figures(lab)
    return write(results)


def table(results: dict[str, Any]) -> str:
    rows = [
        (
            f"failed requests, {d['strategy']} @ {d['rate']} req/s ({d['deploys']} deploys"
            + (f", {len(d['aborted'])} aborted" if d.get("aborted") else "")
            + ")",
            f"{d['failed']} of {d['total']}"
            + (f" ({d['achieved_rate']} req/s achieved)" if "achieved_rate" in d else ""),
        )
        for d in results["deploys"]
    ]
    lt = results["lead_time"]
    runs = lt.get("runs_s", [lt["seconds"]])
    rows.append(
        (
            "lead time, code-only change (commit -> 100 % live)",
            f"{lt['seconds']} s"
            + (f" (median of {', '.join(map(str, runs))})" if len(runs) > 1 else ""),
        )
    )
    rows.append(
        (
            "  irreducible (unit tests + integration tests + start)",
            f"{lt['irreducible']} s (ratio {lt['ratio']})",
        )
    )
    if "after_live_s" in lt:
        rows.append(
            ("  then drain, retire, prune (users already on it)", f"{lt['after_live_s']} s")
        )
    for kind, stages in results["rebuild"].items():
        total = round(sum(stages.values()), 1)
        rows.append((f"rebuild after a {kind.replace('_', ' ')}", f"{total} s"))
    rb = results["rollback"]
    rows.append(("rollback, warm (to 100 % of responses)", f"{rb['warm_to_100_ms']} ms"))
    rows.append(
        (
            "rollback, pruned (started from the registry)",
            f"{rb['pruned_command_s']} s (switch to 100 %: {rb['pruned_to_100_ms']} ms)",
        )
    )
    px = results["proxy"]
    if "throughput_ratio" in px:
        rows.append(
            (
                f"proxy vs direct, req/s (wrk, {WRK_CONNECTIONS} connections)",
                f"{px['proxy']['rps']} vs {px['direct']['rps']} (ratio {px['throughput_ratio']})",
            )
        )
        rows.append(
            (
                "proxy vs direct, p50 / p99",
                f"{px['proxy']['p50_ms']}/{px['proxy']['p99_ms']} ms vs "
                f"{px['direct']['p50_ms']}/{px['direct']['p99_ms']} ms",
            )
        )
    lab_figs = results["lab"]
    rows.append(("lab.up warm", f"{lab_figs['warm_s']} s"))
    if lab_figs["cold_s_last_recorded"]:
        rows.append(("lab.up cold (last recorded)", f"{lab_figs['cold_s_last_recorded']} s"))
    if lab_figs.get("destroy_s_last_recorded"):
        rows.append(("lab.destroy (last recorded)", f"{lab_figs['destroy_s_last_recorded']} s"))
    for c in results.get("faults", {}).get("cases", []):
        rows.append(
            (
                f"failed requests, {c['case']} @ {results['faults']['rate']} req/s",
                f"not measured ({c['not_measured']})"
                if "not_measured" in c
                else f"{c['failed']} of {c['total']} (longest gap {c['outage_s']} s)",
            )
        )
    return report.table(("MEASURE", "RESULT"), rows)


def write(results: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = results["date"].replace(":", "").replace("-", "").split("+")[0]
    base = RESULTS / f"{stamp}-{results['commit']}{'-quick' if results['quick'] else ''}"
    base.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    page = (
        f"# cdlab bench {results['date']} (commit {results['commit']}"
        f"{', quick' if results['quick'] else ''})\n\n```\n{table(results)}\n```\n\n"
        f"Plots: [{base.name}.html]({base.name}.html). Load client: {results['load_client']}. "
        f"{results.get('swarm', '')}.\n"
    )
    base.with_suffix(".md").write_text(page)
    benchpage.write(base.with_suffix(".html"), results, table(results))
    return base.with_suffix(".json")


FAULT_RATE = 100  # the fault matrix's rate


def fault_cases(
    lab: State, rate: int = FAULT_RATE, say: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """A prod host lost under the same load, side by side: on a swarm prod a worker killed (its
    replicas run on elsewhere), then, on any prod, prod's engine restarted (one host holds the
    stack and every release). A case that could not be measured says why instead of figures."""
    cases: list[dict[str, Any]] = []
    if lab.config.swarm_manager:
        say("a worker of prod's swarm killed")
        try:
            outcome, victim = nodefaults.worker_lost(lab, rate, "bench-worker-killed", say)
            cases.append({"case": f"a worker killed ({victim})", **outcome.figures()})
        except Exception as exc:  # recorded: the rest of the bench's figures are kept
            cases.append(
                {"case": "a worker killed", "not_measured": f"{type(exc).__name__}: {exc}"}
            )
    else:
        cases.append(
            {
                "case": "a worker killed",
                "not_measured": "prod is one host: run the bench on a topology whose prod is a "
                "swarm (docs/lab.md, 'prod as a swarm')",
            }
        )
    say("prod's engine restarted")
    try:
        outcome = nodefaults.engine_restarted(lab, rate, "bench-engine-restart", say)
        cases.append({"case": "prod's engine restarted", **outcome.figures()})
    except Exception as exc:  # recorded: the rest of the bench's figures are kept
        cases.append(
            {"case": "prod's engine restarted", "not_measured": f"{type(exc).__name__}: {exc}"}
        )
    return cases


def faults(lab: State, rate: int = FAULT_RATE, say: Callable[[str], None] = print) -> Path:
    """``fault_cases`` alone, written to ``bench/results/<stamp>-<commit>-faults.json`` and
    ``.md``."""
    date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    commit = git.short(git.commit(lab.config.root))
    nodes = [h.name for h in lab.config.hosts if h.swarm] or ["prod"]
    results = {
        "date": date,
        "commit": commit,
        "rate": rate,
        "prod_nodes": nodes,
        "cases": fault_cases(lab, rate, say),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = date.replace(":", "").replace("-", "").split("+")[0]
    base = RESULTS / f"{stamp}-{commit}-faults"
    base.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    base.with_suffix(".md").write_text(
        f"# cdlab bench: a prod host lost, {date} (commit {commit})\n\n"
        f"```\n{faults_table(results)}\n```\n"
    )
    return base.with_suffix(".json")


def faults_table(results: dict[str, Any]) -> str:
    rows = []
    for c in results["cases"]:
        if "not_measured" in c:
            rows.append((c["case"], "-", "-", "-", f"not measured: {c['not_measured']}"))
            continue
        back = (
            f"replicas elsewhere in {c['replicas_elsewhere_s']} s"
            if "replicas_elsewhere_s" in c
            else f"serving again in {c['back_s']} s"
        )
        rows.append(
            (
                c["case"],
                f"{c['failed']} of {c['total']}",
                f"{c['outage_s']} s",
                str(c["lost"]),
                back,
            )
        )
    head = (f"CASE @ {results['rate']} req/s", "FAILED", "LONGEST GAP", "LOST", "RECOVERY")
    return report.table(head, rows)


def edge_cost(lab: State, say: Callable[[str], None] = print) -> Path:
    """What the edge's figures cost the proxy (``measures.edge_cost``), written to
    ``bench/results/<stamp>-<commit>-edge-cost.json``."""
    date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    commit = git.short(git.commit(lab.config.root))
    say("what the edge's figures cost (proxy throughput, the request log off and on in turns)")
    results = {"date": date, "commit": commit, **measure_edge_cost(lab, say=say)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = date.replace(":", "").replace("-", "").split("+")[0]
    path = RESULTS / f"{stamp}-{commit}-edge-cost.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path
