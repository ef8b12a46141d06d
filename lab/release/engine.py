"""A release of a service on prod: started beside the live one, tested, switched to, verified.

Blue/green through the route store: the candidate joins the pool at weight 0 (health-checked,
receiving nothing), then one route change moves all traffic to it; the previous release stays
running, drained, for an instant rollback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import requests

from lab.build.builder import Built
from lab.errors import LabError, tail
from lab.estate.images import REPOSITORY
from lab.estate.state import State
from lab.ports import engines
from lab.ports.etcd import Etcd
from lab.ports.metrics import Graphite
from lab.ports.proxy import CHECK_TIMEOUT, Runtime
from lab.progress import Progress
from lab.release import judge, routes
from lab.stack import project as stack
from lab.stack.services import Service

CANARY_KEY = "/cdlab/canary/"  # + service: "promote" or "abort", written by hand
DEFAULT_THRESHOLDS = judge.Thresholds()


class ReleaseError(LabError):
    pass


@dataclass(frozen=True)
class Candidate:
    service: Service
    release: str  # commit short sha
    image: str  # pinned by digest
    test_image: str | None
    # the integration-test image while it is still being built, pushed and pulled onto prod
    # (it is not needed before the candidate is healthy): see ``pipeline.deploy``
    test_build: Future[Built] | None = None

    @property
    def project(self) -> str:
        return f"{self.service.name}-{self.release}"

    @property
    def host(self) -> str:
        return routes.host_name(self.service.name, self.release)


def environment(state: State, service: Service) -> dict[str, str]:
    """The manifest's environment, plus the database's address when it asks for one."""
    env = dict(service.env)
    if service.database:
        env["DATABASE_URL"] = f"postgresql://app:{state.secret('db-password')}@db:5432/app"
    return env


def release_environment(state: State, c: Candidate) -> dict[str, str]:
    """Everything a release's process sees: the manifest's environment, who it is, and where
    its metrics go (12-factor: the same image runs anywhere)."""
    return {
        **environment(state, c.service),
        "SERVICE_NAME": c.service.name,
        "RELEASE": c.release,
        "IMAGE": c.image,
        "PORT": str(c.service.port),
        "CARBON_HOST": "carbon",
        "CARBON_PORT": "2003",
    }


SECOND = 1_000_000_000  # the engine's healthcheck durations are in nanoseconds


def container_spec(state: State, c: Candidate) -> dict[str, Any]:
    """How a release runs on prod, as the SDK's ``containers.run`` arguments (pure apart from
    reading the lab's secrets). One container per release, named ``<service>-<release>`` on the
    stack network (the proxy finds it by that name), so releases run side by side:

    - immutable: the image pinned by digest, a read-only root, a tmpfs for /tmp;
    - non-root (uid 10001), every capability dropped, ``no-new-privileges``;
    - restarted by the engine (and by the host after a kill: ``cdlab.keepalive``);
    - Docker's own healthcheck is the slow, cheap one (every exec costs CPU): cdlab runs the
      same probe itself while a release starts, and the proxy checks releases every second.
    """
    return {
        "image": c.image,
        "name": c.project,
        "detach": True,
        "environment": release_environment(state, c),
        "labels": {
            "cdlab.keepalive": "true",
            "cdlab.role": "release",
            "cdlab.service": c.service.name,
            "cdlab.release": c.release,
        },
        "restart_policy": {"Name": "always"},
        "read_only": True,
        "tmpfs": {"/tmp": "size=16m"},
        "user": "10001:10001",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "stop_signal": "SIGTERM",  # cdlab stops a release (drained first) with a 25 s grace
        "healthcheck": {
            "test": ["CMD-SHELL", c.service.probe],
            "interval": 10 * SECOND,
            "timeout": 3 * SECOND,
            "retries": 3,
            "start_period": 60 * SECOND,
        },
        "network": stack.NETWORK,
    }


def release_containers(client: Any, service: str, release: str, all: bool = True) -> list[Any]:
    """The containers of one release (by its labels; also those a Compose run made)."""
    return list(
        client.containers.list(
            all=all, filters={"label": [f"cdlab.service={service}", f"cdlab.release={release}"]}
        )
    )


def route_store(state: State) -> Etcd:
    return Etcd(state.config.host("prod").address)


def current_routes(state: State, service: str) -> routes.Routes:
    return routes.from_doc(route_store(state).get_json(routes.PREFIX + service), service)


def deploy(
    state: State,
    candidate: Candidate,
    progress: Progress,
    public_url: str = "http://127.0.0.1:8000",
    health_timeout: float | None = None,  # default: the manifest's
    steps: tuple[int, ...] = (100,),
    interval: float = 30.0,
    thresholds: judge.Thresholds = DEFAULT_THRESHOLDS,
    match: routes.Match | None = None,
) -> str:
    """Make ``candidate`` the live release of its service; returns what happened.

    ``steps`` other than ``(100,)`` make it a canary (see ``canary``). With ``match`` the
    candidate only serves the requests that carry the header or cookie, until ``promote`` or
    ``abort`` (see ``expose_matched``)."""
    current = current_routes(state, candidate.service.name)
    graphite = Graphite()
    tags = ["cdlab", "deploy", candidate.service.name, candidate.release]
    with engines.connect(state, state.config.host("prod"), timeout=300) as client:
        if current.live == candidate.release and _healthy(client, candidate):
            return "already live"
        graphite.event(f"deploy start {candidate.project}", tags, f"live: {current.live}")
        try:
            start(state, client, candidate, current, progress, health_timeout)
        except LabError as exc:
            graphite.event(f"deploy failed {candidate.project}", tags, str(exc)[:500])
            raise
    if match:
        expose_matched(state, candidate, current, match, progress, public_url)
        graphite.event(f"matched traffic to {candidate.project}", tags, match.rule)
        return f"{candidate.release} on matched traffic ({match.rule})"
    if steps != (100,) and current.live:
        canary(
            state,
            candidate,
            routes.stage(current, candidate.release),
            progress,
            steps,
            interval,
            thresholds,
        )
    return go_live(state, candidate, current, progress, public_url)


def go_live(
    state: State, candidate: Candidate, current: routes.Routes, progress: Progress, public_url: str
) -> str:
    """Switch all traffic to a tested, pooled ``candidate`` and run its post-deploy hook."""
    switch(state, candidate, current, progress, public_url)
    if candidate.service.post_deploy:
        with (
            progress.stage("post-deploy hook (the release is live)") as st,
            engines.connect(state, state.config.host("prod"), timeout=300) as client,
        ):
            st.changed(hook(state, client, candidate, "post-deploy", candidate.service.post_deploy))
    Graphite().event(
        f"deploy end {candidate.project}",
        ["cdlab", "deploy", candidate.service.name, candidate.release],
        f"previous: {current.live}",
    )
    return f"{candidate.release} live"


def expose_matched(
    state: State,
    candidate: Candidate,
    current: routes.Routes,
    match: routes.Match,
    progress: Progress,
    public_url: str,
) -> None:
    """Requests carrying ``match``'s header or cookie go to the (tested, pooled) candidate; every
    other request stays on the live release. Verified through the proxy both ways; on failure
    the rule and the candidate are taken out again."""
    name = candidate.service.name
    with progress.stage(f"matched traffic ({match.rule}) to {candidate.release}") as st:
        since = time.monotonic()
        route_store(state).put_json(routes.PREFIX + name, routes.matched(current, match).to_doc())
        try:
            Runtime(state.config.host("prod").address).wait_up(
                name + "-match", candidate.host, timeout=30
            )
            seconds = verify_through_proxy(
                public_url, candidate.release, since=since, headers=match.headers
            )
            if current.live:
                verify_through_proxy(public_url, current.live, timeout=5)
        except LabError:
            _abandon(state, candidate, current)
            raise
        st.changed(
            f"requests with {match.rule} answered by {candidate.release} "
            f"{seconds * 1000:.0f} ms after the route change; all others by "
            f"{current.live}. Next: invoke promote or invoke abort"
        )


def abort_matched(state: State, current: routes.Routes, progress: Progress) -> str:
    """Take the matched-traffic candidate out: the rule first, then its containers."""
    assert current.match is not None
    release = current.match.release
    with progress.stage(f"abort: {release} off matched traffic, stopped and removed") as st:
        route_store(state).put_json(
            routes.PREFIX + current.service, routes.without(current, release).to_doc()
        )
        time.sleep(0.2)  # the proxy applies the change within milliseconds (a watch)
        remove(state, current.service, release, stop_timeout=25)
        st.changed(f"every request on {current.live}")
    Graphite().event(
        f"matched traffic aborted {current.service}-{release}",
        ["cdlab", "abort", current.service, release],
        current.match.rule,
    )
    return release


def start(
    state: State,
    client: Any,
    candidate: Candidate,
    current: routes.Routes,
    progress: Progress,
    health_timeout: float | None = None,
) -> None:
    """Start ``candidate`` beside the live release, test it, and have the proxy health-check it
    at weight 0 (while the tests run: weight 0 receives nothing). On any failure the candidate
    is removed and the routes are left as they were."""
    prod = state.config.host("prod")
    with progress.stage(f"pull {candidate.release} onto prod") as st:
        pulled = stack.pull(
            state,
            "prod",
            [candidate.image] + ([candidate.test_image] if candidate.test_image else []),
        )
        note = "by digest from the lab registry"
        st.changed(f"{len(pulled)} image(s) {note}") if pulled else st.unchanged("present")
    # releases out of the pool serve no one but hold resources (each its database
    # connections): a run that died before retiring them must not starve this one
    pooled_now = {s.release for s in current.servers} | {candidate.release}
    if out_of(client, candidate.service.name, pooled_now):
        with progress.stage("remove releases out of the pool (left by a failed run)") as st:
            st.changed(", ".join(retire(state, candidate.service.name, pooled_now, 5)))
    if candidate.service.pre_deploy:
        with progress.stage("pre-deploy hook (before the release starts)") as st:
            st.changed(hook(state, client, candidate, "pre-deploy", candidate.service.pre_deploy))
    proxy = Runtime(prod.address)
    if candidate.release in {s.release for s in current.servers}:
        # in the pool with its containers gone (e.g. a pruned rollback target): its slot
        # points at the old address, and checks in flight there would take the new container
        # down after the switch. The slot is released first; the release takes it back, with
        # its new address, once tested.
        current = dataclasses.replace(
            current,
            servers=tuple(s for s in current.servers if s.release != candidate.release),
        )
        route_store(state).put_json(routes.PREFIX + candidate.service.name, current.to_doc())
        proxy.wait_released(candidate.service.name, candidate.host)
        # a health check already on its way to the old container ends (as a failure) within
        # the check timeout: it must land before the slot serves again, not after
        back_after = time.monotonic() + CHECK_TIMEOUT
    else:
        back_after = 0.0
    try:
        with progress.stage(
            f"start {candidate.project} on prod beside {current.live or 'nothing'}"
        ) as st:
            container = replace_container(state, client, candidate)
            st.changed(candidate.image.rsplit("/", 1)[-1][:40])
        with progress.stage(f"wait until {candidate.project} is healthy") as st:
            st.changed(
                wait_healthy(
                    client,
                    candidate,
                    health_timeout or candidate.service.health_timeout,
                )
            )
        # the proxy starts checking it now, at weight 0: nobody reaches it before the switch
        time.sleep(max(0.0, back_after - time.monotonic()))
        route_store(state).put_json(
            routes.PREFIX + candidate.service.name,
            routes.stage(current, candidate.release).to_doc(),
        )
        if candidate.test_build is not None:
            candidate = with_test_image(candidate, progress)
        if candidate.test_image or candidate.service.test_command:
            with progress.stage("integration tests against the candidate's own address") as st:
                st.changed(integration_tests(state, client, candidate))
        with progress.stage("proxy health-checks the candidate (weight 0)") as st:
            address = stack_address(container)
            proxy.wait_up(candidate.service.name, candidate.host, addr=address)
            st.changed(f"UP in the pool at {address}, receiving nothing")
    except LabError:
        _abandon(state, candidate, current)
        raise


def with_test_image(candidate: Candidate, progress: Progress) -> Candidate:
    """``candidate`` once its integration-test image, built while it started, is on prod."""
    assert candidate.test_build is not None
    with progress.stage("integration-test image (built while the candidate started)") as st:
        built = candidate.test_build.result()
        name = built.ref.rsplit("/", 1)[-1]
        if built.built:
            st.changed(f"{name} built in {built.seconds:.1f} s, on prod")
        else:
            st.unchanged(f"{name} from the registry, on prod")
    return dataclasses.replace(candidate, test_image=built.pinned, test_build=None)


def stack_address(container: Any) -> str:
    """A container's address on the stack network."""
    container.reload()
    return str(container.attrs["NetworkSettings"]["Networks"][stack.NETWORK]["IPAddress"])


