"""``invoke lab.reset``: the lab back to its first state, as ``lab.up`` left it, keeping the
images (a class between two groups, a lesson done again), in well under a minute when the
checkout's commit is still in the registry.

For each service of the checkout: its commit at HEAD live and alone in the proxy's pool (no
warm release, no matched traffic); every other release's container removed and its tag deleted
from the registry (a pin of the user's lifted; a running test suite's pins kept); its database
emptied (the schema stays; identities restart); its history cleared down to one ``reset``
record of the release now live. Then the dev clone back at the checkout's commit, and the
lessons' baseline (the proxy's last stop) taken again.

Every stage can be run again: a reset stopped halfway (Ctrl-C, an error) is finished by the
next ``invoke lab.reset``; production serves throughout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
from typing import Any

from lab.build import git
from lab.errors import ReleaseError, RunStopped
from lab.estate.images import REPOSITORY
from lab.ports import shell
from lab.ports.lab import Lab
from lab.progress import Progress, StageHandle
from lab.release import api as release
from lab.release import (
    devloop,
    history,
    lock,
    pins,
    pipeline,
    records,
    routes,
    schema,
    scratch,
    signals,
)
from lab.release.prod import prune, read_routes
from lab.stack import project as stack
from lab.stack import services

BASELINE = "/cdlab/lessons/baseline/proxy-finished"  # the proxy's FinishedAt at the last reset
RESULTS = "/cdlab/lessons/results/"  # + lesson: what a lesson measured that no record keeps


def reset(state: Lab, progress: Progress) -> dict[str, str]:
    """Reset the lab (see the module); service -> the release live now. Once every service
    serves the checkout's commit, the rest runs under the deploy lock (a deploy running
    meanwhile: ``LockHeld``, naming it) and to its end: a signal waits, and is said after."""
    lab = Lab.of(state)
    root = lab.config.root
    sha = git.commit(root)
    first = git.short(sha)
    names = services.names(root)
    progress.plan(["live", "pool", "registry", "database", "records", "dev-clone", "baseline"])
    with progress.stage(f"the checkout's commit {first} live for every service", "live") as st:
        st.changed(", ".join(f"{n}: {_make_live(lab, n, first)}" for n in names))
    finishing = "the reset runs to its end first, then stops"
    with (
        signals.deferred(progress.say, finishing) as seen,
        lock.held(lab.etcd, "lab.reset") as held,
    ):
        with progress.stage("each pool: that release alone (no warm, no matched)", "pool") as st:
            st.changed(", ".join(f"{n}: {_alone(lab, n, first, held)}" for n in names))
        with progress.stage("registry: the other releases' tags deleted", "registry") as st:
            st.changed(", ".join(f"{n}: {_registry(lab, n, first)}" for n in names))
        with progress.stage("databases emptied (their schema kept)", "database") as st:
            emptied = ", ".join(filter(None, (_database(lab, n) for n in names)))
            st.changed(emptied or "no service has a database")
        with progress.stage("history: one reset record per service", "records") as st:
            st.changed(", ".join(f"{n}: {_records(lab, n, first)}" for n in names))
        with progress.stage("dev clone at the checkout's commit", "dev-clone") as st:
            _dev_clone(lab, sha, st)
        with progress.stage("the lessons' baseline", "baseline") as st:
            finished = _proxy(lab).attrs["State"].get("FinishedAt", "")
            lab.etcd.put(BASELINE, str(finished).encode())
            lab.etcd.delete_prefix(RESULTS)
            st.changed(f"the proxy's last stop: {finished}; the lessons' figures cleared")
    if seen:
        raise RunStopped(seen[0], "lab.reset", [], " The reset had run to its end first.")
    return {n: first for n in names}


def _dev_clone(lab: Lab, sha: str, st: StageHandle) -> None:
    now = devloop.clone_head(lab.config)
    dirty = _on_dev(lab, f"git -C {devloop.CLONE} status --porcelain")
    if now == sha and not dirty:
        st.unchanged(f"at {sha[:12]}")
        return
    kept = ""
    if dirty:  # a student's work in progress: stashed, never thrown away
        _on_dev(lab, f"git -C {devloop.CLONE} stash push -u -q -m 'cdlab lab.reset'")
        kept = "; its uncommitted work is in `git stash list` there"
    devloop.reset_clone(lab.config, sha)
    st.changed(f"at {sha[:12]} (was {now[:12] or '?'}; its commits stay in git's reflog{kept})")


def _on_dev(lab: Lab, script: str) -> str:
    dev = lab.config.container_name(lab.config.host("dev"))
    return shell.run(["docker", "exec", dev, "sh", "-c", script], timeout=60).output.strip()


def _make_live(lab: Lab, name: str, first: str) -> str:
    current = read_routes(lab, name)
    if current.match is not None:  # an A/B candidate: every request back on the live one
        pipeline.decide(lab, Progress(out=None), name, "abort")
        current = read_routes(lab, name)
    if current.live == first:
        return "live already"
    was = current.live or "nothing"
    known = first in {s.release for s in current.servers} or first in history.deployed(lab, name)
    if known and lab.registry.digest(f"{REPOSITORY}/{name}", first):
        pipeline.rollback(lab, Progress(out=None), name, to=first)
        return f"rolled back from {was}"
    pipeline.deploy(lab, Progress(out=None), name, "HEAD", bake=0)
    return f"deployed (was {was})"


def _alone(lab: Lab, name: str, first: str, held: lock.Holder) -> str:
    current = read_routes(lab, name)
    alone = routes.Routes(name, tuple(s for s in current.servers if s.release == first))
    if not alone.servers or alone.live != first:
        raise ReleaseError(f"{name}: {first} is not in the pool; run `invoke lab.reset` again")
    if alone != current:
        lab.etcd.put_json(alone.key, alone.to_doc(), held.fence)
    gone = release.retire(lab, name, {first})
    return f"{len(gone)} release(s) removed" if gone else "alone already"


def _registry(lab: Lab, name: str, first: str) -> str:
    for rel, owners in pins.parse(lab.etcd.get_prefix(f"{pins.PREFIX}{name}/"), name).items():
        if pins.USER in owners:
            pins.unpin(lab.etcd, name, rel)
    service = dataclasses.replace(services.load(lab.config.root, name), retain=1)
    done = prune(lab, service, [first])
    return f"{len(done.pruned)} deleted" if done.pruned else "nothing else there"


def _database(lab: Lab, name: str) -> str:
    if not services.load(lab.config.root, name).database:
        return ""
    emptied = scratch.empty_database(lab.engine("prod"), name)
    return f"{name}: {len(emptied)} table(s) emptied"


def _records(lab: Lab, name: str, first: str) -> str:
    """The reset record written first, then every other record of ``name`` deleted (but the
    last of each release a run pins: a test suite's put-back rolls back to it), here, in the
    route store and on cd: stopped halfway, a history is never left empty."""
    before = records.history(lab.runs, name, lab.etcd)
    known = schema.known(before)
    needs = known.needs.get(first)
    kept_schema = {k: v for k, v in (("needs", needs), ("left", known.now)) if v is not None}
    made = [r for r in before if r.release == first and r.result == "succeeded"]
    rec = records.Record(
        "reset",
        name,
        first,
        None,
        next((r.image for r in reversed(made) if r.image), ""),
        "reset",
        records.trigger(),
        records.now().isoformat(timespec="seconds"),
        0.0,
        "succeeded",
        schema=kept_schema,
        run=records.new_run_id(),
    )
    history.keep(lab, rec)
    pinned = pins.pinned(lab.etcd, name) - {first}
    last = {r.release: r for r in before if r.kind in history.MADE_LIVE and r.result == "succeeded"}
    keep = {rec.identity} | {last[p].identity for p in pinned if p in last}
    for path in lab.runs.glob("*.json"):
        with contextlib.suppress(ValueError, TypeError, OSError):
            found = records.Record(**json.loads(path.read_text()))
            if found.service == name and found.identity not in keep:
                path.unlink()
    for key, value in lab.etcd.get_prefix(f"{records.ETCD_PREFIX}{name}/").items():
        with contextlib.suppress(ValueError, TypeError):
            if records.Record(**json.loads(value)).identity in keep:
                continue
        lab.etcd.delete(key)
    cd = _clear_on_cd(lab, name, keep)
    return f"{len(before)} record(s) cleared{cd}"


def _clear_on_cd(lab: Lab, name: str, keep: set[tuple[str, ...]]) -> str:
    """cd's copies of ``name``'s records, but those in ``keep``, removed; "" when done, else
    what went wrong (said, not fatal: the route store's history is what runs read first)."""
    runs = sorted(ident[0] for ident in keep if len(ident) == 1)  # a file's name has its run
    pick = f'grep -l \'"service": "{name}"\' {records.CD_RUNS}/*.json 2>/dev/null'
    spare = (" | grep -v " + " ".join(f"-e '-{r}-'" for r in runs)) if runs else ""
    script = f"{pick}{spare} | xargs -r rm -f"
    cd = lab.config.container_name(lab.config.builder)
    try:
        done = subprocess.run(
            ["docker", "exec", cd, "sh", "-c", script], timeout=30, check=False, capture_output=True
        )
    except (subprocess.SubprocessError, OSError) as exc:
        return f" (cd's copies stay: {exc})"
    return f" (cd's copies stay: exit {done.returncode})" if done.returncode else ""


def _proxy(lab: Lab) -> Any:
    return lab.engine("prod").containers.get(f"{stack.PROJECT}_proxy_1")
