"""cd's side of a push (``lab.release.ci``): which services a push deploys, one failed deploy
(a full disk) does not stop the next, a runner that cannot write its folders deploys nothing,
and bad usage is refused. The pipeline and git are stood in for; the rest is the real module."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lab import config
from lab.release import ci

ROOT = Path(__file__).resolve().parents[2]


def test_a_push_deploys_the_services_whose_folder_changed() -> None:
    names = ["app", "quotes", "web"]
    assert ci.to_deploy(names, None) == names  # a first push: all of them
    assert ci.to_deploy(names, ["services/quotes/app.py", "README.md"]) == ["quotes"]
    assert ci.to_deploy(names, ["services/appx/main.py", "lab/ci.py"]) == []  # no prefix match


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """ci.main on a lab under tmp_path with two services changed; returns the deploys tried."""
    topology = json.loads(config.TOPOLOGY.read_text())
    cfg = config.parse_topology(topology, ROOT, tmp_path / "lab")
    monkeypatch.setattr(ci.config, "load", lambda _root=None: cfg)
    monkeypatch.setattr(ci.services, "names", lambda _root: ["app", "quotes"])
    monkeypatch.setattr(ci.git, "changed_paths", lambda *_a: None)
    monkeypatch.delenv("CDLAB_CHECKOUT", raising=False)
    # ci.main points CDLAB_PUBLIC_HOST at prod when unset: set here, it is put back after
    monkeypatch.setenv("CDLAB_PUBLIC_HOST", "127.0.0.1")
    tried: list[str] = []

    def deploy(state: Any, progress: Any, name: str, ref: str) -> Any:
        tried.append(name)
        if name == "app":
            raise OSError(errno.ENOSPC, "No space left on device", "/work/app/build.tar")
        return SimpleNamespace(release=ref[:12], previous="aaaaaaaaaaaa", seconds=12.5)

    monkeypatch.setattr(ci.pipeline, "deploy", deploy)
    return tried


def test_a_deploy_that_fails_on_a_full_disk_says_so_and_the_next_service_still_deploys(
    runner: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert ci.main(["0" * 40, "b" * 40]) == 1
    out = capsys.readouterr().out
    assert runner == ["app", "quotes"]
    assert "deploy of app bbbbbbbbbbbb failed" in out and "is full" in out and "df -h" in out
    assert "quotes bbbbbbbbbbbb is live (was aaaaaaaaaaaa) in 12.5 s" in out


def test_a_runner_that_cannot_make_its_folders_deploys_nothing(
    runner: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(self: Path, *_a: Any, **_k: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    assert ci.main(["0" * 40, "b" * 40]) == 1
    out = capsys.readouterr().out
    assert out.startswith("cdlab: nothing deployed:") and "is full" in out
    assert runner == []


def test_no_change_deploys_nothing_and_succeeds(
    runner: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ci.git, "changed_paths", lambda *_a: ["docs/x.md"])
    assert ci.main(["a" * 40, "b" * 40]) == 0
    assert "no service changed" in capsys.readouterr().out and runner == []


@pytest.mark.parametrize("argv", [[], ["a" * 40], ["a", "b", "c"]])
def test_bad_usage_is_refused_with_the_usage_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert ci.main(argv) == 2
    assert "usage: python3 -m lab.release.ci OLD_SHA NEW_SHA" in capsys.readouterr().err
