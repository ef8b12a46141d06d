"""Facts about the checkout: which commit, which tree, and a folder's content at a commit."""

from __future__ import annotations

from pathlib import Path

from lab.errors import ConfigError
from lab.ports import shell

SHORT = 12  # release ids and image tags use this many hex digits of the commit


def _git(root: Path, *args: str) -> str:
    return shell.run(
        ["git", "-C", str(root), *args], hint="is this a git checkout with at least one commit?"
    ).output.strip()


def commit(root: Path, ref: str = "HEAD") -> str:
    """The full sha of ``ref``; ``ConfigError`` naming the ref when it does not resolve."""
    result = shell.run(
        ["git", "-C", str(root), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        check=False,
    )
    if result.returncode != 0:
        raise ConfigError(
            "ref", ref, "a commit, branch or tag of this repository (see 'git log --oneline')"
        )
    return result.output.strip()


def short(sha: str) -> str:
    return sha[:SHORT]


def tree(root: Path, sha: str, path: str) -> str:
    """The git tree id of ``path`` at ``sha``: a content hash of that folder."""
    result = shell.run(["git", "-C", str(root), "rev-parse", f"{sha}:{path}"], check=False)
    if result.returncode != 0:
        raise ConfigError("service folder", path, f"a folder committed at {short(sha)}")
    return result.output.strip()


def archive(root: Path, sha: str, path: str) -> bytes:
    """A tar of ``path`` as committed at ``sha`` (the build context: never the working tree)."""
    code, out, err = shell.capture(
        ["git", "-C", str(root), "archive", "--format=tar", f"{sha}:{path}"]
    )
    if code != 0:
        raise ConfigError(
            "service folder", path, f"a folder committed at {short(sha)} ({err.strip()})"
        )
    return out


def service_names(root: Path, sha: str) -> list[str]:
    """The services committed at ``sha``: folders ``services/<name>`` with a ``service.toml``."""
    listed = _git(root, "ls-tree", "-r", "--name-only", sha, "--", "services/").splitlines()
    parts = [p.split("/") for p in listed]
    return sorted(p[1] for p in parts if len(p) == 3 and p[2] == "service.toml")


def dirty(root: Path) -> bool:
    """True when the working tree has uncommitted changes (they are never deployed)."""
    return bool(_git(root, "status", "--porcelain", "--untracked-files=no"))


def changed_paths(root: Path, old: str, new: str) -> list[str] | None:
    """Paths changed between two commits; ``None`` when ``old`` is unknown here (a first push,
    or history this clone does not hold): then everything counts as changed."""
    if (
        set(old) == {"0"}
        or shell.run(
            ["git", "-C", str(root), "cat-file", "-e", f"{old}^{{commit}}"], check=False
        ).returncode
        != 0
    ):
        return None
    return _git(root, "diff", "--name-only", old, new).splitlines()


def files(root: Path, sha: str, path: str) -> dict[str, bytes]:
    """Every file under ``path`` at ``sha`` (name relative to the repository -> content)."""
    import io
    import tarfile

    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(archive(root, sha, path))) as tar:
        for member in tar.getmembers():
            fh = tar.extractfile(member) if member.isfile() else None
            if fh is not None:
                out[f"{path}/{member.name}"] = fh.read()
    return out


def commit_all(root: Path, message: str, author: str = "cdlab") -> str:
    """Commit every tracked change in ``root`` (a throwaway clone) as ``author``; the new sha."""
    _git(
        root,
        "-c",
        f"user.name={author}",
        "-c",
        f"user.email={author}@cdlab.invalid",
        "commit",
        "-qam",
        message,
    )
    return commit(root)