def replace_container(state: State, client: Any, candidate: Candidate) -> Any:
    """Create and start the release's container (one left by an earlier, failed start of the
    same release is removed first: the name is the release's)."""
    import docker.errors

    for old in release_containers(client, candidate.service.name, candidate.release):
        with contextlib.suppress(docker.errors.NotFound):
            old.remove(force=True)
    try:
        return client.containers.run(**container_spec(state, candidate))
    except docker.errors.APIError as exc:
        raise ReleaseError(
            f"prod's engine refused to start {candidate.project}: {exc.explanation or exc}"
        ) from exc


SWITCHED = "100% of responses from {release} {ms:.1f} ms after the route change"


def switched_seconds(detail: str) -> float | None:
    """The seconds a switch stage's ``detail`` (``SWITCHED``) reports (pure)."""
    found = re.search(r"^100% of responses from \S+ ([0-9.]+) ms after the route change", detail)
    return float(found.group(1)) / 1000 if found else None


def switch(
    state: State, candidate: Candidate, current: routes.Routes, progress: Progress, public_url: str
) -> float:
    """One route change: all traffic to ``candidate``, the previous release drained and kept.
    Returns the seconds until every response came from ``candidate``."""
    with progress.stage(f"switch: all traffic to {candidate.release}") as st:
        switched = routes.switch_to(current, candidate.release)
        since = time.monotonic()  # the switch starts with the route write
        route_store(state).put_json(routes.PREFIX + candidate.service.name, switched.to_doc())
        seconds = verify_through_proxy(public_url, candidate.release, since=since)
        Graphite().event(
            f"switch to {candidate.project}",
            ["cdlab", "switch", candidate.service.name, candidate.release],
            f"{seconds * 1000:.1f} ms",
        )
        st.changed(SWITCHED.format(release=candidate.release, ms=seconds * 1000))
    old = current.live
    if old and old != candidate.release:
        with progress.stage(f"drain {old} (until its active connections reach 0)") as st:
            took, left = Runtime(state.config.host("prod").address).wait_drained(
                candidate.service.name, routes.host_name(candidate.service.name, old)
            )
            detail = f"{left} connection(s) still open after {took:.1f} s" if left else "drained"
            st.changed(f"{detail}; kept running for an instant rollback")
    with progress.stage("retire releases out of the pool") as st:
        gone = retire(state, candidate.service.name, {s.release for s in switched.servers})
        st.changed(", ".join(gone)) if gone else st.unchanged("previous release kept warm")
    return seconds


