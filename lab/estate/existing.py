"""Existing machines (``"existing": true`` in the topology): hosts cdlab does not create.

A team's VM runs the same boot as a lab host (``hostimage/cdlab-host-init``) from the same bundle
(the lab CA, its engine's certificate, the control plane's on prod), installed there by hand from
``invoke lab.bundle --host NAME``: a tar.gz holding the bundle, the boot script, the host's
environment and ``install-host.sh``. ``lab.up`` then only checks that each such engine answers
with the lab's client certificate (before it builds or creates anything) and uses it like any
other; ``lab.down`` never stops one, and ``lab.destroy`` only takes back what cdlab put there
(its swarm, containers, networks and volumes), leaving the machine and its engine running.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lab.config import Host, LabConfig
from lab.errors import ConfigError, EngineError
from lab.estate import swarm
from lab.estate.state import State, write_secret

HOSTIMAGE = Path(__file__).resolve().parent / "hostimage"
# beside the host image's folder, not in it: the host image's tag hashes that folder
INSTALL = Path(__file__).resolve().parent / "install-host.sh"
WAIT = 20.0  # how long lab.up waits for an existing engine: it is running, or it is not


def host_env(config: LabConfig, host: Host) -> str:
    """The boot script's environment for ``host`` (``KEY=value`` lines, pure): what the
    Vagrantfile gives a host it creates."""
    lines = {
        "CDLAB_HOST": host.name,
        "CDLAB_ROLE": host.role,
        "CDLAB_REGISTRY": config.registry_addr,
        "CDLAB_ENGINE_PORT": str(config.engine_port),
    }
    if host.swarm:
        lines["CDLAB_SWARM_NODE"] = "1"
    return "".join(f"{k}={v}\n" for k, v in lines.items())


def bundle_members(state: State, host: Host) -> dict[str, tuple[bytes, int]]:
    """What ``lab.bundle`` packs for ``host`` (archive path -> content, mode): its bundle under
    ``<host>/cdlab/``, the boot and install scripts and its environment. Reads the state
    folder; ``state.ensure()`` has made the bundle."""
    top = host.name
    files: dict[str, tuple[bytes, int]] = {}
    bundle = state.bundle(host)
    for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
        mode = path.stat().st_mode & 0o644  # the control plane's are 0644, the rest 0600
        files[f"{top}/cdlab/{path.relative_to(bundle)}"] = (path.read_bytes(), mode)
    files[f"{top}/host.env"] = (host_env(state.config, host).encode(), 0o600)
    for script in (HOSTIMAGE / "cdlab-host-init", INSTALL):
        files[f"{top}/{script.name}"] = (script.read_bytes(), 0o755)
    return files


def write_bundle(state: State, name: str, out: Path | None = None) -> Path:
    """``<name>.tar.gz`` (mode 0600: it holds the host's private key) for the existing machine
    ``name``; ``out`` is a file or a folder (default: the current folder)."""
    config = state.config
    host = config.host(name)
    if not host.existing:
        mine = ", ".join(h.name for h in config.hosts if h.existing) or "none in this topology"
        raise ConfigError(
            "--host",
            name,
            f"an existing machine of {config.topology_file.name} (hosts[].existing true: "
            f"{mine}); cdlab gives the hosts it creates their bundle itself",
        )
    state.ensure()
    target = Path(out or ".")
    if target.is_dir():
        target = target / f"{name}.tar.gz"
    if not target.parent.is_dir():
        raise ConfigError("--out", str(out), "a file in an existing folder, or a folder")
    members, now = bundle_members(state, host), int(time.time())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for folder in sorted({f"{name}/cdlab", *_parents(members)}):
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o700, now
            tar.addfile(info)
        for path, (data, mode) in members.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), mode, now
            tar.addfile(info, io.BytesIO(data))
    write_secret(target, buf.getvalue())
    return target


def _parents(members: Mapping[str, Any]) -> set[str]:
    out = set()
    for path in members:
        parts = path.split("/")[:-1]
        out |= {"/".join(parts[: i + 1]) for i in range(len(parts))}
    return out


def install_hint(host: Host) -> str:
    return (
        f"'{host.name}' is an existing machine (hosts[].existing): cdlab does not start it. "
        f"Install its bundle there: 'invoke lab.bundle --host {host.name}' writes "
        f"{host.name}.tar.gz; copy it to the machine and, as root, 'rm -rf {host.name} && "
        f"tar xzf {host.name}.tar.gz && sh {host.name}/install-host.sh' (docs/lab.md, "
        "'Existing machines'); then run "
        "'invoke lab.up' again"
    )


def presented_cert(state: State, host: Host, timeout: float = 5.0) -> bytes:
    """The certificate ``host``'s engine presents (DER), read over mutual TLS."""
    import socket
    import ssl

    ca, cert, key = state.client_tls()
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    address = (host.address, state.config.engine_port)
    with (
        socket.create_connection(address, timeout) as sock,
        ctx.wrap_socket(sock, server_hostname=host.address) as tls,
    ):
        return tls.getpeercert(binary_form=True) or b""


def check(
    state: State,
    wait_ready: Callable[..., str],
    presented: Callable[[State, Host], bytes] = presented_cert,
) -> list[str]:
    """Each existing machine's engine answers with the lab's client certificate and presents
    the certificate of its current bundle: its ``name version`` each; ``EngineError`` with how
    to install its bundle otherwise (a machine still on an older bundle included)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    said = []
    for host in (h for h in state.config.hosts if h.existing):
        try:
            version = wait_ready(state, host, timeout=WAIT)
        except EngineError as exc:
            raise EngineError(exc.host, exc.url, exc.last_error, install_hint(host)) from exc
        wanted = x509.load_pem_x509_certificate((state.bundle(host) / "cert.pem").read_bytes())
        if presented(state, host) != wanted.public_bytes(Encoding.DER):
            raise EngineError(
                host.name,
                f"tcp://{host.address}:{state.config.engine_port}",
                "it answers with a certificate other than its bundle's (an older bundle: the "
                "lab's certificates were renewed since it was installed)",
                install_hint(host),
            )
        said.append(f"{host.name} {version}")
    return said


def release(client: Any, project: str, manager: str) -> list[str]:
    """Take back from an existing machine's engine what cdlab put there: out of prod's swarm
    (whose manager is at ``manager:2377``; another swarm is left alone), the containers,
    networks and volumes of the stack (compose ``project``) and of the releases (label
    ``cdlab.role``) removed; images are kept, as a registry's are. What was done."""
    import docker.errors

    done = []
    sw = client.info().get("Swarm") or {}
    state = sw.get("LocalNodeState") or "inactive"
    managers = {str(m.get("Addr", "")) for m in sw.get("RemoteManagers") or ()}
    if state != "inactive" and f"{manager}:{swarm.PORT}" in managers:
        client.swarm.leave(force=True)
        done.append("left the swarm")
    elif state != "inactive":
        done.append(f"in another swarm ({', '.join(sorted(managers)) or state}): left in it")
    mine = ({"label": "cdlab.role"}, {"label": f"com.docker.compose.project={project}"})
    kinds = (("containers", client.containers), ("networks", client.networks))
    for what, kind in (*kinds, ("volumes", client.volumes)):
        found = {x.id: x for flt in mine for x in _listed(kind, what, flt)}
        failed = []
        for item in found.values():  # one that will not go is said; the others go all the same
            try:
                item.remove() if what == "networks" else item.remove(force=True)
            except docker.errors.APIError as exc:
                failed.append(f"{getattr(item, 'name', item.id)} ({exc.explanation or exc})")
        if len(found) > len(failed):
            done.append(f"{len(found) - len(failed)} {what}")
        if failed:
            done.append(f"{what} not removed: {'; '.join(failed)}")
    return done


def _listed(kind: Any, what: str, flt: Mapping[str, str]) -> list[Any]:
    if what == "containers":
        return list(kind.list(all=True, filters=flt))
    return list(kind.list(filters=flt))
