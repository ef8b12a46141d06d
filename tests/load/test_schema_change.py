"""A schema change without downtime, proven under load: the demo app's expand / migrate reads /
contract commits (``services/app/schema-change/``), each migration checked on a scratch copy
with the live release before it runs; the same change in one step refused, and, forced, seen to
break what the check said it would; a failing migration changing nothing.

The app is deployed here as a service of its own, ``people`` (a copy of ``services/app`` in a
clone, with its own database and public port), so the lab's ``app`` and its database are never
touched; the service and its database are removed at the end.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.build import git
from lab.errors import MigrationFailed, ReleaseError, SchemaRefused
from lab.estate.state import State
from lab.ports import engines
from lab.progress import Progress
from lab.proof import load, loadreport
from lab.release import api as release
from lab.release import pipeline, records, scratch
from lab.stack import project as stack
from lab.stack import services
from tests import conftest

pytestmark = pytest.mark.xdist_group("prod")
NAME, PORT = "people", 8004
URL = f"http://127.0.0.1:{PORT}"
RATE = 300
PATCHES = Path(__file__).resolve().parents[2] / "services" / "app" / "schema-change"
TIMINGS = load.REPORTS / "schema-change.timings.json"


@dataclass(frozen=True)
class Chain:
    state: State  # the clone's lab
    base: str  # people as the app is today
    expand: str
    reads: str  # migrate reads
    contract: str
    rename: str  # the one-step rename, on top of base
    broken: str  # an expand migration with a SQL syntax error, on top of base


def git_(clone: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(clone), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def am(clone: Path, patch: str) -> str:
    """``patch`` (written for services/app) applied as a commit to services/people."""
    git_(clone, "am", "-q", "-p3", f"--directory=services/{NAME}", str(PATCHES / patch))
    return git.short(git_(clone, "rev-parse", "HEAD"))


@pytest.fixture(scope="module")
def chain(lab: State, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    clone = tmp_path_factory.mktemp("schema") / "clone"
    subprocess.run(["git", "clone", "-q", "--shared", str(lab.config.root), str(clone)], check=True)
    git_(clone, "config", "user.name", "cdlab-tests")
    git_(clone, "config", "user.email", "cdlab-tests@lab.invalid")
    shutil.copytree(clone / "services/app", clone / f"services/{NAME}")
    manifest = clone / f"services/{NAME}/service.toml"
    text = manifest.read_text().replace('name = "app"', f'name = "{NAME}"')
    manifest.write_text(text.replace("public_port = 8000", f"public_port = {PORT}"))
    git_(clone, "add", "-A")
    base = git.short(git.commit_all(clone, f"add {NAME}, a copy of app", author="cdlab-tests"))
    expand, reads, contract = (am(clone, p) for p in PATCHES_IN_ORDER)
    git_(clone, "checkout", "-q", "-b", "rename", base)
    rename = am(clone, "one-step-rename.patch")
    git_(clone, "checkout", "-q", "-b", "broken", base)
    versions = clone / f"services/{NAME}/migrations/versions"
    first = next(
        p for p in versions.glob("*.py") if re.search(r"^down_revision.*None", p.read_text(), re.M)
    )
    rev = re.search(r'^revision[^=]*=\s*"([^"]+)"', first.read_text(), re.M)
    assert rev is not None, f"no revision id in {first}"
    (versions / "0002_broken.py").write_text(BROKEN.replace("{rev}", rev.group(1)))
    git_(clone, "add", "-A")
    broken = git.short(
        git.commit_all(clone, "a migration with a SQL syntax error", author="cdlab-tests")
    )
    state = lab.at(clone)
    svc = services.load(clone, NAME)
    for sha in (base, expand, reads, contract, rename, broken):
        pipeline.build(state, Progress(out=None), svc, sha)
    try:
        yield Chain(state, base, expand, reads, contract, rename, broken)
    finally:
        remove_service(lab)


PATCHES_IN_ORDER = ("1-expand.patch", "2-read-new.patch", "3-contract.patch")
BROKEN = '''"""Broken on purpose: its second statement is not SQL (a typo)."""

from alembic import op

revision = "0002_broken"
down_revision = "{rev}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE users ADD COLUMN nickname TEXT")
    op.execute("ALTER TABEL users ADD COLUMN oops TEXT")


def downgrade() -> None:
    op.execute("ALTER TABLE users DROP COLUMN nickname")
'''


def remove_service(lab: State) -> None:
    """people gone from prod, its database too."""
    conftest.remove_service(lab, NAME)
    with engines.connect(lab, lab.config.host("prod")) as prod:
        scratch.drop_database(prod, NAME)


def sql(lab: State, query: str) -> str:
    """``query`` on the people database, as its superuser; the rows, unaligned."""
    with engines.connect(lab, lab.config.host("prod")) as prod:
        db = prod.containers.get(f"{stack.PROJECT}_db_1")
        code, out = db.exec_run(
            ["psql", "-h", "/tmp", "-U", "postgres", "-d", NAME, "-tAc", query], user="postgres"
        )
    text = out.decode(errors="replace").strip()
    assert code == 0, f"{query}: {text}"
    return text


def columns(lab: State) -> set[str]:
    return set(
        sql(
            lab, "SELECT column_name FROM information_schema.columns WHERE table_name = 'users'"
        ).split()
    )


def version(lab: State) -> str:
    """The database's version ("" before any migration ran)."""
    if sql(lab, "SELECT to_regclass('alembic_version') IS NOT NULL") != "t":
        return ""
    return sql(lab, "SELECT version_num FROM alembic_version")