def canary(
    state: State,
    candidate: Candidate,
    current: routes.Routes,
    progress: Progress,
    steps: tuple[int, ...],
    interval: float,
    thresholds: judge.Thresholds = DEFAULT_THRESHOLDS,
) -> list[str]:
    """Shift traffic to ``candidate`` step by step; at each step the judge compares it with the
    live release in Graphite. Abort puts every request back on the live release and removes
    the candidate (``ReleaseError``). Returns the verdicts; the final 100 % step is the switch."""
    etcd, graphite = route_store(state), Graphite()
    key = CANARY_KEY + candidate.service.name
    etcd.delete(key)
    live, verdicts = current.live or "", []
    tags = ["cdlab", "canary", candidate.service.name, candidate.release]
    for weight in (w for w in steps if w < 100):
        with progress.stage(f"canary {weight}%: judge after {interval:.0f} s") as st:
            etcd.put_json(
                routes.PREFIX + candidate.service.name,
                routes.canary(current, candidate.release, weight).to_doc(),
            )
            graphite.event(f"canary {weight}% {candidate.project}", tags)
            verdict, command = _step_verdict(
                etcd, graphite, key, candidate, live, interval, thresholds
            )
            verdicts.append(f"{weight}%: {verdict.decision} ({verdict.reason})")
            if verdict.decision != "promote":
                etcd.put_json(routes.PREFIX + candidate.service.name, current.to_doc())
                _abandon(state, candidate, current)
                graphite.event(f"canary aborted {candidate.project}", tags, verdict.reason)
                raise ReleaseError(
                    f"canary of {candidate.project} aborted at {weight}%: "
                    f"{verdict.reason}. Every request is back on {live}; the "
                    "candidate was stopped and removed."
                )
            st.changed(verdict.reason)
            if command == "promote":
                break
    etcd.delete(key)
    return verdicts


