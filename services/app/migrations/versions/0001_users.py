"""The users table, as releases before the migrations created it at start.

Revision ID: 0001_users
Revises:
Create Date: 2026-12-01

IF NOT EXISTS: a database whose table an older release created is adopted as it is, and the
advisory lock is the one those releases took around their CREATE TABLE, so one of them starting
at the same moment waits instead of failing on a half-created table.

Self-contained: a revision never imports the app, whose code moves on while this stays as it ran.
"""

from alembic import op

revision = "0001_users"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SELECT pg_advisory_xact_lock(7411)")
    op.execute(
        """
        CREATE TABLE IF NOT EXISTS users (
            id BIGSERIAL PRIMARY KEY,
            name TEXT NOT NULL,
            email TEXT NOT NULL UNIQUE,
            release TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE users")
