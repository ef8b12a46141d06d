"""What a stack run would change on prod, and what a deploy may change (lab.stack.changes),
from facts: the file's services, their images, Compose's configuration hashes, the containers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lab.stack import changes, converge

C = changes.Change
ORDER = ["etcd", "db", "proxy"]
REG = "10.100.200.200:5000/cdlab"
IMAGES = {s: f"{REG}/{s}@sha256:{s[0] * 64}" for s in ORDER}
HASHES = {s: s[0] * 64 for s in ORDER}


def found(service: str, image: str = "", hash_: str = "", running: bool = True) -> changes.Found:
    return changes.Found(
        service,
        f"cdlab-stack_{service}_1",
        image or IMAGES[service],
        hash_ or HASHES[service],
        running,
    )


CURRENT = [found(s) for s in ORDER]


@pytest.mark.parametrize(
    ("containers", "expected"),
    [
        # every container current: nothing
        (CURRENT, []),
        # a fresh prod: everything created
        ([], [C(s, "create", "no container") for s in ORDER]),
        # a new proxy image: only the proxy, with the image named
        (
            [*CURRENT[:2], found("proxy", f"{REG}/proxy@sha256:{'9' * 64}", "x" * 64)],
            [C("proxy", "recreate", f"image proxy@sha256:{'9' * 12} -> proxy@sha256:{'p' * 12}")],
        ),
        # the file or a variable changed for db (same image): its configuration
        (
            [CURRENT[0], found("db", hash_="y" * 64), CURRENT[2]],
            [C("db", "recreate", "its configuration changed (compose/stack.yml or its variables)")],
        ),
        # a stopped container is started, a missing one created, an orphan removed
        (
            [found("etcd", running=False), CURRENT[2], found("old", "x", "o" * 64)],
            [
                C("etcd", "start", "stopped"),
                C("db", "create", "no container"),
                C("old", "remove", "cdlab-stack_old_1 is not in compose/stack.yml"),
            ],
        ),
    ],
)
def test_plan(containers: list[changes.Found], expected: list[changes.Change]) -> None:
    assert list(changes.plan(ORDER, IMAGES, HASHES, containers)) == expected


@pytest.mark.parametrize(
    ("containers", "expected"),
    [
        (CURRENT, []),
        # whatever changed in a container (image, configuration), a deploy leaves it
        ([found("etcd", "other", "z" * 64), *CURRENT[1:]], []),
        (CURRENT[:2], [C("proxy", "create", "no container")]),
        ([found("db", running=False), *CURRENT[::2]], [C("db", "start", "stopped")]),
    ],
)
def test_a_deploy_only_creates_what_is_missing(
    containers: list[changes.Found], expected: list[changes.Change]
) -> None:
    assert list(changes.missing(ORDER, containers)) == expected


@pytest.mark.parametrize(
    ("todo", "args"),
    [
        ([], []),
        (
            [C("proxy", "create", ""), C("etcd", "start", "")],
            ["up", "-d", "--no-build", "--no-deps", "--no-recreate", "etcd", "proxy"],
        ),
        ([C("db", "recreate", "")], ["up", "-d", "--no-build", "--no-deps", "db"]),
        (
            [C("old", "remove", "")],
            ["up", "-d", "--no-build", "--no-deps", "--no-recreate", "--remove-orphans"],
        ),
    ],
)
def test_compose_is_asked_for_exactly_the_changes(
    todo: list[changes.Change], args: list[str]
) -> None:
    assert changes.up_args(todo, ORDER) == args


def test_compose_hashes_are_read_and_its_warnings_skipped() -> None:
    out = (
        "WARNING: Some networks were defined but are not used by any service: x\n"
        f"etcd {'a' * 64}\ndb {'b' * 64}\ngraphite-web {'c' * 64}\n"
    )
    assert changes.parse_hashes(out) == {"etcd": "a" * 64, "db": "b" * 64, "graphite-web": "c" * 64}


def test_what_a_run_will_do_is_said_in_one_line() -> None:
    assert changes.describe([], 5).startswith("nothing to change: 5 container(s)")
    said = changes.describe(
        [C("proxy", "recreate", "image a -> b"), C("db", "create", "no container")], 4
    )
    assert said == "recreate proxy (image a -> b); create db (no container)"
    assert changes.short(f"{REG}/proxy@sha256:{'0' * 64}") == f"proxy@sha256:{'0' * 12}"


def test_the_services_of_a_commit_are_read_from_the_commit(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    for name, port in (("web", 8003), ("api", 8004)):
        folder = tmp_path / "services" / name
        folder.mkdir(parents=True)
        (folder / "Dockerfile").write_text("FROM x\n")
        (folder / "service.toml").write_text(f'name = "{name}"\nport = 80\npublic_port = {port}\n')
    (tmp_path / "services" / "etcd").mkdir()
    (tmp_path / "services" / "etcd" / "Dockerfile").write_text("FROM x\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "two services")
    (tmp_path / "services" / "web" / "service.toml").write_text('name = "web"\nport = 1\n')
    sha = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    got = converge.committed(tmp_path, sha)
    assert [(s.name, s.public_port, s.port) for s in got] == [("api", 8004, 80), ("web", 8003, 80)]