def _step_verdict(
    etcd: Etcd,
    graphite: Graphite,
    key: str,
    candidate: Candidate,
    live: str,
    interval: float,
    thresholds: judge.Thresholds,
) -> tuple[judge.Verdict, str]:
    """Wait out one step (or a command by hand) and judge it; holds repeat the wait."""
    holds = 0
    while True:
        command = _wait_or_command(etcd, key, interval)
        if command:
            return judge.Verdict(
                command, f"{command}d by hand" if command == "promote" else "aborted by hand"
            ), command
        window = int(interval)
        verdict = judge.judge(
            graphite.sample(candidate.service.name, candidate.release, window),
            graphite.sample(candidate.service.name, live, window),
            thresholds,
        )
        if verdict.decision != "hold":
            return verdict, ""
        holds += 1
        if holds > thresholds.max_holds:
            return judge.Verdict("abort", f"cannot judge: {verdict.reason} after {holds} waits"), ""


def _wait_or_command(etcd: Etcd, key: str, seconds: float) -> str:
    """Sleep ``seconds`` unless someone writes promote/abort to ``key``; returns that word."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        raw = etcd.get(key)
        if raw in (b"promote", b"abort"):
            etcd.delete(key)
            return raw.decode()
        time.sleep(0.25)
    return ""


def rollback(
    state: State,
    service: Service,
    target: str,
    progress: Progress,
    public_url: str = "http://127.0.0.1:8000",
) -> float:
    """All traffic back to ``target``; started again from the registry by digest if its
    containers are gone. Returns the seconds from the route change to 100 % from ``target``."""
    current = current_routes(state, service.name)
    candidate = from_registry(state, service, target)
    with engines.connect(state, state.config.host("prod"), timeout=300) as client:
        warm = _healthy(client, candidate) and target in {s.release for s in current.servers}
        if not warm:
            start(state, client, candidate, current, progress)
            current = current_routes(state, service.name)
    return switch(state, candidate, current, progress, public_url)


def from_registry(state: State, service: Service, target: str) -> Candidate:
    """A release already in the registry, pinned by its digest there."""
    digest = state.registry_client().digest(f"{REPOSITORY}/{service.name}", target)
    if digest is None:
        raise ReleaseError(
            f"release '{target}' of '{service.name}' is not in the registry (no tag "
            f"{REPOSITORY}/{service.name}:{target}: pruned, as the manifest keeps only "
            f"retain = {service.retain} releases); it cannot be started again"
        )
    image = f"{state.config.registry_addr}/{REPOSITORY}/{service.name}@{digest}"
    return Candidate(service, target, image, None)


def wait_healthy(client: Any, c: Candidate, timeout: float = 60.0) -> str:
    """Bounded wait until the release's own probe (the manifest's healthcheck) passes inside
    its container, run by cdlab every 0.1 s; the last answer is the evidence."""
    import docker.errors

    deadline, last, started = time.monotonic() + timeout, "not started", time.monotonic()
    container, project, probe = None, c.project, c.service.probe
    while time.monotonic() < deadline:
        found = release_containers(client, c.service.name, c.release)
        if found:
            container = found[0]
            container.reload()
            st = container.attrs["State"]
            restarts = container.attrs.get("RestartCount", 0)
            if restarts >= 3:  # a crash loop: waiting will not heal it
                last = (
                    f"crash loop: restarted {restarts} times (last exit code {st.get('ExitCode')})"
                )
                break
            if st.get("Status") in ("exited", "dead") or st.get("Restarting"):
                last = f"container {st.get('Status')} (exit code {st.get('ExitCode')})"
            elif st.get("Status") == "running":
                try:
                    code, out = container.exec_run(["sh", "-c", probe], demux=False)
                except docker.errors.APIError as exc:  # it stopped between reload and exec
                    code, out = -1, str(exc).encode()
                if code == 0:
                    return f"healthy after {time.monotonic() - started:.1f} s"
                last = f"health check exit {code}: {out.decode(errors='replace')[-200:]}"
        time.sleep(0.1)
    logs = container.logs(tail=15).decode(errors="replace") if container is not None else ""
    took = min(timeout, time.monotonic() - started)
    raise ReleaseError(
        f"release '{project}' did not become healthy within {took:.0f} s; "
        f"last health answer: {last}\nlast lines of its log:\n{tail(logs)}\n"
        "It was stopped and removed; the live release keeps serving."
    )


def integration_tests(state: State, client: Any, c: Candidate) -> str:
    """Run the service's integration tests (its test image, or ``test_command`` in the release's
    own image) against the candidate's own address on prod."""
    env = {"BASE_URL": f"http://{c.host}:{c.service.port}", "EXPECT_RELEASE": c.release}
    if c.test_image:
        code, output = one_off(client, c.test_image, None, env, "integration-tests", user=None)
    else:
        env.update(environment(state, c.service))
        code, output = one_off(client, c.image, c.service.test_command, env, "integration-tests")
    if code != 0:
        raise ReleaseError(
            f"integration tests failed against {c.host} (exit {code}):\n{tail(output, 25)}\n"
            "The candidate was stopped and removed; the live release keeps serving."
        )
    summary = [line for line in output.splitlines() if " passed" in line]
    return summary[-1].strip("= ") if summary else "passed"


