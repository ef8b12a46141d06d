"""``invoke bench``: cdlab's figures beside what a user would otherwise do, measured in one run
on this machine, written to ``bench/results/<stamp>-<commit>.json`` and ``.md``.

Scenarios: failed requests during deploys (blue/green, canary, a switch by proxy restart, a
naive stop/start, Docker Swarm's rolling update) under the same load; lead time of a code-only
change, stage by stage, against its irreducible part; rebuild after a code change and after a
dependency change; rollback warm and from the registry; the proxy's overhead; ``lab.up`` warm
(and cold, and ``lab.destroy``, from their last records).
Benchmarks are not tests: nothing here fails on a timing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import re
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab import report
from lab.build import git
from lab.build.builder import ImageSpec, infra_tag
from lab.estate.state import State
from lab.ports import engines
from lab.progress import Progress
from lab.proof import benchpage, controls, load
from lab.release import api as release
from lab.release import judge, pipeline
from lab.stack import project as stack
from lab.stack import services

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
CONTROLS = {  # on CONTROL_PORT, not behind cdlab's proxy
    "reload": controls.reload,
    "naive": controls.naive,
    "swarm": controls.swarm,
    "swarm-start-first": controls.swarm_start_first,
}
SWARM = (
    "Docker Swarm rolling update on a one-node swarm on prod, endpoint mode dnsrr (no routing "
    "mesh or VIP: this kernel has no IPVS), healthcheck every 1 s, monitor 2 s, failure_action "
    "rollback; 'swarm': host-mode published port, order stop-first (forced by the one host "
    "port); 'swarm-start-first': no published port, order start-first, behind an HAProxy whose "
    "servers are the addresses of tasks.<service> in Docker's DNS, asked every second"
)


def quiet() -> Progress:
    """A progress that prints nothing (a fresh one each time: a run's record holds its stages)."""
    return Progress(out=None)


@dataclasses.dataclass
class Chain:
    """A throwaway clone with one-line commits of the app, for deploys that need new releases.

    Each chain marks its commits with a token of its own, so no run's change repeats an earlier
    run's tree: a repeated tree would be a cache hit on cd (no unit tests, no build), not a
    code change."""

    state: State
    root: Path
    n: int = 0
    token: str = dataclasses.field(default_factory=lambda: secrets.token_hex(4))

    def commit(self, path: str = "services/app/app/web.py", marker: str = "<title>") -> str:
        target = self.root / path
        text = target.read_text()
        self.n += 1
        if marker in text:
            i = text.index(marker) + len(marker)
            text = text[:i] + f"bench {self.token}.{self.n} " + text[i:]
        else:
            text += f"\n# bench {self.token}.{self.n}\n"
        target.write_text(text)
        return git.commit_all(self.root, f"bench {self.n}", author="cdlab-bench")


def chain(lab: State, where: Path) -> Chain:
    subprocess.run(["git", "clone", "-q", "--shared", str(lab.config.root), str(where)], check=True)
    return Chain(lab.at(where), where)


def _strategy_runs(
    lab: State, ch: Chain, strategy: str, deploys: int, rate: int, say: Callable[[str], None]
) -> dict[str, Any]:
    app = services.load(lab.config.root, "app")
    shas = [ch.commit() for _ in range(deploys)]
    for sha in shas:  # built before the load: the switch is what is measured
        pipeline.build(ch.state, quiet(), app, sha)
    url = "http://127.0.0.1:8000"
    if strategy in CONTROLS:  # on a published port, no proxy: the old release first
        url = f"http://127.0.0.1:{services.CONTROL_PORT}"
        head = git.commit(lab.config.root)
        CONTROLS[strategy](
            lab,
            release.candidate(app, pipeline.build(lab, quiet(), app, head), git.short(head)),
            quiet(),
        )
    aborted: list[str] = []
    try:
        traffic = _under_load(lab, ch, app, strategy, shas, rate, url, aborted)
    finally:
        controls.remove_naive(lab, "app")
        controls.remove_reload(lab, "app")
        controls.remove_swarm(lab, "app")
    s = traffic.summary()
    note = f", {len(aborted)} aborted by the judge" if aborted else ""
    say(
        f"  {strategy:17s} {rate} req/s: {s['failed']} failed of {s['total']} "
        f"({deploys} deploys{note})"
    )
    return {
        "aborted": aborted,
        "strategy": strategy,
        "rate": rate,
        "deploys": deploys,
        "total": s["total"],
        "achieved_rate": s["achieved_rate"],
        "failed": s["failed"],
        "p99_ms": s["p99_ms"],
        "longest_gap_ms": s["longest_gap_ms"],
    }


def _under_load(
    lab: State,
    ch: Chain,
    app: services.Service,
    strategy: str,
    shas: list[str],
    rate: int,
    url: str,
    aborted: list[str],
) -> load.Traffic:
    with load.running(rate=rate, name=f"bench-{strategy}-{rate}", url=url) as traffic:
        time.sleep(3)
        for sha in shas:
            traffic.mark(f"{strategy} {git.short(sha)}")
            if strategy == "bluegreen":
                pipeline.deploy(ch.state, quiet(), "app", sha, bake=0)
            elif strategy == "canary":
                try:
                    pipeline.deploy(
                        ch.state,
                        quiet(),
                        "app",
                        sha,
                        "canary",
                        (50, 100),
                        3.0,
                        judge.Thresholds(min_requests=20),
                        bake=0,
                    )
                except release.ReleaseError as exc:  # the judge said no: a result, not a crash
                    aborted.append(str(exc).split(". Every request")[0])
            else:
                built = pipeline.build(ch.state, quiet(), app, sha)
                candidate = release.candidate(app, built, git.short(sha))
                if strategy in CONTROLS:
                    CONTROLS[strategy](lab, candidate, quiet())
                else:  # restart: start beside, then switch by restarting the proxy
                    release.start_beside(lab, candidate)
                    controls.by_restart(lab, "app", candidate.release)
                    # as cdlab's switch does: releases out of the pool go (each holds database
                    # connections; ten of them exhaust postgres' 200)
                    current = release.current_routes(lab, "app")
                    release.retire(lab, "app", {s.release for s in current.servers})
            time.sleep(2)
    return traffic


def lead_time(lab: State, ch: Chain) -> dict[str, Any]:
    """Commit -> 100 % live for a code-only change, with warm caches: the wall clock from the
    deploy's call (the commit exists) until every response comes from the new release (the
    switch's route write plus the time to the first of its unbroken run of answers from it;
    confirming that run, draining, retiring and pruning come after, users already on it).

    Irreducible: the unit tests (BuildKit's time of the build step that runs them: the process,
    interpreter start included), the integration tests (their container, run to completion)
    and the container start (create until the release answers its probe)."""
    sha = ch.commit()
    progress = quiet()
    started = time.monotonic()
    rec = pipeline.deploy(ch.state, progress, "app", sha, bake=0)  # lead time ends at 100 %
    switch = progress.get("switch")
    assert switch is not None, "the deploy made no switch"
    upto = progress.stages.index(switch) + 1
    # live at the first response of the unbroken run from the new release: the switch stage
    # goes on to confirm it (20 answers in a row), users already on the new release
    to_100 = switch.figures.get("to_100_s", switch.seconds)
    total = progress.ended["switch"] - started - (switch.seconds - to_100)
    staged = sum(s.seconds for s in progress.stages[: upto - 1]) + to_100
    stages = {s.key: round(s.seconds, 2) for s in progress.stages}
    stages["switch"] = round(to_100, 2)
    stages["(between stages: lock, route reads, events)"] = round(total - staged, 2)
    unit = unit_test_seconds(_build_log(lab, "app"))
    irreducible = (
        unit
        + rec.timings.get("tests", 0)
        + rec.timings.get("start", 0)
        + rec.timings.get("healthy", 0)
    )
    return {
        "seconds": round(total, 2),
        "after_live_s": round(sum(s.seconds for s in progress.stages[upto:]), 2),
        "stages": stages,
        "unit_tests": round(unit, 2),
        "irreducible": round(irreducible, 2),
        "ratio": round(total / irreducible, 2) if irreducible else None,
    }


LEAD_RUNS = 3  # one run's time varies with what else the 2 cores are doing


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median lead time, with every run's time and ratio beside it (pure)."""
    ordered = sorted(runs, key=lambda r: float(r["seconds"]))
    return {
        **ordered[(len(ordered) - 1) // 2],
        "runs_s": [r["seconds"] for r in runs],
        "runs_ratio": [r["ratio"] for r in runs],
    }


def _build_log(lab: State, image: str) -> str:
    log = lab.logs / f"build-{image}.log"
    return log.read_text() if log.exists() else ""


def unit_test_seconds(log: str) -> float:
    """The run time of the build step that runs the unit tests (a ``RUN`` of pytest), from a
    BuildKit plain log (pure); 0 when the step is not in it (e.g. cached)."""
    step = re.search(r"^#(\d+) \[[^\]]*\] RUN [^\n]*pytest", log, re.MULTILINE)
    done = step and re.search(rf"^#{step.group(1)} DONE ([0-9.]+)s$", log, re.MULTILINE)
    return float(done.group(1)) if done else 0.0


def rebuild(lab: State, ch: Chain, with_deps: bool) -> dict[str, Any]:
    app = services.load(lab.config.root, "app")
    sha = ch.commit()  # a one-line code change
    progress = Progress(out=None)
    pipeline.build(ch.state, progress, app, sha)
    out = {"code_change": {s.name: round(s.seconds, 2) for s in progress.changed}}
    if with_deps:
        sha = ch.commit("services/app/requirements.txt", "\0")  # a comment: the layer changes
        progress = Progress(out=None)
        pipeline.build(ch.state, progress, app, sha)
        out["dependency_change"] = {s.name: round(s.seconds, 2) for s in progress.changed}
    return out


def rollbacks(lab: State) -> dict[str, Any]:
    _, warm = pipeline.rollback(lab, quiet(), "app")
    current = release.current_routes(lab, "app")
    previous = next(s.release for s in current.servers if s.release != current.live)
    release.remove(lab, "app", previous, stop_timeout=5)
    started = time.monotonic()
    _, pruned = pipeline.rollback(lab, quiet(), "app", to=previous)
    command = time.monotonic() - started
    return {
        "warm_to_100_ms": round(warm * 1000, 1),
        "pruned_to_100_ms": round(pruned * 1000, 1),
        "pruned_command_s": round(command, 2),
    }


WRK_CONNECTIONS, WRK_THREADS = 8, 2  # the same client both ways; 2 threads for the 2 cores
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(text: str) -> dict[str, Any]:
    """req/s, p50 and p99 (ms) and the errors of a ``wrk --latency`` report (pure)."""

    def ms(value: str) -> float:
        number = re.match(r"([0-9.]+)([a-z]+)", value)
        if not number or number.group(2) not in _UNITS:
            raise ValueError(f"not a wrk duration: {value!r}")
        return float(number.group(1)) * _UNITS[number.group(2)]

    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.MULTILINE)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.MULTILINE)
    done = re.search(r"^\s+(\d+) requests in", text, re.MULTILINE)
    if not (rps and p50 and p99 and done):
        raise ValueError(f"not a wrk --latency report:\n{text[-500:]}")
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = sum(int(n) for n in socket.groups()) if socket else 0
    return {
        "rps": round(float(rps.group(1)), 1),
        "p50_ms": round(ms(p50.group(1)), 2),
        "p99_ms": round(ms(p99.group(1)), 2),
        "requests": int(done.group(1)),
        "errors": errors + (int(bad.group(1)) if bad else 0),
    }


