"""Prod's long-lived stack: its images (built on cd, pushed) and the Compose project on prod.

A deploy only makes sure the stack is there (``ensure``: it creates a missing container, never
recreates one). Changing it is an explicit run that says what it will recreate before it does
(``plan``, then ``apply``; ``lab.stack.converge`` for the task and ``lab.up``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from lab.build import git
from lab.build.builder import Builder, Built, ImageSpec, infra_tag
from lab.errors import StackError as StackError  # its home before lab.errors held every error
from lab.estate.state import State
from lab.ports import engines
from lab.progress import Progress
from lab.stack import appsnet, changes, compose, services

PROJECT = "cdlab-stack"
NETWORK = "cdlab"  # the stack's control network (compose/stack.yml): no release joins it
# the network of every release, hook, migration and test container: internal (no route out of
# prod), shared only with the proxy, the database and carbon (compose/stack.yml)
APPS_NETWORK = "cdlab-apps"
INFRA = {  # image name -> (folder, compose variable)
    "etcd": ("services/etcd", "ETCD_IMAGE"),
    "postgres": ("services/postgres", "POSTGRES_IMAGE"),
    "carbon": ("services/carbon", "CARBON_IMAGE"),
    "graphite-web": ("services/graphite-web", "GRAPHITE_WEB_IMAGE"),
    "proxy": ("services/proxy", "PROXY_IMAGE"),
    "logs": ("services/logs", "LOGS_IMAGE"),
}
SERVICES = {  # Compose service (compose/stack.yml, in its order) -> image name
    "etcd": "etcd",
    "db": "postgres",
    "carbon": "carbon",
    "graphite-web": "graphite-web",
    "proxy": "proxy",
    "logs": "logs",
}
HINT = "look at 'invoke lab.status' and the stack's logs on prod"


def infra_specs(state: State, sha: str, base_ref: str) -> list[ImageSpec]:
    root = state.config.root
    return [
        ImageSpec(name, folder, "Dockerfile", infra_tag(git.tree(root, sha, folder), base_ref))
        for name, (folder, _) in INFRA.items()
    ]


def service_specs(service: services.Service, sha: str) -> list[ImageSpec]:
    specs = [ImageSpec(service.name, service.folder, "Dockerfile", git.short(sha))]
    if service.test_dockerfile:
        specs.append(
            ImageSpec(
                f"{service.name}-test", service.folder, service.test_dockerfile, git.short(sha)
            )
        )
    return specs


PARALLEL_BUILDS = 2  # builds at a time on the builder (2 cores here; more only queue up)


def build(state: State, specs: list[ImageSpec], sha: str, progress: Progress) -> dict[str, Built]:
    """Each image in the registry: the ones whose tag is missing are built on the builder host,
    ``PARALLEL_BUILDS`` at a time (one stage for them all; it fails, after every build has
    ended, with the first failure in ``specs`` order)."""
    out: dict[str, Built] = {}
    on = state.config.builder.name
    missing = []
    with engines.connect(state, state.config.builder, timeout=1800) as client:
        builder = Builder(state, client)
        for spec in specs:
            found = builder.existing(spec)
            if found is None:
                missing.append(spec)
                continue
            out[spec.name] = found
            progress.record(
                f"image {spec.name}:{spec.tag} on {on}",
                "unchanged",
                found.seconds,
                f"in registry {found.digest[:19]}",
                key=f"image-{spec.name}",
            )
    if not missing:
        return out
    names = " + ".join(f"{s.name}:{s.tag}" for s in missing)
    at_once = min(PARALLEL_BUILDS, len(missing))
    with progress.stage(
        f"image {names} on {on}" + (f" ({at_once} at a time)" if at_once > 1 else ""),
        f"image-{missing[0].name}" if len(missing) == 1 else "images",  # a key, never a tag
    ) as st:
        with ThreadPoolExecutor(at_once) as pool:
            futures = [pool.submit(_make, state, spec, sha) for spec in missing]
            for done in as_completed(futures):  # a line as each ends: long work shows progress
                if len(futures) > 1 and done.exception() is None:
                    b = done.result()
                    progress.say(f"    {b.name} built and pushed in {b.seconds:.1f} s")
        for f in futures:  # raises the first failure in specs' order, every build ended
            out[f.result().name] = f.result()
        st.changed(
            "built and pushed "
            + ", ".join(f"{f.result().name} {f.result().seconds:.1f} s" for f in futures)
        )
    return out


def _make(state: State, spec: ImageSpec, sha: str) -> Built:
    with engines.connect(state, state.config.builder, timeout=1800) as client:
        return Builder(state, client).make(spec, sha, git.short(sha))


def tidy_builder(state: State, refs: list[str], every_build: bool = False) -> str:
    """``Builder.tidy`` on the builder host."""
    with engines.connect(state, state.config.builder, timeout=300) as client:
        return Builder(state, client).tidy(refs, every_build)


def variables(state: State, built: Mapping[str, Built]) -> dict[str, str]:
    """Compose variables for the stack (pure apart from reading the lab's secrets)."""
    prod = state.config.host("prod")
    env = {var: built[name].pinned for name, (_, var) in INFRA.items()}
    env.update(PROD_ADDR=prod.address, DB_PASSWORD=state.secret("db-password"))
    env["CDLAB_PROXY_MODE"] = "swarm" if state.config.swarm_manager is not None else "single"
    return env


def pull(state: State, host_name: str, refs: list[str]) -> list[str]:
    """Pull ``refs`` (pinned by digest) onto a host's engine, skipping those present; the
    missing ones at the same time. Returns those pulled."""
    import docker.errors

    host = state.config.host(host_name)
    with engines.connect(state, host, timeout=60) as client:
        missing = []
        for ref in refs:
            try:
                client.images.get(ref)
            except docker.errors.ImageNotFound:
                missing.append(ref)
    if missing:
        with ThreadPoolExecutor(len(missing)) as pool:
            list(pool.map(lambda ref: _pull(state, host_name, ref), missing))
    return missing


def _pull(state: State, host_name: str, ref: str) -> None:
    with engines.connect(state, state.config.host(host_name), timeout=900) as client:
        client.images.pull(ref, auth_config=state.credentials().auth_config())


def facts(state: State) -> list[changes.Found]:
    """The project's containers on prod, as ``changes`` reads them."""
    with engines.connect(state, state.config.host("prod"), timeout=30) as client:
        found = client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={PROJECT}"}
        )
        return [
            changes.Found(
                c.labels.get("com.docker.compose.service", ""),
                c.name,
                str(c.attrs.get("Config", {}).get("Image", "")),
                c.labels.get("com.docker.compose.config-hash", ""),
                c.attrs.get("State", {}).get("Status") == "running",
            )
            for c in found
        ]