def hook(state: State, client: Any, c: Candidate, which: str, command: str) -> str:
    """Run a manifest hook in a container of the candidate's image on the stack network."""
    env = {
        **environment(state, c.service),
        "SERVICE_NAME": c.service.name,
        "RELEASE": c.release,
        "IMAGE": c.image,
    }
    code, output = one_off(client, c.image, command, env, which)
    if code != 0:
        raise ReleaseError(
            f"the {which} hook of {c.service.name} failed (exit {code}): {command}\n"
            f"{tail(output, 15)}"
        )
    last = output.strip().splitlines()
    return f"exit 0{': ' + last[-1][:80] if last else ''}"


def one_off(
    client: Any,
    image: str,
    command: str | None,
    env: dict[str, str],
    role: str,
    user: str | None = "10001:10001",  # the release's own user (container_spec)
) -> tuple[int, str]:
    """Run a container to completion on the stack network; (exit code, output). Bounded."""
    container = client.containers.run(
        image,
        ["sh", "-c", command] if command else None,
        environment=env,
        network=stack.NETWORK,
        detach=True,
        user=user,
        labels={"cdlab.role": role},
    )
    try:
        try:
            result = container.wait(timeout=300)
        except requests.RequestException:
            return 124, "timed out after 300 s\n" + container.logs().decode(errors="replace")
        return int(result.get("StatusCode", 1)), container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


