"""Production on the lab: the stack's images built on cd, the stack up on prod, and the current
commit of the demo service deployed as the live release."""

from __future__ import annotations

from lab import git, release, services, stack
from lab.progress import Progress
from lab.state import State

PUBLIC = {"app": "http://127.0.0.1:8000", "graphite-web": "http://127.0.0.1:8082"}


def ensure(state: State, progress: Progress, service_name: str = "app", ref: str = "HEAD") -> str:
    """Bring prod to: stack healthy, ``ref`` of ``service_name`` live. Returns the release id."""
    root = state.config.root
    sha = git.commit(root, ref)
    if ref == "HEAD" and git.dirty(root):
        progress.say(
            f"note: uncommitted changes are not deployed; deploying commit {git.short(sha)}"
        )
    service = services.load(root, service_name)
    base = f"{state.config.registry_addr}/{(state.dir / 'base-image').read_text().strip()}"
    specs = stack.infra_specs(state, sha, base) + stack.service_specs(service, sha)
    built = stack.build(state, specs, sha, progress)
    with progress.stage(f"stack on prod (compose project {stack.PROJECT})") as st:
        out = stack.up(state, built)
        names = stack.wait_healthy(state)
        created = {
            line.split()[1]
            for line in out.splitlines()
            if line.startswith(("Creating ", "Recreating ", "Starting ")) and len(line.split()) > 1
        }
        if created:
            st.changed(f"{len(created)} container(s) (re)created or started")
        else:
            st.unchanged(f"{len(names)} containers healthy")
    candidate = release.candidate(service, built, git.short(sha))
    release.deploy(state, candidate, progress, PUBLIC["app"])
    return candidate.release
