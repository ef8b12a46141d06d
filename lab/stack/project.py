"""Prod's long-lived stack: its images (built on cd, pushed) and the Compose project on prod."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from lab.build import git
from lab.build.builder import Builder, Built, ImageSpec, infra_tag
from lab.errors import LabError
from lab.estate.state import State
from lab.ports import engines
from lab.progress import Progress
from lab.stack import compose, services

PROJECT = "cdlab-stack"
NETWORK = "cdlab"  # the stack network every release joins (compose/stack.yml)
INFRA = {  # image name -> (folder, compose variable)
    "etcd": ("services/etcd", "ETCD_IMAGE"),
    "postgres": ("services/postgres", "POSTGRES_IMAGE"),
    "carbon": ("services/carbon", "CARBON_IMAGE"),
    "graphite-web": ("services/graphite-web", "GRAPHITE_WEB_IMAGE"),
    "proxy": ("services/proxy", "PROXY_IMAGE"),
}


class StackError(LabError):
    pass


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
            )
    if not missing:
        return out
    names = " + ".join(f"{s.name}:{s.tag}" for s in missing)
    at_once = min(PARALLEL_BUILDS, len(missing))
    with progress.stage(
        f"image {names} on {on}" + (f" ({at_once} at a time)" if at_once > 1 else "")
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
    env.update(
        PROD_ADDR=prod.address,
        DB_PASSWORD=state.secret("db-password"),
        PROXY_SERVICES=proxy_services(services.load_all(state.config.root)),
    )
    return env


def proxy_services(found: list[services.Service]) -> str:
    """The proxy's frontends: ``name:public_port:port:health:max_connections`` per service
    (pure)."""
    return ",".join(
        f"{s.name}:{s.public_port}:{s.port}:{s.health}:{s.max_connections}" for s in found
    )


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


def spec_hash(compose_file: str, env: Mapping[str, str]) -> str:
    """What the stack is made from: the Compose file and its variables (pure)."""
    doc = compose_file + "\n" + "\n".join(f"{k}={v}" for k, v in sorted(env.items()))
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def up(state: State, built: Mapping[str, Built]) -> str:
    """``docker-compose up -d`` of the stack on prod, unless every container already runs,
    healthy, from the current file and variables; returns compose's output ("" when skipped)."""
    prod = state.config.host("prod")
    env = variables(state, built)
    env["STACK_HASH"] = spec_hash((compose.COMPOSE_DIR / "stack.yml").read_text(), env)
    if _in_place(state, env["STACK_HASH"]):
        return ""
    pull(state, "prod", [built[name].pinned for name in INFRA])
    return compose.run(
        state,
        prod,
        "stack.yml",
        PROJECT,
        env,
        ["up", "-d", "--remove-orphans", "--no-build"],
        hint="look at 'invoke lab.status' and the stack's logs on prod",
    )


def _in_place(state: State, want: str) -> bool:
    with engines.connect(state, state.config.host("prod"), timeout=30) as client:
        found = client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={PROJECT}"}
        )
        names = {c.labels.get("com.docker.compose.service") for c in found}
        return (
            len(names) == len(INFRA) == len(found)
            and all(c.labels.get("cdlab.stack") == want for c in found)
            and all(_health(c) == "healthy" for c in found)
        )


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
        logs = "\n".join(
            f"--- {c.name}\n{c.logs(tail=8).decode(errors='replace')}"
            for c in found
            if _health(c) != "healthy"
        )
    raise StackError(
        f"the stack on prod did not become healthy within {timeout:.0f} s: {last}\n"
        f"{logs}\nNext step: fix the failing service and run 'invoke lab.up' again."
    )


def _health(container: Any) -> str:
    container.reload()
    state = container.attrs.get("State", {})
    if state.get("Status") != "running":
        return str(state.get("Status"))
    return str((state.get("Health") or {}).get("Status", "no healthcheck"))
