"""The schema migrations' own code (run inside the image build): the database they refuse to
guess, and the revision chain as Alembic reads it."""

from __future__ import annotations

from pathlib import Path

import pytest
from app.settings import migration_url, redact

SERVICE = Path(__file__).resolve().parents[2]


def test_the_migrations_take_the_releases_database_url() -> None:
    url = "postgresql://app:s3cret@db:5432/app"
    assert migration_url({"DATABASE_URL": url}) == url
    assert migration_url({"DATABASE_URL": " postgresql+psycopg2://a@h/d\n"}) == (
        "postgresql+psycopg2://a@h/d"
    )


@pytest.mark.parametrize("env", [{}, {"DATABASE_URL": ""}, {"DATABASE_URL": "  "}])
def test_a_missing_database_url_is_refused_with_the_expected_form(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="DATABASE_URL is not set") as err:
        migration_url(env)
    assert "postgresql://USER:PASSWORD@HOST:PORT/DATABASE" in str(err.value)


@pytest.mark.parametrize(
    "url", ["memory://", "postgres://app:s3cret@db/app", "sqlite:///x.db", "db:5432/app"]
)
def test_a_database_url_that_is_not_postgresql_is_refused_without_its_password(url: str) -> None:
    with pytest.raises(ValueError, match="is not a PostgreSQL URL: expected postgresql://") as err:
        migration_url({"DATABASE_URL": url})
    assert "s3cret" not in str(err.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/app", "postgresql://app:***@db:5432/app"),
        ("postgres://app:p@ss@w:rd@db/app", "postgres://app:***@db/app"),
        ("postgresql://app@db/app", "postgresql://app@db/app"),
        ("memory://", "memory://"),
        ("not a url", "not a url"),
    ],
)
def test_redact_hides_only_the_password(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_the_revisions_form_one_line_from_the_baseline() -> None:
    """One head and one base, each revision's parent the one before it: a branch (two
    revisions with the same parent) would make ``alembic upgrade head`` refuse in the pipeline."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(Config(str(SERVICE / "alembic.ini")))
    chain = list(scripts.walk_revisions())  # head first
    assert len(scripts.get_heads()) == 1 and len(scripts.get_bases()) == 1
    assert [r.down_revision for r in chain] == [r.revision for r in chain[1:]] + [None]
    assert chain[-1].revision == "0001_users"