def verify_through_proxy(
    url: str,
    release: str,
    timeout: float = 15.0,
    since: float | None = None,
    headers: dict[str, str] | None = None,
) -> float:
    """Poll ``url``/version (sending ``headers``) until ``release`` answers 20 times in a row;
    returns the seconds from ``since`` (default: now) to the request that began that run: from
    then on 100 % of responses came from ``release``."""
    session = requests.Session()
    session.trust_env = False
    session.headers.update(headers or {})
    started = time.monotonic() if since is None else since
    streak, last, streak_began = 0, "no answer", started
    while time.monotonic() - started < timeout:
        sent = time.monotonic()
        try:
            got = session.get(url + "/version", timeout=2).headers.get("X-Release", "")
            if got == release and streak == 0:
                streak_began = sent
            streak = streak + 1 if got == release else 0
            last = got
        except requests.RequestException as exc:
            streak, last = 0, type(exc).__name__
        if streak >= 20:
            return streak_began - started
        time.sleep(0.002)
    raise ReleaseError(
        f"the proxy at {url} still answers with release {last!r}, not "
        f"{release!r}, after {timeout:.0f} s"
    )


def out_of(client: Any, service: str, keep: set[str]) -> list[str]:
    """Releases of ``service`` with a container on prod that are not in ``keep``."""
    found = client.containers.list(
        all=True, sparse=True, filters={"label": f"cdlab.service={service}"}
    )
    releases = {(c.attrs.get("Labels") or {}).get("cdlab.release", "") for c in found}
    return sorted(releases - keep - {""})


