"""A release's containers on prod's engine: how one runs (``container_spec``), started,
probed until healthy, tested, hooked, removed. Every function takes an engine client."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import requests

from lab.errors import ReleaseError, tail
from lab.estate.state import State
from lab.ports import logs
from lab.release import drift
from lab.release.model import Candidate
from lab.stack import project as stack
from lab.stack.limits import Limits
from lab.stack.services import Service


def database_url(state: State, name: str) -> str:
    """Database ``name`` on prod's PostgreSQL, as the role every service uses."""
    return f"postgresql://app:{state.secret('db-password')}@db:5432/{name}"


def environment(state: State, service: Service) -> dict[str, str]:
    """The manifest's environment, plus the address of the service's own database (named
    after it) when it asks for one."""
    env = dict(service.env)
    if service.database:
        env["DATABASE_URL"] = database_url(state, service.name)
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
RELEASE_USER = "10001:10001"  # every service image has this user (services/*/Dockerfile)


def hardening(limits: Limits, user: str | None = RELEASE_USER) -> dict[str, Any]:
    """How every container cdlab starts for a service runs (a release, a hook, a migration,
    its integration tests, a scratch release), as ``containers.run`` arguments (pure):

    - a read-only root, with a tmpfs for /tmp;
    - every capability dropped, ``no-new-privileges``; as ``user`` (None: the image's own
      ``USER``, for an image that is not the service's, e.g. its integration tests');
    - bounded by ``limits``: memory with no swap beyond it, pids, and CPUs when set.
    """
    spec: dict[str, Any] = {
        "read_only": True,
        "tmpfs": {"/tmp": "size=16m"},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "mem_limit": limits.memory,
        "memswap_limit": limits.memory,  # the same as mem_limit: no swap
        "pids_limit": limits.pids,
    }
    if user is not None:
        spec["user"] = user
    if limits.cpus:
        spec["nano_cpus"] = round(limits.cpus * 1e9)
    return spec


def container_spec(state: State, c: Candidate) -> dict[str, Any]:
    """How a release runs on prod, as the SDK's ``containers.run`` arguments (pure apart from
    reading the lab's secrets). One container per release, named ``<service>-<release>`` on the
    apps network (the proxy finds it by that name), so releases run side by side:

    - immutable: the image pinned by digest, a read-only root, a tmpfs for /tmp;
    - non-root (uid 10001), every capability dropped, ``no-new-privileges``, bounded by the
      manifest's ``[limits]`` (``hardening``);
    - restarted by the engine (and by the host after a kill: ``cdlab.keepalive``);
    - Docker's own healthcheck is the slow, cheap one (every exec costs CPU): cdlab runs the
      same probe itself while a release starts, and the proxy checks releases every second;
    - labelled ``cdlab.made``: how it was made (``drift.made``), for ``invoke drift`` to
      compare with how it runs (a label cannot be changed afterwards).
    """
    spec: dict[str, Any] = {
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
        **hardening(c.service.limits),
        "stop_signal": "SIGTERM",  # cdlab stops a release (drained first) with a 25 s grace
        "healthcheck": {
            "test": ["CMD-SHELL", c.service.probe],
            "interval": 10 * SECOND,
            "timeout": 3 * SECOND,
            "retries": 3,
            "start_period": 60 * SECOND,
        },
        "network": stack.APPS_NETWORK,
        "log_config": log_config(state, c),
    }
    spec["labels"][drift.MADE] = drift.label(spec)
    return spec


def log_config(state: State, c: Candidate) -> dict[str, Any]:
    """A release's output goes to the lab's log store (``invoke logs``), tagged
    ``<service>/<release>/<container>``, by prod's engine over UDP: a store that is down costs
    lines, never the release. Docker keeps its own copy too (``docker logs`` still works)."""
    prod = state.config.host("prod").address
    return {
        "type": "syslog",
        "config": {
            "syslog-address": f"udp://{prod}:{logs.PORT}",
            "syslog-format": "rfc5424micro",
            "tag": f"{c.service.name}/{c.release}/{{{{.Name}}}}",
        },
    }