def wrk_image(lab: State) -> str:
    """``bench/wrk``'s image (wrk from Debian's packages), built on cd when missing, on prod."""
    root, sha = lab.config.root, git.commit(lab.config.root)
    base = f"{lab.config.registry_addr}/{(lab.dir / 'base-image').read_text().strip()}"
    spec = ImageSpec(
        "bench-wrk", "bench/wrk", "Dockerfile", infra_tag(git.tree(root, sha, "bench/wrk"), base)
    )
    built = stack.build(lab, [spec], sha, quiet())[spec.name]
    stack.pull(lab, "prod", [built.pinned])
    return built.pinned


def proxy_overhead(lab: State, seconds: float) -> dict[str, Any]:
    """Throughput and latency through the proxy vs straight to the live release, with the same
    client (wrk, ``WRK_CONNECTIONS`` keep-alive connections) from a container on prod's
    network."""
    live = release.current_routes(lab, "app").live or ""
    image = wrk_image(lab)
    out: dict[str, Any] = {
        "client": f"wrk (Debian), {WRK_THREADS} threads, {WRK_CONNECTIONS} connections"
    }
    with engines.connect(lab, lab.config.host("prod"), timeout=300) as client:
        for label, host in (("proxy", "proxy"), ("direct", f"app-{live}")):
            command = (
                f"wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{seconds:.0f}s --latency "
                f"http://{host}:8000/version"
            )
            code, text = release.one_off(client, image, command, {}, "bench", user=None)
            try:
                if code != 0:
                    raise ValueError(f"exit {code}")
                out[label] = parse_wrk(text)
            except ValueError as exc:
                out[label] = {"error": f"{exc}: {text.strip()[-300:]}"}
    if "rps" in out.get("proxy", {}) and "rps" in out.get("direct", {}):
        out["throughput_ratio"] = round(out["proxy"]["rps"] / out["direct"]["rps"], 3)
    return out


def lab_up_figures(lab: State) -> dict[str, Any]:
    from lab import config
    from lab.estate import lifecycle

    started = time.monotonic()
    lifecycle.up(config.load(), Progress(out=None))
    warm = time.monotonic() - started
    cold = None
    for path in sorted(lab.runs.glob("up-*.json")):
        doc = json.loads(path.read_text())
        names = {s["name"]: s["status"] for s in doc.get("stages", [])}
        if names.get("base image (mmdebstrap + docker import)") == "changed":
            cold = doc.get("seconds") or sum(s["seconds"] for s in doc["stages"])
    destroyed = sorted(lab.runs.glob("destroy-*.json"))
    last_destroy = json.loads(destroyed[-1].read_text())["seconds"] if destroyed else None
    return {
        "warm_s": round(warm, 1),
        "cold_s_last_recorded": cold,
        "destroy_s_last_recorded": last_destroy,
    }


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
            _strategy_runs(lab, ch, strategy, deploys, rate, say)
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