def plan(state: State, built: Mapping[str, Built]) -> tuple[changes.Change, ...]:
    """What ``apply`` would change on prod, and why (Compose's own configuration hashes, asked
    of prod's engine: they cover the images' ids). Changes nothing."""
    env = variables(state, built)
    out = compose.run(
        state, state.config.host("prod"), "stack.yml", PROJECT, env, ["config", "--hash=*"], HINT
    )
    hashes = changes.parse_hashes(out)
    if set(hashes) != set(SERVICES):
        raise StackError(
            "read the configuration hash of every stack service from "
            "'docker-compose config --hash=*'",
            f"got {', '.join(sorted(hashes)) or 'none'}, want {', '.join(SERVICES)}",
            services=[svc for svc in SERVICES if svc not in hashes],
            output=out[-1500:],
            hint="check compose/stack.yml with 'docker-compose -f compose/stack.yml config'.",
        )
    images = {svc: built[image].pinned for svc, image in SERVICES.items()}
    return changes.plan(list(SERVICES), images, hashes, facts(state))


def apply(state: State, built: Mapping[str, Built], todo: Sequence[changes.Change]) -> str:
    """Make the ``todo`` changes (from ``plan``), and those only: ``docker-compose up -d`` of
    exactly those services. Returns compose's output ("" when there is nothing to do)."""
    args = changes.up_args(todo, list(SERVICES))
    if not args:
        return ""
    pull(state, "prod", [built[name].pinned for name in INFRA])
    with engines.connect(state, state.config.host("prod"), timeout=30) as client:
        made = appsnet.ensure(client, state.config.swarm_manager is not None)
    return "\n".join(filter(None, (made, _compose(state, built, args))))


def ensure(state: State, built: Mapping[str, Built]) -> str:
    """What a deploy runs: the stack's containers all there and running. A missing one is
    created (from ``built``) and a stopped one started; an existing one is never recreated,
    whatever changed in compose/stack.yml or the images (that is ``invoke stack.apply``).
    Compose is not run at all when every container is there and running. Returns compose's
    output ("" when skipped)."""
    return apply(state, built, changes.missing(list(SERVICES), facts(state)))


def up(state: State, built: Mapping[str, Built]) -> str:
    """The stack as compose/stack.yml and ``built`` say: ``apply(plan())``, skipped when every
    container runs healthy from its wanted image. Deploys should call ``ensure``."""
    found = facts(state)
    wanted = {svc: built[image].pinned for svc, image in SERVICES.items()}
    current = {f.service: f.image for f in found}
    if current == wanted and len(found) == len(SERVICES) and _all_healthy(state):
        return ""
    return apply(state, built, plan(state, built))


def _compose(state: State, built: Mapping[str, Built], args: list[str]) -> str:
    env = variables(state, built)
    return compose.run(state, state.config.host("prod"), "stack.yml", PROJECT, env, args, HINT)


def _all_healthy(state: State) -> bool:
    with engines.connect(state, state.config.host("prod"), timeout=30) as client:
        found = client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={PROJECT}"}
        )
        return all(_health(c) == "healthy" for c in found)


def wait_healthy(state: State, timeout: float = 180.0) -> list[str]:
    """Wait until every container of the stack reports healthy; names them."""
    deadline, last = time.monotonic() + timeout, "no containers yet"
    with engines.connect(state, state.config.host("prod"), timeout=30) as client:
        while time.monotonic() < deadline:
            found = client.containers.list(
                all=True, filters={"label": f"com.docker.compose.project={PROJECT}"}
            )
            health = {c.name: _health(c) for c in found}
            bad = {n: h for n, h in health.items() if h != "healthy"}
            if found and not bad:
                return sorted(health)
            looping = [c for c in found if c.attrs.get("RestartCount", 0) >= 3]
            if looping:  # a crash loop will not heal by waiting: report it now
                last = ", ".join(
                    f"{c.name} restarted {c.attrs['RestartCount']} times" for c in looping
                )
                break
            last = ", ".join(f"{n}={h}" for n, h in sorted(bad.items())) or last
            time.sleep(1)
        failing = [c for c in found if _health(c) != "healthy"]
        logs = "\n".join(
            f"--- {c.name}\n{c.logs(tail=8).decode(errors='replace')}" for c in failing
        )
    raise StackError(
        f"make the stack on prod healthy within {timeout:.0f} s",
        last,
        services=[(c.labels or {}).get("com.docker.compose.service", c.name) for c in failing],
        output=logs,
        hint="fix the failing service and run 'invoke lab.up' again.",
    )


def _health(container: Any) -> str:
    container.reload()
    state = container.attrs.get("State", {})
    if state.get("Status") != "running":
        return str(state.get("Status"))
    return str((state.get("Health") or {}).get("Status", "no healthcheck"))