def release_containers(client: Any, service: str, release: str, all: bool = True) -> list[Any]:
    """The containers of one release (by its labels; also those a Compose run made)."""
    return list(
        client.containers.list(
            all=all, filters={"label": [f"cdlab.service={service}", f"cdlab.release={release}"]}
        )
    )


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


def stack_address(container: Any) -> str:
    """A container's address on the apps network."""
    container.reload()
    return str(container.attrs["NetworkSettings"]["Networks"][stack.APPS_NETWORK]["IPAddress"])


def wait_healthy(client: Any, c: Candidate, timeout: float = 60.0) -> float:
    """Bounded wait until the release's own probe (the manifest's healthcheck) passes inside
    its container, run by cdlab every 0.1 s; the last answer is the evidence."""

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
                    f"crash loop: restarted {restarts} times (last {ended(st, c.service.limits)})"
                )
                break
            if st.get("Status") in ("exited", "dead") or st.get("Restarting"):
                last = f"container {st.get('Status')} ({ended(st, c.service.limits)})"
            elif st.get("Status") == "running":
                last = probe_answer(container, probe)
                if not last:
                    return time.monotonic() - started
        time.sleep(0.1)
    logs = container.logs(tail=15).decode(errors="replace") if container is not None else ""
    took = min(timeout, time.monotonic() - started)
    raise ReleaseError(
        f"release '{project}' did not become healthy within {took:.0f} s; "
        f"last health answer: {last}\nlast lines of its log:\n{tail(logs)}"
    )


def ended(st: dict[str, Any], limits: Limits) -> str:
    """How a container that stopped ended, from its ``State`` (pure): its exit code, and when
    the kernel killed it for want of memory, the limit and where to raise it."""
    how = f"exit code {st.get('ExitCode')}"
    if not st.get("OOMKilled"):
        return how
    size = f"{limits.memory // (1024 * 1024)}m"
    return (
        f"{how}: killed, out of memory (its limit: {size}, no swap); raise memory in the "
        "[limits] table of its service.toml if it needs more"
    )


def probe_answer(container: Any, probe: str) -> str:
    """ "" when ``probe`` passes inside ``container``; else its answer, for the evidence."""
    import docker.errors

    try:
        code, out = container.exec_run(["sh", "-c", probe], demux=False)
    except docker.errors.APIError as exc:  # it stopped between a reload and the exec
        code, out = -1, str(exc).encode()
    return "" if code == 0 else f"health check exit {code}: {out.decode(errors='replace')[-200:]}"


def wait_probe(
    container: Any, probe: str, timeout: float, what: str, limits: Limits | None = None
) -> float:
    """Bounded wait until ``probe`` passes inside ``container`` (one not kept by a restart
    policy); the last answer and its log are the evidence."""
    started = time.monotonic()
    last = "not started"
    while time.monotonic() - started < timeout:
        container.reload()
        st = container.attrs["State"]
        if st.get("Status") in ("exited", "dead"):
            last = f"container {st.get('Status')} ({ended(st, limits or Limits())})"
            break
        last = probe_answer(container, probe)
        if not last:
            return time.monotonic() - started
        time.sleep(0.1)
    logs = container.logs(tail=15).decode(errors="replace")
    raise ReleaseError(
        f"'{what}' did not become healthy within {time.monotonic() - started:.0f} s; last "
        f"health answer: {last}\nlast lines of its log:\n{tail(logs)}"
    )


def integration_tests(
    state: State, client: Any, c: Candidate, test_image: str | None, host: str = ""
) -> str:
    """Run the service's integration tests (its test image, or ``test_command`` in the release's
    own image) against the candidate's own address on prod (or ``host``, another container of
    the same release)."""
    host = host or c.host
    env = {"BASE_URL": f"http://{host}:{c.service.port}", "EXPECT_RELEASE": c.release}
    if test_image:
        code, output = one_off(
            client,
            test_image,
            None,
            env,
            "integration-tests",
            user=None,
            of=c.project,
            limits=c.service.limits,
        )
    else:
        env.update(environment(state, c.service))
        code, output = one_off(
            client,
            c.image,
            c.service.test_command,
            env,
            "integration-tests",
            of=c.project,
            limits=c.service.limits,
        )
    if code != 0:
        raise ReleaseError(
            f"integration tests failed against {host} (exit {code}):\n{tail(output, 25)}"
        )
    summary = [line for line in output.splitlines() if " passed" in line]
    return summary[-1].strip("= ") if summary else "passed"


