"""The lab's own images, built without any registry and rebuilt only when their inputs change.

``base``: Debian from the workstation's own apt sources via mmdebstrap, plus (by default) the
workstation's extra CA certificates, then ``docker import``. ``host``: the base plus a Docker
engine, the registry and the tools a lab host needs (``lab/estate/hostimage/``).

Each image carries a content hash of its inputs in the label ``cdlab.hash`` and in its tag, so a
second ``lab.up`` finds it and builds nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.config import LABEL, LabConfig
from lab.errors import ImageBuildError, PreflightError
from lab.ports import shell
from lab.proof.redact import redact

SUITE = "bookworm"
BASE_PACKAGES = ("python3", "ca-certificates")
# Images are content-addressed and shared by every lab on the workstation: a second lab (another
# topology) reuses them. ``cdlab.lab`` names the lab that built one; only its destroy removes it.
REPOSITORY = "cdlab"
RECIPE = "base-v1"  # bump when the way the base image is made changes
HOST_CONTEXT = Path(__file__).with_name("hostimage")
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")
APT_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))


@dataclass(frozen=True)
class BaseInputs:
    """Everything that decides the base image's content."""

    suite: str
    packages: tuple[str, ...]
    apt_sources: str  # the text of the sources file mmdebstrap pastes into the image
    extra_cas: tuple[tuple[str, str], ...]  # (file name, PEM text)
    recipe: str = RECIPE


@dataclass(frozen=True)
class ImageRef:
    kind: str  # "base" or "host"
    repository: str
    content_hash: str

    @property
    def tag(self) -> str:
        return self.content_hash[:12]

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"