def retire(state: State, service: str, keep: set[str], stop_timeout: int = 25) -> list[str]:
    """Stop and remove releases of ``service`` that are no longer in the pool."""
    with engines.connect(state, state.config.host("prod"), timeout=120) as client:
        gone = out_of(client, service, keep)
    for release in gone:
        remove(state, service, release, stop_timeout=stop_timeout)
    return gone


def remove(state: State, service: str, release: str, stop_timeout: int = 25) -> None:
    """Stop (gracefully, within ``stop_timeout``) and remove one release's containers."""
    import docker.errors

    with engines.connect(state, state.config.host("prod"), timeout=stop_timeout + 60) as client:
        for container in release_containers(client, service, release):
            with contextlib.suppress(docker.errors.NotFound):
                container.stop(timeout=stop_timeout)
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)  # force: the keeper may have restarted it


def prune(state: State, service: Service, deployed: list[str]) -> tuple[list[str], list[str]]:
    """Keep ``service.retain`` releases (the pool first, then the newest deployed) and delete
    every other release of the service from the registry and from prod's engine; (kept,
    pruned). A pruned release can no longer be rolled back to."""
    import docker.errors

    reg = state.registry_client()
    repo = f"{REPOSITORY}/{service.name}"
    current = current_routes(state, service.name)
    kept, pruned = routes.retention(deployed, reg.tags(repo), current, service.retain)
    with engines.connect(state, state.config.host("prod"), timeout=120) as client:
        for rel in pruned:
            for name in (repo, f"{repo}-test"):
                digest = reg.digest(name, rel)
                if digest is None:
                    continue
                reg.delete(name, digest)
                # an image a container still uses stays; the next prune retries
                with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
                    client.images.remove(f"{state.config.registry_addr}/{name}@{digest}")
    return kept, pruned


def _abandon(state: State, c: Candidate, previous: routes.Routes) -> None:
    """Undo a failed candidate: routes back as they were, its containers removed."""
    route_store(state).put_json(routes.PREFIX + c.service.name, previous.to_doc())
    remove(state, c.service.name, c.release, stop_timeout=5)


def _healthy(client: Any, c: Candidate) -> bool:
    """Running and not reported unhealthy by Docker's (slow) check; the proxy checks each
    second whether it may serve."""
    found = release_containers(client, c.service.name, c.release, all=False)
    if not found:
        return False
    found[0].reload()
    st = found[0].attrs["State"]
    return bool(st.get("Running")) and (st.get("Health") or {}).get("Status") != "unhealthy"


def candidate(
    service: Service, built: dict[str, Built], release: str, test_build: Future[Built] | None = None
) -> Candidate:
    test = built.get(f"{service.name}-test")
    image = built[service.name].pinned
    return Candidate(service, release, image, test.pinned if test else None, test_build)
