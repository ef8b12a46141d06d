"""The cd host's side of a push: ``python3 -P -m lab.release.ci OLD NEW``, run by the
repository's post-receive hook with ``CDLAB_CHECKOUT`` naming a checkout of NEW
(``lab/estate/hostimage/cdlab-post-receive``). This module comes from cd's installed copy of
cdlab (``runner/cdlab`` in cd's bundle, written by ``lab.up``), never from the pushed commit:
a commit's own ``lab/`` never runs with the runner's credentials.

Every service whose folder changed between OLD and NEW is deployed (all of them on a first
push); the output goes back to the pusher as it is written. Exit 0 when every deploy succeeded.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lab import config
from lab.build import git
from lab.errors import LabError, disk_full_hint
from lab.estate.state import State
from lab.progress import Progress
from lab.release import pipeline
from lab.stack import services


def to_deploy(names: list[str], changed: list[str] | None) -> list[str]:
    """The services a push deploys (pure): those with a changed file in their folder, or all
    when the change set is unknown."""
    if changed is None:
        return names
    return [n for n in names if any(p.startswith(f"services/{n}/") for p in changed)]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python3 -m lab.release.ci OLD_SHA NEW_SHA", file=sys.stderr)
        return 2
    old, new = argv
    checkout = os.environ.get("CDLAB_CHECKOUT")
    state = State(config.load(Path(checkout) if checkout else None))
    # prod's published ports (proxy, graphite-web) from here are on prod's lab address
    os.environ.setdefault("CDLAB_PUBLIC_HOST", state.config.host("prod").address)
    try:
        for folder in (state.logs, state.runs):  # build logs and flight records stay on cd
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        print(f"cdlab: nothing deployed: {exc}{disk_full_hint(exc)}")
        return 1
    root = state.config.root
    names = to_deploy(services.names(root), git.changed_paths(root, old, new))
    if not names:
        print(f"cdlab: no service changed in {git.short(old)}..{git.short(new)}; nothing to deploy")
        return 0
    progress = Progress(out=sys.stdout)
    failed = []
    for name in names:
        try:
            record = pipeline.deploy(state, progress, name, new)
        except (LabError, OSError) as exc:  # OSError: this host's own (a full disk)
            print(f"cdlab: deploy of {name} {git.short(new)} failed: {exc}{disk_full_hint(exc)}")
            failed.append(name)
            continue
        print(
            f"cdlab: {name} {record.release} is live (was {record.previous or 'nothing'}) "
            f"in {record.seconds:.1f} s"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
