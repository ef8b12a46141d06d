"""Build images on the builder host (cd) from a commit, push them, and record their digests.

An image tag is immutable: when the registry already holds the tag, the image is reused (that
is how a second ``lab.up`` builds nothing); the digest is what prod runs.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from lab.build import buildkit, git
from lab.config import LabConfig
from lab.errors import ImageBuildError, RegistryError
from lab.estate import images
from lab.estate.state import State
from lab.proof.redact import redact


@dataclass(frozen=True)
class ImageSpec:
    name: str  # "app", "app-test", "proxy", ...
    folder: str  # path in the repository, e.g. "services/app"
    dockerfile: str  # file name inside the folder
    tag: str  # commit short sha for a service, content hash for infrastructure


@dataclass(frozen=True)
class Built:
    name: str
    ref: str  # registry/cdlab/<name>:<tag>
    digest: str  # sha256:...
    built: bool  # False when the registry already had the tag
    seconds: float

    @property
    def pinned(self) -> str:
        """``registry/cdlab/<name>@sha256:...``: what prod pulls and runs."""
        return f"{self.ref.rsplit(':', 1)[0]}@{self.digest}"


def repository(name: str) -> str:
    return f"{images.REPOSITORY}/{name}"


def infra_tag(tree_id: str, base_ref: str) -> str:
    """An infrastructure image's tag: its folder's git tree plus the base it builds on."""
    return images.digest({"tree": tree_id, "base": base_ref})[:12]


def digest_from_push(lines: list[dict[str, Any]]) -> str:
    """The digest the engine reports at the end of a push (pure)."""
    for line in reversed(lines):
        aux = line.get("aux") or {}
        if isinstance(aux, dict) and str(aux.get("Digest", "")).startswith("sha256:"):
            return str(aux["Digest"])
    return ""


BUILD_CACHE_KEEP = 2 << 30  # bytes of BuildKit cache the builder keeps


class Builder:
    """Builds through one engine (the builder host's) and pushes to the lab registry."""

    def __init__(self, state: State, client: Any) -> None:
        self.state, self.client = state, client
        self.config: LabConfig = state.config
        self.registry = state.registry_client()
        self._base: str | None = None

    def base(self) -> str:
        """The base image as the registry serves it, present on the builder (pulled once)."""
        if self._base is None:
            import docker.errors

            local = (self.state.dir / "base-image").read_text().strip()
            ref = f"{self.config.registry_addr}/{local}"
            try:
                self.client.images.get(ref)
            except docker.errors.ImageNotFound:  # pull it, as a real build host would
                self.client.images.pull(ref, auth_config=self.state.credentials().auth_config())
            self._base = ref
        return self._base

    def ensure(self, spec: ImageSpec, sha: str, release: str) -> Built:
        """``spec`` in the registry: reused when its tag exists, else built here and pushed."""
        return self.existing(spec) or self.make(spec, sha, release)

    def ref(self, spec: ImageSpec) -> str:
        return f"{self.config.registry_addr}/{repository(spec.name)}:{spec.tag}"

    def existing(self, spec: ImageSpec) -> Built | None:
        """``spec`` as the registry already holds it, if it does (a tag is never rebuilt)."""
        started = time.monotonic()
        digest = self.registry.digest(repository(spec.name), spec.tag)
        seconds = time.monotonic() - started
        return Built(spec.name, self.ref(spec), digest, False, seconds) if digest else None

    def make(self, spec: ImageSpec, sha: str, release: str) -> Built:
        """Build ``spec`` from ``sha`` here and push it."""
        ref = self.ref(spec)
        started = time.monotonic()
        context = git.archive(self.config.root, sha, spec.folder)
        self._build(spec, ref, context, release)
        digest = self._push(ref)
        return Built(spec.name, ref, digest, True, time.monotonic() - started)

    def _build(self, spec: ImageSpec, ref: str, context: bytes, release: str) -> None:
        """BuildKit on the builder's engine (``POST /build?version=2``; the SDK's ``build`` only
        speaks the classic builder's parameters, so the request is made here, the same way)."""
        import docker.errors

        log_path = self.state.logs / f"build-{spec.name}.log"
        trace, errors = buildkit.Trace(), []
        labels = {**self.config.labels, "cdlab.image": spec.name, "cdlab.release": release}
        params = {
            "t": ref,
            "dockerfile": spec.dockerfile,
            "version": "2",
            "rm": "1",
            "forcerm": "1",
            "buildargs": json.dumps({"BASE": self.base(), "RELEASE": release}),
            "labels": json.dumps(labels),
        }
        api = self.client.api
        try:
            response = api._post(
                api._url("/build"),
                params=params,
                data=context,
                headers={"Content-Type": "application/x-tar"},
                stream=True,
            )
            for chunk in api._stream_helper(response, decode=True):
                if chunk.get("id") == buildkit.TRACE_ID:
                    trace.feed(chunk["aux"])
                elif "error" in chunk:
                    errors.append(str(chunk["error"]))
        except docker.errors.APIError as exc:
            errors.append(str(exc))
        secrets = self.state.secret_values()  # a build step may print what it was given
        log, errors = redact(trace.log(), secrets), [redact(e, secrets) for e in errors]
        try:
            log_path.write_text(log + "".join(f"ERROR: {e}\n" for e in errors))
            where = f"full log: {log_path}"
        except OSError as exc:  # a write's ENOSPC names no file: say which one
            if not errors:
                raise OSError(exc.errno, exc.strerror, str(log_path)) from exc
            where = f"its log could not be written to {log_path}: {exc.strerror}"
        if errors:
            raise ImageBuildError(
                ref,
                log,
                f"the build of {spec.folder}/{spec.dockerfile} failed: {errors[-1]} ({where})",
            )

    def tidy(self, refs: list[str], every_build: bool = False) -> str:
        """The builder keeps no image it pushed (the registry holds them): ``refs`` removed, the
        untagged ones too, and with ``every_build`` every image a build made (only while nothing
        else builds: a build not yet pushed would go). BuildKit's cache stays, least recently
        used out first above ``BUILD_CACHE_KEEP``: it is what keeps a rebuild fast. Returns a
        summary for the log."""
        import docker.errors

        removed = 0
        for ref in refs:
            with contextlib.suppress(docker.errors.APIError):  # gone already, or in use
                self.client.images.remove(ref)
                removed += 1
        reclaimed = 0
        with contextlib.suppress(docker.errors.APIError):  # e.g. a prune already running
            # only the images a build made carry cdlab.release (the base does not)
            made = {"dangling": False, "label": "cdlab.release"}
            for filters in [{"dangling": True}, *([made] if every_build else [])]:
                reclaimed += self.client.images.prune(filters)["SpaceReclaimed"]
            reclaimed += self.client.api.prune_builds(keep_storage=BUILD_CACHE_KEEP)[
                "SpaceReclaimed"
            ]
        return f"{removed} pushed image(s) removed, {reclaimed >> 20} MB reclaimed"

    def _push(self, ref: str) -> str:
        repo, tag = ref.rsplit(":", 1)
        out = list(
            self.client.images.push(
                repo,
                tag=tag,
                stream=True,
                decode=True,
                auth_config=self.state.credentials().auth_config(),
            )
        )
        errors = [line["error"] for line in out if "error" in line]
        if errors:
            raise RegistryError(
                f"push '{ref}' from {self.config.builder.name}",
                f"https://{self.config.registry_addr}",
                errors[-1],
            )
        digest = digest_from_push(out)
        if not digest:
            raise RegistryError(
                f"read the digest of '{ref}' after its push",
                f"https://{self.config.registry_addr}",
                str(out[-3:]),
            )
        return digest
