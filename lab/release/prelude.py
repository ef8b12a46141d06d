"""What a deploy does before its plan: the manifest and files at the commit, static checks,
the images on cd (the integration-test image in the background), the stack present on prod;
and, after it, the builder's tidy-up."""

from __future__ import annotations

import contextlib
from concurrent.futures import Future
from pathlib import Path

from lab.build import checks, git
from lab.build.builder import Built, ImageSpec
from lab.errors import CheckError, ConfigError
from lab.estate.state import State
from lab.ports.lab import Lab
from lab.progress import Progress
from lab.release import records
from lab.stack import project as stack
from lab.stack import services


def service_at(root: Path, sha: str, name: str) -> tuple[services.Service, dict[str, bytes]]:
    """The manifest of ``name`` as committed at ``sha``, and its folder's files."""
    there = git.service_names(root, sha)
    files = git.files(root, sha, f"services/{name}") if name in there else {}
    if f"services/{name}/service.toml" not in files:
        raise ConfigError(
            "--service",
            name,
            f"a service of commit {git.short(sha)} (services/<name>/service.toml): one of: "
            + (", ".join(there) or "none"),
        )
    return services.at_commit(root, sha, name, files), files


def tidy_builder(lab: Lab, built: dict[str, Built], test_build: Future[Built] | None) -> None:
    """Off the critical path (after the switch, or the failure): the images this deploy pushed
    leave cd (the registry holds them); see ``Builder.tidy``."""
    made = [b for b in built.values() if b.built]
    if test_build is not None and test_build.done() and test_build.exception() is None:
        made += [test_build.result()] if test_build.result().built else []
    try:
        said = stack.tidy_builder(lab.state, [b.ref for b in made])
    except Exception as exc:  # housekeeping: never what a deploy fails on; the log says it
        said = f"failed: {exc}"
    with contextlib.suppress(OSError), (lab.logs / "builder-tidy.log").open("a") as log:
        log.write(f"{records.now():%Y-%m-%dT%H:%M:%SZ} {said}\n")  # a full disk: no line


def image_specs(lab: Lab, service: services.Service, sha: str) -> list[ImageSpec]:
    """Every image a release of ``service`` at ``sha`` needs: the stack's and the service's."""
    base = f"{lab.config.registry_addr}/{(lab.state.dir / 'base-image').read_text().strip()}"
    return stack.infra_specs(lab.state, sha, base) + stack.service_specs(service, sha)


def build(
    state: State | Lab, progress: Progress, service: services.Service, sha: str
) -> dict[str, Built]:
    """Every image the release needs, in the registry: built on cd only when missing."""
    lab = Lab.of(state)
    return stack.build(lab.state, image_specs(lab, service, sha), sha, progress)


def integration_test_image(lab: Lab, spec: ImageSpec, sha: str) -> Built:
    """The integration-test image in the registry (built on cd when missing) and on prod."""
    built = stack.build(lab.state, [spec], sha, Progress(out=None))[spec.name]
    stack.pull(lab.state, "prod", [built.pinned])
    return built


def ensure_stack(lab: Lab, built: dict[str, Built], progress: Progress) -> None:
    with progress.stage(f"stack on prod (compose project {stack.PROJECT})", "stack") as st:
        out = stack.ensure(lab.state, built)  # creates what is missing, never recreates
        names = stack.wait_healthy(lab.state)
        created = {
            line.split()[1]
            for line in out.splitlines()
            if line.startswith(("Creating ", "Recreating ", "Starting ")) and len(line.split()) > 1
        }
        if created:
            st.changed(f"{len(created)} container(s) (re)created or started")
        else:
            st.unchanged(f"{len(names)} containers healthy")


def static_checks(
    progress: Progress, service: services.Service, sha: str, files: dict[str, bytes]
) -> None:
    """The service's folder at ``sha`` checked before anything is built (``CheckError``)."""
    with progress.stage(f"static checks of {service.folder} at {git.short(sha)}", "checks") as st:
        found = checks.problems(files)
        if found:
            raise CheckError(service.folder, git.short(sha), found)
        st.unchanged(f"{len(files)} files: manifest, Python syntax, TOML, JSON, Dockerfiles")