def digest(parts: Mapping[str, Any]) -> str:
    """A stable sha256 over a JSON-able mapping (key order does not matter)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def base_hash(inputs: BaseInputs) -> str:
    return digest(
        {
            "suite": inputs.suite,
            "packages": sorted(inputs.packages),
            "sources": inputs.apt_sources,
            "cas": [list(c) for c in inputs.extra_cas],
            "recipe": inputs.recipe,
        }
    )


def tree_hash(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` by relative path (the build context)."""
    out = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            out[str(path.relative_to(directory))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def host_hash(base: ImageRef, context: Mapping[str, str]) -> str:
    return digest({"base": base.content_hash, "context": dict(context)})


def extra_ca_setting(environ: Mapping[str, str]) -> Path | None:
    """``CDLAB_EXTRA_CA``: "host" (default) adds the workstation's extra CAs, "none" adds none,
    anything else is a folder or file of PEM certificates to add."""
    value = environ.get("CDLAB_EXTRA_CA", "host")
    if value == "none":
        return None
    return EXTRA_CA_DIR if value == "host" else Path(value)


def read_base_inputs(environ: Mapping[str, str] | None = None) -> BaseInputs:
    env = os.environ if environ is None else environ
    sources = (
        Path(env["CDLAB_APT_SOURCES"])
        if "CDLAB_APT_SOURCES" in env
        else next((p for p in APT_SOURCES if p.exists()), None)
    )
    if sources is None or not sources.exists():
        raise PreflightError(
            "no apt sources file to build the Debian base image from "
            f"(looked for {', '.join(str(p) for p in APT_SOURCES)})",
            "set CDLAB_APT_SOURCES to a deb822 '.sources' or one-line sources.list file",
        )
    ca = extra_ca_setting(env)
    cas: list[tuple[str, str]] = []
    if ca is not None and ca.is_dir():
        cas = [(p.name, p.read_text()) for p in sorted(ca.rglob("*.crt"))]
    elif ca is not None and ca.is_file():
        cas = [(ca.name if ca.suffix == ".crt" else ca.name + ".crt", ca.read_text())]
    elif ca is not None and "CDLAB_EXTRA_CA" in env:
        raise PreflightError(
            f"CDLAB_EXTRA_CA={ca} is neither a folder nor a file",
            "point it at PEM certificates, or set it to 'host' or 'none'",
        )
    return BaseInputs(
        SUITE, BASE_PACKAGES, sources.read_text() + f"\n#source:{sources}", tuple(cas)
    )


def mmdebstrap_argv(
    inputs: BaseInputs, sources_file: Path, ca_dir: Path | None, target: Path
) -> list[str]:
    """The mmdebstrap command that makes the base rootfs tarball (pure)."""
    argv = [
        "mmdebstrap",
        "--variant=apt",
        "--include=" + ",".join(inputs.packages),
        '--aptopt=Acquire::Retries "3"',
    ]
    if ca_dir is not None and inputs.extra_cas:
        argv.append(
            "--customize-hook=cp " + str(ca_dir) + "/*.crt "
            '"$1/usr/local/share/ca-certificates/" && '
            'chroot "$1" update-ca-certificates'
        )
    argv += [inputs.suite, str(target), str(sources_file)]
    return argv


def labels(config: LabConfig, kind: str, content_hash: str) -> dict[str, str]:
    return {**config.labels, "cdlab.image": kind, "cdlab.hash": content_hash}


class Images:
    """Builds the lab's images on the workstation's engine (``client``: a docker SDK client)."""

    def __init__(self, config: LabConfig, client: Any, logs: Path, cache: Path) -> None:
        self.config, self.client, self.logs, self.cache = config, client, logs, cache

    def find(self, ref: ImageRef) -> Any | None:
        """The image built from ``ref``'s inputs, if any; tagged ``ref.ref`` if it lost the tag."""
        found = self.client.images.list(filters={"label": [f"cdlab.hash={ref.content_hash}"]})
        if not found:
            return None
        if ref.ref not in (found[0].tags or []):
            found[0].tag(ref.repository, ref.tag)
        return found[0]

    def ensure_base(self, inputs: BaseInputs) -> tuple[ImageRef, bool]:
        """The base image for ``inputs``; built (True) only when no image has its hash."""
        ref = ImageRef("base", f"{REPOSITORY}/base", base_hash(inputs))
        if self.find(ref) is not None:
            return ref, False
        self.cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        sources = self.cache / ("apt.sources" if "Types:" in inputs.apt_sources else "apt.list")
        sources.write_text(inputs.apt_sources)
        ca_dir = self.cache / "extra-ca"
        ca_dir.mkdir(exist_ok=True)
        for old in ca_dir.glob("*.crt"):
            old.unlink()
        for name, pem in inputs.extra_cas:
            (ca_dir / name).write_text(pem)
        tarball = self.cache / "base.tar"
        log = self.logs / "build-base.log"
        try:
            result = shell.run(mmdebstrap_argv(inputs, sources, ca_dir, tarball), check=False)
            output = redact(result.output)  # a proxy's credentials in an apt URL, say
            log.write_text(output)
            if result.returncode != 0:
                raise ImageBuildError(
                    ref.ref,
                    output,
                    f"mmdebstrap exited {result.returncode} (full log: {log})",
                )
            changes = [
                f'LABEL {k}="{v}"' for k, v in labels(self.config, "base", ref.content_hash).items()
            ]
            changes.append('CMD ["/bin/bash"]')
            self.client.api.import_image_from_file(
                str(tarball), repository=ref.repository, tag=ref.tag, changes=changes
            )
        finally:
            tarball.unlink(missing_ok=True)
        self.prune_older(ref)
        return ref, True

    def ensure_host(self, base: ImageRef) -> tuple[ImageRef, bool]:
        ref = ImageRef("host", f"{REPOSITORY}/host", host_hash(base, tree_hash(HOST_CONTEXT)))
        if self.find(ref) is not None:
            return ref, False
        self.build(ref, HOST_CONTEXT, {"BASE": base.ref})
        self.prune_older(ref)
        return ref, True

    def build(self, ref: ImageRef, context: Path, buildargs: Mapping[str, str]) -> None:
        """``docker build`` through the SDK; the whole log is kept, its tail is in the error."""
        import docker.errors

        log_path = self.logs / f"build-{ref.kind}.log"
        lines: list[str] = []
        try:
            for chunk in self.client.api.build(
                path=str(context),
                tag=ref.ref,
                rm=True,
                forcerm=True,
                decode=True,
                buildargs=dict(buildargs),
                labels=labels(self.config, ref.kind, ref.content_hash),
            ):
                if "stream" in chunk:
                    lines.append(redact(chunk["stream"].rstrip("\n")))
                if "error" in chunk:
                    lines.append(redact(chunk["error"]))
                    log_path.write_text("\n".join(lines))
                    raise ImageBuildError(ref.ref, "\n".join(lines), f"full log: {log_path}")
        except docker.errors.APIError as exc:
            raise ImageBuildError(ref.ref, "\n".join(lines), str(exc)) from exc
        log_path.write_text("\n".join(lines))

    def prune_older(self, keep: ImageRef) -> None:
        """Remove this lab's older images of the same kind that nothing uses any more."""
        import docker.errors

        filters = {"label": [f"{LABEL}={self.config.name}", f"cdlab.image={keep.kind}"]}
        for image in self.client.images.list(filters=filters):
            if image.labels.get("cdlab.hash") != keep.content_hash:
                # still used by a container or a child image: then it is kept, on purpose
                with contextlib.suppress(docker.errors.APIError):
                    self.client.images.remove(image.id, noprune=False)
