"""The demo app's schema change (``services/app/schema-change/``): each patch applies with
``git am`` to the app as it is in this tree, in the order a trainer replays it, and the app's
Alembic revisions form one line (each revision's ``down_revision`` the one before it) before and
after. No database: the revisions are read as source, the patches applied in a scratch repo."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = Path("services", "app")
PATCHES = ROOT / APP / "schema-change"
STEPS = (
    ("1-expand.patch", ["0001_users", "0002_display_name"]),
    ("2-read-new.patch", ["0001_users", "0002_display_name"]),
    ("3-contract.patch", ["0001_users", "0002_display_name", "0003_drop_name"]),
)
CONTROL = ("one-step-rename.patch", ["0001_users", "0002_rename_name"])
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,  # neither the user's hooks, signing nor templates
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "cdlab test",
    "GIT_AUTHOR_EMAIL": "test@cdlab.invalid",
    "GIT_COMMITTER_NAME": "cdlab test",
    "GIT_COMMITTER_EMAIL": "test@cdlab.invalid",
}


def revisions(versions: Path) -> dict[str, str | None]:
    """``revision -> down_revision`` of every revision file, read from its module-level
    assignments (as Alembic reads them, without importing Alembic)."""
    found: dict[str, str | None] = {}
    for path in sorted(versions.glob("*.py")):
        values = {}
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                values[node.targets[0].id] = node.value
        rev, down = (ast.literal_eval(values[k]) for k in ("revision", "down_revision"))
        assert isinstance(rev, str) and rev not in found, f"{path}: revision {rev!r} again"
        assert down is None or isinstance(down, str), f"{path}: down_revision {down!r}"
        found[rev] = down
    return found


def line_of(versions: Path) -> list[str]:
    """The revisions from the base to the head; fails unless they form one line."""
    __tracebackhide__ = True
    parents = revisions(versions)
    children: dict[str | None, list[str]] = {}
    for rev, down in parents.items():
        children.setdefault(down, []).append(rev)
    chain, at = [], None
    while at in children:
        nexts = children.pop(at)
        assert len(nexts) == 1, f"{versions}: {nexts} all revise {at!r} (a branch)"
        at = nexts[0]
        chain.append(at)
    assert not children, f"{versions}: revisions off the line from the base: {children}"
    return chain


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
        check=False,
    )


@pytest.fixture
def scratch(tmp_path: Path) -> Callable[[str], Path]:
    """A git repository holding this tree's ``services/app`` in one commit; the function it
    returns applies a patch of ``schema-change/`` with ``git am`` and gives the app's folder."""
    shutil.copytree(
        ROOT / APP, tmp_path / APP, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache")
    )
    for args in (("init", "-q"), ("add", "-A"), ("commit", "-q", "-m", "the app as in the tree")):
        assert git(tmp_path, *args).returncode == 0, f"git {args[0]} failed in {tmp_path}"

    def am(name: str) -> Path:
        __tracebackhide__ = True
        result = git(tmp_path, "am", "--quiet", str(PATCHES / name))
        if result.returncode != 0:
            pytest.fail(
                f"'git am {name}' does not apply to services/app as it is in this tree "
                f"(exit {result.returncode}): {(result.stdout + result.stderr).strip()[-800:]}\n"
                "Replay the patches in a scratch clone, resolve, and make them again with "
                "'git format-patch' (services/app/schema-change/README.md).",
                pytrace=False,
            )
        return tmp_path / APP

    return am


def compiles(app: Path) -> None:
    __tracebackhide__ = True
    for path in app.rglob("*.py"):
        compile(path.read_text(), str(path), "exec", dont_inherit=True)


def test_the_baseline_is_one_revision() -> None:
    assert line_of(ROOT / APP / "migrations" / "versions") == ["0001_users"]


def test_the_three_steps_apply_in_order_and_keep_one_line(
    scratch: Callable[[str], Path],
) -> None:
    for name, chain in STEPS:
        app = scratch(name)
        assert line_of(app / "migrations" / "versions") == chain, f"after {name}"
        compiles(app)


def test_the_negative_control_applies_alone_on_the_baseline(
    scratch: Callable[[str], Path],
) -> None:
    name, chain = CONTROL
    app = scratch(name)
    assert line_of(app / "migrations" / "versions") == chain
    compiles(app)


def test_every_patch_of_the_folder_is_replayed_here() -> None:
    assert sorted(p.name for p in PATCHES.glob("*.patch")) == sorted(
        [name for name, _ in STEPS] + [CONTROL[0]]
    )


def test_a_branch_in_the_revisions_is_found(tmp_path: Path) -> None:
    for rev, down in (("0001_a", None), ("0002_b", "0001_a"), ("0002_c", "0001_a")):
        (tmp_path / f"{rev}.py").write_text(f"revision = {rev!r}\ndown_revision = {down!r}\n")
    with pytest.raises(AssertionError, match="a branch"):
        line_of(tmp_path)
