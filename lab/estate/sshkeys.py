"""The keys of git over SSH to cd: a push to cd needs the pusher's key, which only dev and the
workstation hold; cd's host key is made here too, so the pushers pin it (no trust on first use).

Made once per lab (``lab.up``), kept in the state folder (0600), copied into the bundles:
cd gets its host key and an ``authorized_keys`` whose one line lets the pusher's key run
``git-shell`` only (push and fetch, nothing else); dev gets the pusher's key and a
``known_hosts`` naming cd's host key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

# every option off but what git needs; the command is forced whatever the client asks
AUTHORIZED = 'restrict,command="git-shell -c \\"$SSH_ORIGINAL_COMMAND\\"" {key} cdlab-pusher\n'


@dataclass(frozen=True)
class Keys:
    """Where the lab's SSH keys are (``<state>/ssh``)."""

    dir: Path

    @property
    def pusher(self) -> Path:
        return self.dir / "pusher"

    @property
    def host(self) -> Path:
        return self.dir / "cd-host-key"

    def public(self, private: Path) -> str:
        """The OpenSSH public line (type and key) of a private key file."""
        key = serialization.load_ssh_private_key(private.read_bytes(), password=None)
        return (
            key.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )

    def ensure(self) -> list[str]:
        """Make the keys that are missing; what was made."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        made = []
        for path in (self.pusher, self.host):
            if not path.exists():
                _write(path, new_private())
                made.append(f"ssh {path.name}")
        return made

    def authorized_keys(self) -> str:
        return AUTHORIZED.format(key=self.public(self.pusher))

    def known_hosts(self, cd_names: tuple[str, ...]) -> str:
        return f"{','.join(cd_names)} {self.public(self.host)}\n"


def new_private() -> bytes:
    """A new Ed25519 private key in OpenSSH's format."""
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
