"""Prod's long-lived stack: its images (built on cd, pushed) and the Compose project on prod."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any

from lab import compose, engines, git, services
from lab.build import Builder, Built, ImageSpec, infra_tag
from lab.errors import LabError
from lab.progress import Progress
from lab.state import State

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


def build(state: State, specs: list[ImageSpec], sha: str, progress: Progress) -> dict[str, Built]:
    """Each image in the registry (built on the builder host only when its tag is missing)."""
    out: dict[str, Built] = {}
    with engines.connect(state, state.config.builder, timeout=1800) as client:
        builder = Builder(state, client)
        for spec in specs:
            with progress.stage(
                f"image {spec.name}:{spec.tag} on {state.config.builder.name}"
            ) as st:
                built = builder.ensure(spec, sha, git.short(sha))
                out[spec.name] = built
                note = f"{built.digest[:19]}"
                st.changed(f"built and pushed {note}") if built.built else st.unchanged(
                    f"in registry {note}"
                )
    return out


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
    """The proxy's frontends: ``name:public_port:port:health`` per service (pure)."""
    return ",".join(f"{s.name}:{s.public_port}:{s.port}:{s.health}" for s in found)


def pull(state: State, host_name: str, refs: list[str]) -> list[str]:
    """Pull ``refs`` (pinned by digest) onto a host's engine, skipping those present."""
    import docker.errors

    pulled = []
    with engines.connect(state, state.config.host(host_name), timeout=900) as client:
        for ref in refs:
            try:
                client.images.get(ref)
            except docker.errors.ImageNotFound:  # pull it with the lab's credentials
                client.images.pull(ref, auth_config=state.credentials().auth_config())
                pulled.append(ref)
    return pulled


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