def one_off_env(state: State, c: Candidate) -> dict[str, str]:
    """What a one-off container of ``c``'s image (a hook, a migration) sees: the manifest's
    environment, its database, and who it is."""
    return {
        **environment(state, c.service),
        "SERVICE_NAME": c.service.name,
        "RELEASE": c.release,
        "IMAGE": c.image,
    }


def hook(state: State, client: Any, c: Candidate, which: str, command: str) -> str:
    """Run a manifest hook in a container of the candidate's image on the apps network."""
    env = one_off_env(state, c)
    code, output = one_off(
        client, c.image, command, env, which, of=c.project, limits=c.service.limits
    )
    if code != 0:
        raise ReleaseError(
            f"the {which} hook of {c.service.name} failed (exit {code}): {command}\n"
            f"{tail(output, 15)}"
        )
    last = output.strip().splitlines()
    return f"exit 0{': ' + last[-1][:80] if last else ''}"


ONE_OFF = "cdlab.one-off"  # label: the release (<service>-<release>) a test or hook ran for


def one_off_spec(
    image: str,
    command: str | None,
    env: dict[str, str],
    role: str,
    user: str | None = RELEASE_USER,
    of: str = "",
    limits: Limits | None = None,
) -> dict[str, Any]:
    """How a one-off container runs, as ``containers.run`` arguments (pure): ``command`` in a
    shell (None: the image's own entry point) on the apps network, hardened and bounded as a
    release is (``hardening``: ``limits``, the defaults when None), never restarted."""
    return {
        "image": image,
        "command": ["sh", "-c", command] if command else None,
        "environment": env,
        "network": stack.APPS_NETWORK,
        "detach": True,
        "labels": {"cdlab.role": role, **({ONE_OFF: of} if of else {})},
        **hardening(limits or Limits(), user),
    }


def one_off(
    client: Any,
    image: str,
    command: str | None,
    env: dict[str, str],
    role: str,
    user: str | None = RELEASE_USER,  # None: the image's own USER
    of: str = "",  # <service>-<release> it works for: removed with that release's containers
    limits: Limits | None = None,  # the service's [limits]; None: the defaults
) -> tuple[int, str]:
    """Run a container (``one_off_spec``) to completion; (exit code, output). Bounded in
    time (300 s) and in what it may use (``limits``)."""
    container = client.containers.run(**one_off_spec(image, command, env, role, user, of, limits))
    try:
        try:
            result = container.wait(timeout=300)
        except requests.RequestException:
            return 124, "timed out after 300 s\n" + container.logs().decode(errors="replace")
        output = container.logs().decode(errors="replace")
        container.reload()
        if container.attrs["State"].get("OOMKilled"):
            output += f"\ncdlab: {ended(container.attrs['State'], limits or Limits())}\n"
        return int(result.get("StatusCode", 1)), output
    finally:
        container.remove(force=True)


def out_of(client: Any, service: str, keep: frozenset[str] | set[str]) -> list[str]:
    """Releases of ``service`` with a container on prod that are not in ``keep``."""
    found = client.containers.list(
        all=True, sparse=True, filters={"label": f"cdlab.service={service}"}
    )
    releases = {(c.attrs.get("Labels") or {}).get("cdlab.release", "") for c in found}
    return sorted(releases - keep - {""})


def healthy(client: Any, c: Candidate) -> bool:
    """Running and not reported unhealthy by Docker's (slow) check; the proxy checks each
    second whether it may serve."""
    found = release_containers(client, c.service.name, c.release, all=False)
    if not found:
        return False
    found[0].reload()
    st = found[0].attrs["State"]
    return bool(st.get("Running")) and (st.get("Health") or {}).get("Status") != "unhealthy"
