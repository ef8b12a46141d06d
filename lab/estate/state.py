"""The lab's state folder (``.lab/``, git-ignored, mode 0700) and what it holds.

Layout::

    .lab/pki/                 CA and every certificate (keys 0600)
    .lab/pki-control/         the control plane's CA and certificates (etcd, Runtime API)
    .lab/registry-password    the registry user's password (0600)
    .lab/ssh/                 git over SSH to cd: the pusher's key (dev and the workstation
                              hold it) and cd's host key
    .lab/hosts/<host>/        the bundle mounted read-only at /etc/cdlab on that host:
                              ca.pem, cert.pem, key.pem (+ htpasswd, registry.yml on registry;
                              + control/etcd/ and control/proxy/ on prod: what the stack's
                              etcd and proxy mount)
    .lab/logs/                vagrant.log, dockerd.log, build logs
    .lab/runs/                one JSON record per lab.up
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from lab.config import Host, LabConfig
from lab.estate import pki
from lab.estate.pki import Pki
from lab.estate.sshkeys import Keys
from lab.ports import registry


@dataclass(frozen=True)
class State:
    config: LabConfig

    @property
    def dir(self) -> Path:
        return self.config.state_dir

    def at(self, root: Path) -> State:
        """The same lab (hosts, state) driven from another checkout at ``root``."""
        return State(dataclasses.replace(self.config, root=root))

    @property
    def pki(self) -> pki.Pki:
        return pki.Pki(self.dir / "pki")

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def runs(self) -> Path:
        return self.dir / "runs"

    def bundle(self, host: Host) -> Path:
        return self.dir / "hosts" / host.name

    @property
    def password_file(self) -> Path:
        return self.dir / "registry-password"

    def credentials(self) -> registry.Credentials:
        return registry.Credentials(registry.USER, self.password_file.read_text().strip())

    def registry_client(self, authenticated: bool = True) -> registry.RegistryClient:
        """The one client for the lab registry (TLS verified against the lab CA)."""
        creds = self.credentials() if authenticated else None
        return registry.RegistryClient(self.config.registry_addr, self.pki.ca_cert, creds)

    @property
    def ssh(self) -> Keys:
        return Keys(self.dir / "ssh")

    @property
    def control_pki(self) -> Pki:
        return Pki(self.dir / "pki-control", "cdlab control plane CA")

    def control_tls(self) -> tuple[Path, Path, Path]:
        """(ca, cert, key) for the operator's clients of etcd and the proxy's Runtime API."""
        p = self.control_pki
        return p.ca_cert, p.cert("operator"), p.key("operator")

    def client_tls(self) -> tuple[Path, Path, Path]:
        """(ca, cert, key) for the lab's engine clients."""
        p = self.pki
        return p.ca_cert, p.cert("client"), p.key("client")

    @property
    def client_tls_dir(self) -> Path:
        """The client certificate under the names docker's CLI and compose expect."""
        return self.dir / "client-tls"

    def secret(self, name: str) -> str:
        """A generated secret of the lab (created on first use, 0600 in the state dir)."""
        path = self.dir / "secrets" / name
        if not path.exists():
            path.parent.mkdir(mode=0o700, exist_ok=True)
            write_secret(path, secrets.token_urlsafe(24) + "\n")
        return path.read_text().strip()

    def secret_values(self) -> tuple[str, ...]:
        """Every secret value the lab generated (the registry password, each of ``secrets/``),
        for what is written down to be redacted of them (``lab.proof.redact``). Reads only:
        none is created, and an absent one is not listed."""
        found = [self.password_file, *sorted((self.dir / "secrets").glob("*"))]
        values = (p.read_text().strip() for p in found if p.is_file() and p.suffix != ".tmp")
        return tuple(v for v in values if v)

    def ensure(self) -> list[str]:
        """Create or complete the state folder; return what changed (empty when nothing)."""
        changed: list[str] = []
        for d in (self.dir, self.logs, self.runs, self.dir / "hosts"):
            if not d.exists():
                d.mkdir(parents=True, mode=0o700)
            os.chmod(d, 0o700)
        changed += self.pki.ensure(pki.plan(self.config))
        changed += [f"control {c}" for c in self.control_pki.ensure(pki.control_plan(self.config))]
        changed += self.ssh.ensure()
        if not self.password_file.exists():
            write_secret(self.password_file, secrets.token_urlsafe(24) + "\n")
            changed.append("registry password")
        tls = self.client_tls_dir
        tls.mkdir(mode=0o700, exist_ok=True)
        ca, cert, key = self.client_tls()
        for name, src in (("ca.pem", ca), ("cert.pem", cert), ("key.pem", key)):
            if not (tls / name).exists() or (tls / name).read_bytes() != src.read_bytes():
                write_secret(tls / name, src.read_bytes())
                changed.append(f"client certificate {name}")
        creds = self.credentials()
        for host in self.config.hosts:
            changed += [f"{host.name}: {f}" for f in self._bundle(host, creds)]
        return changed

    def runner_files(self) -> list[Path]:
        """What a pipeline run needs from this folder on another machine (the cd host's git
        hook): the lab CA, the client certificate, the control plane's CA and operator
        certificate, the registry password, the database secret and the base image's name.
        Never a CA key."""
        self.secret("db-password")
        ca, cert, key = self.client_tls()
        tls = [self.client_tls_dir / n for n in ("ca.pem", "cert.pem", "key.pem")]
        return [
            ca,
            cert,
            key,
            *tls,
            *self.control_tls(),
            self.password_file,
            self.dir / "secrets" / "db-password",
            self.dir / "base-image",
        ]

    def installed_files(self) -> dict[str, Path]:
        """cdlab's own code as cd installs it (path in the copy -> file of this checkout): the
        ``lab`` package and the proxy's (``lab`` reads its parsers). A pushed commit is built
        and deployed by this copy, never by the commit's own ``lab/``."""
        root = self.config.root
        found = [
            *sorted((root / "lab").rglob("*.py")),
            *sorted((root / "services" / "proxy" / "cdlab_proxy").glob("*.py")),
        ]
        files = {str(p.relative_to(root)): p for p in found if "__pycache__" not in p.parts}
        # this lab's topology where the copy looks for it (a named lab's is derived, in its state)
        files["lab/topology.json"] = self.config.topology_file
        return files

    def write_runner_bundle(self) -> list[str]:
        """Copy ``runner_files`` into the builder host's bundle (``runner/``) and cdlab's code
        into ``runner/cdlab/`` (the copy cd's git hook runs, stale files removed); what
        changed."""
        target = self.bundle(self.config.builder) / "runner"
        changed = []
        for src in self.runner_files():
            dst = target / src.relative_to(self.dir)
            dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not dst.exists() or dst.read_bytes() != src.read_bytes():
                write_secret(dst, src.read_bytes())
                changed.append(str(src.relative_to(self.dir)))
        code = target / "cdlab"
        wanted = self.installed_files()
        for name, src in wanted.items():
            dst = code / name
            dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not dst.exists() or dst.read_bytes() != src.read_bytes():
                write_secret(dst, src.read_bytes())
                changed.append(f"cdlab/{name}")
        for old in [p for p in code.rglob("*") if p.is_file()]:
            if str(old.relative_to(code)) not in wanted:
                old.unlink()
                changed.append(f"cdlab/{old.relative_to(code)} (removed)")
        return changed

    def _bundle(self, host: Host, creds: registry.Credentials) -> list[str]:
        d = self.bundle(host)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        stem = "registry" if host.role == "registry" else f"engine-{host.name}"
        files = {
            "ca.pem": self.pki.ca_cert.read_bytes(),
            "cert.pem": self.pki.cert(stem).read_bytes(),
            "key.pem": self.pki.key(stem).read_bytes(),
        }
        if host.role == "registry":
            files["registry.yml"] = registry.render_config(self.config.registry_port).encode()
            current = d / "htpasswd"
            line = current.read_text() if current.exists() else ""
            if not registry.htpasswd_matches(line, creds.user, creds.password):
                files["htpasswd"] = registry.htpasswd_line(creds.user, creds.password).encode()
        changed = []
        for name, data in files.items():
            path = d / name
            if not path.exists() or path.read_bytes() != data:
                write_secret(path, data)
                changed.append(name)
        if host.name == "prod":
            changed += self._control_bundle(d / "control")
        changed += self._ssh_bundle(host, d / "ssh")
        return changed

    def _ssh_bundle(self, host: Host, d: Path) -> list[str]:
        """cd: its host key and the pusher's authorized key (git-shell only); dev: the
        pusher's key and cd's host key to pin."""
        keys, cd = self.ssh, self.config.builder
        files: dict[str, bytes] = {}
        if host.name == cd.name:
            files = {
                "host_key": keys.host.read_bytes(),
                "authorized_keys": keys.authorized_keys().encode(),
            }
        elif host.name == "dev":
            files = {
                "pusher": keys.pusher.read_bytes(),
                "known_hosts": keys.known_hosts((cd.address, cd.name)).encode(),
            }
        changed = []
        for name, data in files.items():
            path = d / name
            path.parent.mkdir(exist_ok=True, mode=0o700)
            if not path.exists() or path.read_bytes() != data:
                write_secret(path, data)
                changed.append(f"ssh/{name}")
        return changed

    def _control_bundle(self, d: Path) -> list[str]:
        """What prod's etcd and proxy containers mount (``control/etcd``, ``control/proxy``).
        Readable by any user (etcd runs as its own user in its container): the bundle's own
        folder (0700) keeps them from this machine's other users, and on prod only the
        containers that mount them see them."""
        p = self.control_pki
        files = {
            "etcd/ca.pem": p.ca_cert,
            "etcd/cert.pem": p.cert("etcd"),
            "etcd/key.pem": p.key("etcd"),
            "proxy/ca.pem": p.ca_cert,
            "proxy/cert.pem": p.cert("proxy"),
            "proxy/key.pem": p.key("proxy"),
            "proxy/runtime-cert.pem": p.cert("runtime"),
            "proxy/runtime-key.pem": p.key("runtime"),
        }
        changed = []
        for name, src in files.items():
            path = d / name
            path.parent.mkdir(parents=True, exist_ok=True)
            for folder in (d, path.parent):
                os.chmod(folder, 0o755)
            data = src.read_bytes()
            if not path.exists() or path.read_bytes() != data:
                write_secret(path, data, mode=0o644)
                changed.append(f"control/{name}")
        return changed


def write_secret(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically with ``mode`` (0600 unless said)."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(raw)
    os.replace(tmp, path)
