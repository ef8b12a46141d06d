"""The lab hosts: facts about their containers, a pure plan, and Vagrant (python-vagrant) to apply.

Vagrant's output goes to ``.lab/logs/vagrant.log``; when it fails, its stderr tail is in the
``VagrantError``.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.config import LABEL, TOPOLOGY, LabConfig
from lab.errors import OwnershipError, VagrantError

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True)
class HostFacts:
    """What the workstation's engine says about one host's container."""

    name: str
    exists: bool
    running: bool = False
    image_id: str = ""
    owner: str = ""  # the checkout (label cdlab.root) that created it
    spec: str = ""  # label cdlab.spec: hash of what the container was created from
    status: str = "not created"  # docker's status word: running, exited, created, ...


@dataclass(frozen=True)
class HostAction:
    host: str
    # "keep", "start", "create", "recreate", "replace-orphan"; on an existing machine
    # "existing" (nothing to do: not cdlab's) or "remove" (the container cdlab made before)
    action: str
    reason: str


def plan(
    config: LabConfig,
    facts: Mapping[str, HostFacts],
    image_id: str,
    known_to_vagrant: Mapping[str, bool],
    owner_exists: Mapping[str, bool],
    spec: str = "",
) -> list[HostAction]:
    """Decide, per host, what ``lab.up`` must do (pure).

    Raises ``OwnershipError`` when a host belongs to another checkout that still exists.
    """
    here = str(config.root)
    actions = []
    for host in config.hosts:
        f = facts.get(host.name) or HostFacts(host.name, exists=False)
        if host.existing and not f.exists:
            actions.append(HostAction(host.name, "existing", f"not cdlab's: {host.address}"))
        elif not f.exists:
            actions.append(HostAction(host.name, "create", "no container"))
        elif f.owner and f.owner != here:
            if owner_exists.get(f.owner, False):
                raise OwnershipError(host.name, f.owner, here)
            actions.append(
                HostAction(host.name, "replace-orphan", f"left by a removed checkout at {f.owner}")
            )
        elif host.existing:
            why = f"an existing machine now ({host.address}): the container made for it goes"
            actions.append(HostAction(host.name, "remove", why))
        elif not known_to_vagrant.get(host.name, False):
            actions.append(HostAction(host.name, "replace-orphan", "unknown to Vagrant here"))
        elif f.image_id != image_id:
            actions.append(HostAction(host.name, "recreate", "host image changed"))
        elif spec and f.spec != spec:
            actions.append(HostAction(host.name, "recreate", "Vagrantfile or topology changed"))
        elif not f.running:
            actions.append(HostAction(host.name, "start", f"container is {f.status}"))
        else:
            actions.append(HostAction(host.name, "keep", "running"))
    return actions


def foreign_owners(
    config: LabConfig,
    facts: Mapping[str, HostFacts],
    owner_exists: Mapping[str, bool],
    allowed: bool,
) -> dict[str, bool]:
    """The other checkouts whose lab hosts are on this engine, each with whether it still exists
    (pure). A removed checkout's lab is always to be cleared; an existing one's only when
    ``allowed`` (``lab.up --take-over``), else ``OwnershipError``.
    """
    here = str(config.root)
    owners = {f.owner: owner_exists.get(f.owner, False) for f in facts.values()}
    owners = {o: alive for o, alive in sorted(owners.items()) if o and o != here}
    for f in facts.values():
        if owners.get(f.owner) and not allowed:
            raise OwnershipError(f.name, f.owner, here)
    return owners


def facts(config: LabConfig, client: Any) -> dict[str, HostFacts]:
    """Facts for every host container of this lab on the workstation's engine."""
    out = {}
    for c in client.containers.list(all=True, filters={"label": f"{LABEL}={config.name}"}):
        name = c.labels.get("cdlab.host", "")
        if name:
            out[name] = HostFacts(
                name,
                exists=True,
                running=c.status == "running",
                image_id=c.image.id if c.image else "",
                owner=c.labels.get("cdlab.root", ""),
                spec=c.labels.get("cdlab.spec", ""),
                status=c.status,
            )
    return out


def vagrant_error_summary(output: str) -> str:
    """Vagrant's stderr without colour codes and blank lines: the part worth showing."""
    lines = [_ANSI.sub("", line).rstrip() for line in output.splitlines()]
    return "\n".join(line for line in lines if line.strip())


