"""The bench's single measurements, each on the running lab: the lead time of a code-only change
(stage by stage, against its irreducible part), rebuilds after a code and a dependency change,
rollbacks warm and from the registry, the proxy's overhead (wrk through it and straight to the
live release), and ``lab.up`` warm (cold and ``lab.destroy`` from their last records).

Contract: each function returns plain figures (dicts of numbers and labels); none fails on a
timing (benchmarks are not tests), only when the lab itself does. The parsers
(``unit_test_seconds``, ``parse_wrk``) and ``median_run`` are pure and tested without a lab.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

from lab.build import git
from lab.build.builder import ImageSpec, infra_tag
from lab.estate.state import State
from lab.ports import engines
from lab.progress import Progress
from lab.proof.strategies import Chain, quiet
from lab.release import api as release
from lab.release import pipeline
from lab.stack import project as stack
from lab.stack import services


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
WRK_DESCRIPTION = f"wrk (Debian), {WRK_THREADS} threads, {WRK_CONNECTIONS} connections"
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
    out: dict[str, Any] = {"client": WRK_DESCRIPTION}
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
        # a stage's title ("name" in records written before stages had keys)
        names = {s.get("title", s.get("name")): s["status"] for s in doc.get("stages", [])}
        if names.get("base image (mmdebstrap + docker import)") == "changed":
            cold = doc.get("seconds") or sum(s["seconds"] for s in doc["stages"])
    destroyed = sorted(lab.runs.glob("destroy-*.json"))
    last_destroy = json.loads(destroyed[-1].read_text())["seconds"] if destroyed else None
    return {
        "warm_s": round(warm, 1),
        "cold_s_last_recorded": cold,
        "destroy_s_last_recorded": last_destroy,
    }


def edge_cost(
    lab: State, rounds: int = 4, seconds: float = 15, say: Callable[[str], None] = print
) -> dict[str, Any]:
    """What the edge's figures cost the proxy: ``proxy_overhead`` with the proxy's request log
    off (``CDLAB_PROXY_EDGE=off``, the stack applied again) and on, in turns (the order
    alternating by round), ``rounds`` times each (one pair of runs is within the machine's
    noise); the stack is left with it on."""
    from lab.stack import converge

    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    try:
        for i in range(rounds):
            # off then on, then on then off: whatever favours a run's place in a round (a
            # proxy just recreated, caches warming) is shared by both (4 rounds: on was
            # ahead by 6-10 % in each of them when it always came second)
            for mode in ("off", "on") if i % 2 == 0 else ("on", "off"):
                os.environ["CDLAB_PROXY_EDGE"] = mode
                converge.converge(lab, Progress(out=None))
                time.sleep(3)  # the proxy's processes started, its slots up
                got = proxy_overhead(lab, seconds)
                runs[mode].append(got)
                say(
                    f"    round {i + 1}/{rounds}, edge figures {mode}: proxy "
                    f"{got.get('proxy', {}).get('rps')} req/s, direct "
                    f"{got.get('direct', {}).get('rps')} req/s"
                )
    finally:
        os.environ.pop("CDLAB_PROXY_EDGE", None)
        converge.converge(lab, Progress(out=None))
    out: dict[str, Any] = {"rounds": rounds, "seconds": seconds, "client": WRK_DESCRIPTION}
    for mode, rs in runs.items():
        proxy = [r["proxy"]["rps"] for r in rs if "rps" in r.get("proxy", {})]
        direct = [r["direct"]["rps"] for r in rs if "rps" in r.get("direct", {})]
        out[mode] = {
            "proxy_rps": proxy,
            "direct_rps": direct,
            "median_proxy_rps": statistics.median(proxy) if proxy else None,
            "median_direct_rps": statistics.median(direct) if direct else None,
            "ratios": [r.get("throughput_ratio") for r in rs],
        }
    on, off = out["on"], out["off"]
    if on["median_proxy_rps"] and off["median_proxy_rps"]:
        out["proxy_rps_change"] = round(on["median_proxy_rps"] / off["median_proxy_rps"] - 1, 3)
        out["ratio_on"] = round(on["median_proxy_rps"] / on["median_direct_rps"], 3)
        out["ratio_off"] = round(off["median_proxy_rps"] / off["median_direct_rps"], 3)
    return out
