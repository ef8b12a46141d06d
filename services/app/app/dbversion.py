"""``python3 -m app.dbversion``: the database's schema version, read from Alembic's own table.

``alembic current`` needs the revision to be one of this image's migrations, so an older release
cannot tell that a newer one moved the schema on (it exits 255); this reads the table directly
and works whatever the version is. Prints the version (nothing when the database has none yet);
exits 1 with one line on stderr when the database cannot be read.
"""

from __future__ import annotations

import os
import sys

from app.settings import migration_url, redact


def main() -> int:
    import psycopg2
    import psycopg2.errors

    try:
        url = migration_url(os.environ)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 1
    try:
        with (
            psycopg2.connect(
                url.replace("postgresql+psycopg2://", "postgresql://"), connect_timeout=5
            ) as conn,
            conn.cursor() as cur,
        ):
            try:
                cur.execute("SELECT version_num FROM alembic_version")
            except psycopg2.errors.UndefinedTable:
                return 0  # no migration ran yet
            for (version,) in cur.fetchall():
                print(version)
    except psycopg2.Error as error:
        print(
            f"could not read the schema version from {redact(url)}: {error}".strip(),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