class Vagrant:
    """Runs Vagrant in the project folder, logging to the state dir."""

    def __init__(self, config: LabConfig, host_image: str | None = None, spec: str = "") -> None:
        import vagrant

        self.config = config
        logs = config.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log = logs / "vagrant.log"
        self.err = logs / "vagrant-stderr.log"
        env = dict(
            os.environ,
            VAGRANT_CHECKPOINT_DISABLE="1",
            VAGRANT_DEFAULT_PROVIDER="docker",
            CDLAB_STATE_DIR=str(config.state_dir),
        )
        if host_image:
            env["CDLAB_HOST_IMAGE"] = host_image
        if spec:
            env["CDLAB_HOST_SPEC"] = spec
        if config.topology_file != TOPOLOGY:  # a second lab keeps its own Vagrant bookkeeping
            env["CDLAB_TOPOLOGY"] = str(config.topology_file)
            env["VAGRANT_DOTFILE_PATH"] = str(config.state_dir / "vagrant")
        api: Any = vagrant  # python-vagrant has no type hints
        self._v = api.Vagrant(
            root=str(config.root),
            env=env,
            out_cm=api.make_file_cm(str(self.log), "a"),
            err_cm=api.make_file_cm(str(self.err), "w"),
        )

    def _call(self, action: str, host: str | None, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except subprocess.CalledProcessError as exc:
            text = self.err.read_text() if self.err.exists() else ""
            if not text.strip() and self.log.exists():
                text = self.log.read_text()[-4000:]
            raise VagrantError(
                action,
                host,
                vagrant_error_summary(text),
                f"see {self.log}; fix the cause and run 'invoke lab.up' again (it resumes)",
            ) from exc
        except RuntimeError as exc:  # python-vagrant: the vagrant executable is missing
            raise VagrantError(action, host, str(exc), "run './cdlab up' to install it") from exc

    def known(self) -> dict[str, bool]:
        """Which hosts Vagrant in this folder knows as created."""
        states = self._call("status", None, self._v.status)
        return known_hosts(self.config, [(s.name, s.state) for s in states])

    def up(self, hosts: Sequence[str] = ()) -> None:
        if not hosts:
            self._call("up", None, self._v.up, provider="docker")
        for h in hosts:
            self._call("up", h, self._v.up, vm_name=machine_name(self.config, h), provider="docker")

    def halt(self) -> None:
        self._call("halt", None, self._v.halt)

    def destroy(self, host: str | None = None) -> None:
        machine = machine_name(self.config, host) if host else None
        self._call("destroy", host, self._v.destroy, vm_name=machine)


def machine_name(config: LabConfig, host: str) -> str:
    """Vagrant's name for ``host``'s machine: its container's, ``<lab>-<host>`` (the
    Vagrantfile defines the same). Never the bare host name: Vagrant first reads a machine name
    as the prefix of an id in its machine index, shared by every lab and checkout on this
    workstation, so a name of hex digits alone (``cd``) can address another machine
    (hashicorp/vagrant#8152). A name with a ``-`` never prefixes an id (hex digits only)."""
    return config.container_name(config.host(host))


def known_hosts(config: LabConfig, states: Sequence[tuple[str, str]]) -> dict[str, bool]:
    """Vagrant's status (machine name, state) as host -> created (pure). Machines of an older
    naming are left out (their hosts count as unknown to Vagrant, so ``plan`` replaces their
    containers once). A machine listed twice means Vagrant addressed one machine for another:
    ``VagrantError`` then, before a plan could remove a host on that word."""
    names = [name for name, _ in states]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise VagrantError(
            "status",
            None,
            f"Vagrant listed {', '.join(twice)} more than once: it addressed one machine for "
            "another (its machine index)",
            "run 'vagrant global-status --prune', then 'invoke lab.up' again",
        )
    hosts = {machine_name(config, h.name): h.name for h in config.created_hosts}
    return {
        hosts[name]: state not in ("not_created", "not created")
        for name, state in states
        if name in hosts
    }


def spec_hash(config: LabConfig, image_ref: str) -> str:
    """What a host container is created from: Vagrantfile, topology and host image."""
    import hashlib

    h = hashlib.sha256((config.root / "Vagrantfile").read_bytes())
    h.update(config.topology_file.read_bytes())
    h.update(image_ref.encode())
    return h.hexdigest()[:16]


def owner_paths_exist(facts: Mapping[str, HostFacts]) -> dict[str, bool]:
    return {f.owner: Path(f.owner, "Vagrantfile").exists() for f in facts.values() if f.owner}
