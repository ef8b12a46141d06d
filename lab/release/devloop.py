"""The trainers' loop on the dev host: a clone of the project whose ``cd`` remote is the cd
host's repository; a push to its main runs the pipeline there (``lab/release/ci.py``).

``invoke dev.push`` = commit what changed in the dev clone, push, watch the deploy's output.
"""

from __future__ import annotations

import re
from typing import Any

from lab.config import LabConfig
from lab.errors import PushError as PushError  # its home before lab.errors held every error
from lab.ports import shell

CLONE = "/var/lib/cdlab/dev-clone"  # on dev's cdlab volume (kept across host recreation)
REPOSITORY = "/var/lib/cdlab/git/cdlab.git"  # on cd


def remote_url(config: LabConfig) -> str:
    """cd's repository, by git over SSH (the pusher's key: dev's bundle, the workstation)."""
    return f"ssh://root@{config.builder.address}{REPOSITORY}"


def setup_script(config: LabConfig) -> str:
    """Create the dev clone once (from the project folder mounted at /vagrant); never touch a
    clone that exists, it holds the trainee's work."""
    return f"""set -e
git config --global safe.directory '*'
git config --global user.name >/dev/null || git config --global user.name 'cdlab dev'
git config --global user.email >/dev/null || git config --global user.email dev@cdlab.lab
if [ ! -d {CLONE}/.git ]; then
    git clone --quiet /vagrant {CLONE}
    git -C {CLONE} checkout --quiet -B main
    echo created
else
    # follow the workstation's commit when that loses nothing: a clean clone behind it
    git -C {CLONE} fetch --quiet /vagrant HEAD
    if [ -z "$(git -C {CLONE} status --porcelain)" ] \
        && ! git -C {CLONE} merge-base --is-ancestor FETCH_HEAD HEAD \
        && git -C {CLONE} merge-base --is-ancestor HEAD FETCH_HEAD; then
        git -C {CLONE} merge --quiet --ff-only FETCH_HEAD && echo forwarded
    fi
fi
git -C {CLONE} remote remove cd 2>/dev/null || true
git -C {CLONE} remote add cd {remote_url(config)}
ln -sfn {CLONE} /root/cdlab
git -C {CLONE} rev-parse --short=12 HEAD
"""


def ensure_clone(config: LabConfig, local: Any) -> tuple[str, str]:
    """(what changed: "created", "forwarded" or "", head) of the dev clone. A clean clone
    behind the workstation's commit is fast-forwarded to it; one with work of its own is
    left alone."""
    container = local.containers.get(config.container_name(config.host("dev")))
    code, out = container.exec_run(["sh", "-c", setup_script(config)])
    text = out.decode(errors="replace")
    if code != 0:
        raise PushError(
            "prepare the dev clone on dev", "its setup script failed", returncode=code, output=text
        )
    lines = text.split()
    did = next((w for w in ("created", "forwarded") if w in lines), "")
    return did, lines[-1] if lines else "?"


def push_script(message: str) -> str:
    quoted = "'" + message.replace("'", "'\\''") + "'"
    return f"""set -e
cd {CLONE}
git add -A
if git diff --cached --quiet; then
    echo "dev: nothing to commit; pushing $(git rev-parse --short=12 HEAD)"
else git commit --quiet -m {quoted}; echo "dev: committed $(git rev-parse --short=12 HEAD)"; fi
git push --force cd HEAD:main 2>&1
"""


def push(config: LabConfig, message: str) -> str:
    """Commit the dev clone's changes, push to cd and stream the pipeline's output; returns the
    pushed commit. ``PushError`` when the deploy on cd failed (the output says why)."""
    argv = [
        "docker",
        "exec",
        config.container_name(config.host("dev")),
        "sh",
        "-c",
        push_script(message),
    ]
    result = shell.tee(argv)
    verdicts = [ln for ln in result.output.splitlines() if "cdlab-result:" in ln]
    head = _head(config)
    if result.returncode != 0:
        raise PushError(
            "push from dev to cd",
            "its output is above",
            returncode=result.returncode,
            release=head,
        )
    if not verdicts:
        raise PushError(
            f"deploy {head} by a push to cd",
            "the cd host's hook said nothing",
            release=head,
            hint="check that sshd is running on cd (port 22): 'invoke lab.status'.",
        )
    if not verdicts[-1].split("cdlab-result:", 1)[1].strip().startswith("succeeded"):
        failed, live = outcome(result.output)
        said = f"the pipeline on cd failed ({verdicts[-1].split(':', 1)[1].strip()})"
        if failed:
            said = (
                f"the deploy of {', '.join(failed)} failed"
                + (f" ({', '.join(live)} went live)" if live else "")
                + f"; production keeps the live release of {', '.join(failed)}"
            )
        elif live:  # the hook failed after its deploys
            said += f"; {', '.join(live)} went live before it did"
        else:
            said += "; production keeps its live releases"
        raise PushError(
            f"deploy {head} by a push to cd",
            said,
            release=head,
            hint="the output above says which stage failed and why "
            "('cdlab: deploy of SERVICE ... failed').",
        )
    return head


def outcome(output: str) -> tuple[list[str], list[str]]:
    """The services whose deploy failed and those made live, from the hook's output (pure)."""
    failed: list[str] = []
    live: list[str] = []
    for line in output.splitlines():
        text = line.removeprefix("remote:").strip()
        if m := re.match(r"cdlab: deploy of (\S+) \S+ failed", text):
            failed.append(m.group(1))
        elif m := re.match(r"cdlab: (\S+) \S+ is live \(was ", text):
            live.append(m.group(1))
    return failed, live


def _head(config: LabConfig) -> str:
    argv = [
        "docker",
        "exec",
        config.container_name(config.host("dev")),
        "git",
        "-C",
        CLONE,
        "rev-parse",
        "--short=12",
        "HEAD",
    ]
    return shell.run(argv).output.strip()


def clone_head(config: LabConfig) -> str:
    """The dev clone's commit (full sha); "" when dev or its clone does not answer."""
    argv = ["docker", "exec", config.container_name(config.host("dev"))]
    done = shell.run([*argv, "git", "-C", CLONE, "rev-parse", "HEAD"], check=False, timeout=30)
    return done.output.strip() if done.returncode == 0 else ""


def reset_clone(config: LabConfig, sha: str) -> None:
    """The dev clone's branch back to ``sha`` (a full or short commit id), its files with it
    (what a user had committed there stays reachable in git's reflog)."""
    argv = ["docker", "exec", config.container_name(config.host("dev"))]
    # a commit the clone never saw (the checkout's, for lab.reset) comes from the checkout
    # mounted at /vagrant first
    script = (
        f"git -C {CLONE} cat-file -e '{sha}^{{commit}}' 2>/dev/null "
        f"|| git -C {CLONE} fetch --quiet /vagrant HEAD; "
        f"git -C {CLONE} reset -q --hard '{sha}'"
    )
    shell.run([*argv, "sh", "-c", script], timeout=60)