def deploy(state: State, sha: str, **kw: object) -> records.Record:
    return pipeline.deploy(state, Progress(out=None), NAME, sha, bake=0, **kw)  # type: ignore[arg-type]


def stages(rec: records.Record) -> dict[str, float]:
    return {s["key"]: round(s["seconds"], 3) for s in rec.stages}


def test_a_failing_migration_changes_nothing_and_the_record_names_its_stage(
    lab: State, chain: Chain
) -> None:
    """It fails on the scratch copy, before prod's database is touched (failing on prod's own,
    transactional, it changes nothing either: tests/unit/test_release_schema.py)."""
    first = deploy(chain.state, chain.base)
    assert first.result == "succeeded" and first.schema["left"] == version(lab) != ""
    before = version(lab)
    with pytest.raises(MigrationFailed, match="fails on a scratch copy of the database") as err:
        deploy(chain.state, chain.broken)
    assert 'syntax error at or near "TABEL"' in str(err.value)
    rec = records.history(lab.runs, NAME)[-1]
    assert "TABEL" in rec.error  # the cause, in the record's one line
    assert (rec.release, rec.result, rec.failed_stage) == (chain.broken, "failed", "schema-check")
    assert version(lab) == before and "nickname" not in columns(lab)
    assert release.current_routes(lab, NAME).live == chain.base


