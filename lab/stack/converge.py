"""An explicit change of prod's stack (``invoke stack.apply``, and ``lab.up``'s stack stage):
the stack's images at a commit, the plan said first (which containers will be created or
recreated, and why), then applied; and the services' frontend documents in etcd, which the
proxy runs one HAProxy for each of.

A deploy does none of this: it only makes sure the stack is there (``project.ensure``) and
publishes its own service's frontend (``lab.ports.frontends``).
"""

from __future__ import annotations

from pathlib import Path

from lab.build import git
from lab.errors import EtcdError
from lab.estate.state import State
from lab.ports import frontends
from lab.ports.etcd import Etcd
from lab.ports.lab import Lab
from lab.progress import Progress
from lab.stack import changes, project, services


def base_ref(state: State) -> str:
    """The lab's base image in its registry (what every image is built FROM)."""
    return f"{state.config.registry_addr}/{(state.dir / 'base-image').read_text().strip()}"


def committed(root: Path, sha: str) -> list[services.Service]:
    """Every service as committed at ``sha`` (a folder under services/ with a service.toml)."""
    files = git.files(root, sha, "services")
    names = sorted(
        {p.split("/")[1] for p in files if p.count("/") == 2 and p.endswith("/service.toml")}
    )
    return [
        services.at_commit(
            root, sha, n, {k: v for k, v in files.items() if k.startswith(f"services/{n}/")}
        )
        for n in names
    ]


def converge(
    state: State,
    progress: Progress,
    ref: str = "HEAD",
    dry_run: bool = False,
    every_frontend: bool = False,
) -> tuple[changes.Change, ...]:
    """The stack on prod as ``ref`` says: its images built where missing, the changes said,
    then made (with ``dry_run``, only said); then the frontend document of each service at
    ``ref`` that etcd lacks (with ``every_frontend``, each one that differs too: ``lab.up``,
    which deploys ``ref`` next). Returns the changes."""
    root = state.config.root
    sha = git.commit(root, ref)
    built = project.build(state, project.infra_specs(state, sha, base_ref(state)), sha, progress)
    todo = project.plan(state, built)
    containers = project.facts(state)
    said = changes.describe(todo, len(containers))
    progress.say(f"stack on prod ({project.PROJECT}, {git.short(sha)}): {said}")
    if dry_run:
        return todo
    found = committed(root, sha)
    etcd = Lab(state).etcd
    # frontends first while etcd runs (its data is on a volume: they outlive a recreate), so a
    # proxy about to start finds them all
    early = any(f.service == "etcd" and f.running for f in containers)
    if early:
        try:
            have = set(etcd.get_prefix(frontends.prefix()))
        except EtcdError as exc:
            first = str(exc).splitlines()[0]
            progress.say(f"note: the frontends are written once the stack is up ({first})")
            early = False
        else:
            _publish(etcd, found, every_frontend, progress, sha, have)
    with progress.stage(f"stack on prod (compose project {project.PROJECT})") as st:
        out = project.apply(state, built, todo)
        healthy = project.wait_healthy(state)
        made = [line for line in out.splitlines() if line.startswith(("Creating", "Recreating"))]
        if todo:
            st.changed("; ".join(map(str, todo)) + (f" ({len(made)} container(s))" if made else ""))
        else:
            st.unchanged(f"{len(healthy)} containers healthy")
    if not early:
        _publish(
            etcd, found, every_frontend, progress, sha, set(etcd.get_prefix(frontends.prefix()))
        )
    return todo


def _publish(
    etcd: Etcd,
    found: list[services.Service],
    every: bool,
    progress: Progress,
    sha: str,
    have: set[str],
) -> None:
    """The frontend documents of ``found`` that etcd lacks (``have``: its keys), or with
    ``every`` each one that differs."""
    with progress.stage(f"proxy frontends of {len(found)} service(s) at {git.short(sha)}") as st:
        todo = [s for s in found if every or frontends.prefix() + s.name not in have]
        written = [p.service for p in frontends.publish_all(etcd, todo) if p.written]
        names = ", ".join(f"{s.name} :{s.public_port}" for s in found)
        st.changed(f"written: {', '.join(written)} ({names})") if written else st.unchanged(names)