def test_expand_migrate_reads_contract_under_load_lose_nothing(lab: State, chain: Chain) -> None:
    assert release.current_routes(lab, NAME).live == chain.base
    timings: dict[str, dict[str, float]] = {}
    with load.running(rate=RATE, name="schema-change", url=URL) as traffic:
        time.sleep(1)
        with traffic.operation(f"deploy {chain.expand} (expand)", target=chain.expand):
            rec = deploy(chain.state, chain.expand)
        timings["expand"] = stages(rec)
        assert rec.schema["checked"] == chain.base, rec.schema
        with traffic.operation(f"rollback to {chain.base}", target=chain.base):
            back, seconds = pipeline.rollback(chain.state, Progress(out=None), NAME)
        assert back.release == chain.base and seconds <= 1.0
        with traffic.operation(f"deploy {chain.expand} again", target=chain.expand):
            deploy(chain.state, chain.expand)
        with traffic.operation(f"deploy {chain.reads} (migrate reads)", target=chain.reads):
            timings["migrate reads"] = stages(deploy(chain.state, chain.reads))
        both = sql(
            lab,
            "SELECT count(*) FROM users WHERE name IS NULL OR display_name IS NULL "
            "OR name <> display_name",
        )
        assert both == "0", f"{both} rows miss one of the two shapes before the contract"
        with traffic.operation(f"deploy {chain.contract} (contract)", target=chain.contract):
            rec = deploy(chain.state, chain.contract)
        timings["contract"] = stages(rec)
        assert rec.schema["checked"] == chain.reads, rec.schema
        assert "name" not in columns(lab) and "display_name" in columns(lab)
        empty = sql(lab, "SELECT count(*) FROM users WHERE display_name IS NULL")
        assert empty == "0", f"{empty} rows without a display_name after the contract"
        # the expand release reads the column the contract dropped: no rollback to it ...
        with pytest.raises(ReleaseError, match=f"rollback of {NAME} to {chain.expand} refused"):
            pipeline.rollback(chain.state, Progress(out=None), NAME, to=chain.expand)
        # ... unless the database goes back down first, checked on a scratch copy
        with traffic.operation(f"rollback to {chain.expand} --migrate-down", target=chain.expand):
            down, _ = pipeline.rollback(
                chain.state, Progress(out=None), NAME, to=chain.expand, migrate_down=True
            )
        timings["rollback --migrate-down"] = stages(down)
        assert down.schema["left"] == version(lab) == down.schema["needs"], down.schema
        time.sleep(1)
        traffic.mark("end")
    s = traffic.summary()
    lost = load.readback(traffic, URL)
    problems = traffic.release_problems(chain.base)
    loadreport.write(traffic, load.REPORTS, {"lost": len(lost), "release_problems": problems})
    TIMINGS.write_text(json.dumps(timings, indent=2) + "\n")
    assert traffic.problems() == [], traffic.problems()  # the oracle saw every request
    assert traffic.rate_problem() is None, traffic.rate_problem()
    assert s["failed"] == 0, f"{s['failed']} failed requests: {s['errors']}"
    assert s["by_kind"].get("write", 0) > 0
    assert problems == [], problems[:5]
    assert lost == [], f"{len(lost)} registrations answered 201 cannot be read back"
    both = sql(
        lab,
        "SELECT count(*) FROM users WHERE name IS NULL OR display_name IS NULL "
        "OR name <> display_name",
    )
    assert both == "0", f"{both} rows miss one of the two shapes after the way back down"
    registered = int(sql(lab, "SELECT count(*) FROM users"))
    assert registered >= len(traffic.registered()) > 0


def test_the_one_step_rename_is_refused_and_forced_breaks_what_it_said(
    lab: State, chain: Chain
) -> None:
    """On a fresh database: base live, then the rename in one migration."""
    remove_service(lab)
    assert deploy(chain.state, chain.base).result == "succeeded"
    before = version(lab)
    with pytest.raises(SchemaRefused) as err:
        deploy(chain.state, chain.rename)
    text = str(err.value)
    assert f"would break the live release {chain.base}" in text and "expand first" in text
    assert version(lab) == before and "name" in columns(lab)
    assert release.current_routes(lab, NAME).live == chain.base
    with load.running(rate=RATE, name="schema-forced", url=URL) as traffic:
        time.sleep(2)
        with traffic.operation(f"deploy {chain.rename} --force", target=chain.rename):
            rec = deploy(chain.state, chain.rename, force=True)
        time.sleep(1)
        traffic.mark("end")
    s = traffic.summary()
    loadreport.write(traffic, load.REPORTS, {"forced": True})
    assert rec.result == "succeeded" and rec.schema.get("forced") == chain.base
    assert s["failed"] > 0, "the forced rename broke nothing: the scratch check was wrong"
    with pytest.raises(ReleaseError, match=f"rollback of {NAME} to {chain.base} refused"):
        pipeline.rollback(chain.state, Progress(out=None), NAME)
    assert release.current_routes(lab, NAME).live == chain.rename
