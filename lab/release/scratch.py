"""Schema work on prod's engine: a release's ``[migrate]`` commands in one-off containers, and
the scratch check that comes before a migration touches prod's database.

The scratch check: a copy of the database (same server, ``pg_dump`` into a new database) is
migrated the way prod's would be, then the release that must keep working (the live one: it
stays warm as the rollback target) is started on the copy, in a container of its own beside
the releases (not in any pool), and its integration tests run against that container. The copy
and the container are removed whatever happens, and any left by an interrupted run are removed
before the next check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from lab.errors import MigrationFailed, ReleaseError, tail
from lab.estate.state import State
from lab.release import containers, schema
from lab.release.model import Candidate
from lab.stack import project as stack

SCRATCH = "cdlab_scratch"  # the copy's name: one check at a time (under the deploy lock)
ROLE = "schema-check"  # label cdlab.role of the scratch release's container


def run(state: State, client: Any, c: Candidate, command: str, database: str = "") -> str:
    """``command`` (one of the manifest's ``[migrate]``) in a one-off container of ``c``'s
    image against ``database`` (default: the service's own); its output. ``ReleaseError``
    with its last lines on failure."""
    database = database or c.service.name
    env = {
        **containers.one_off_env(state, c),
        "DATABASE_URL": containers.database_url(state, database),
    }
    code, output = containers.one_off(
        client, c.image, command, env, "migrate", of=c.project, limits=c.service.limits
    )
    if code != 0:
        raise ReleaseError(
            f"'{command}' of {c.project} failed on database {database} (exit {code}): "
            f"{schema.cause(output)}\n{tail(output, 15)}",
            c.service.name,
            c.release,
        )
    return output


def version(state: State, client: Any, c: Candidate, database: str = "") -> str:
    """The database's version, as ``c``'s ``current`` command prints it."""
    assert c.service.migration is not None
    return schema.version(run(state, client, c, c.service.migration.current, database))


HEAD_MARK = "--cdlab-head--"  # between the two commands' outputs in ``state_of``


def state_of(state: State, client: Any, c: Candidate) -> tuple[str, str]:
    """(the database's version, the version ``c``'s code needs): its ``current`` and ``head``
    commands in one container (each container costs most of a second)."""
    m = c.service.migration
    assert m is not None
    out = run(state, client, c, f"{m.current} && echo {HEAD_MARK} && {m.head}")
    now, _, needs = out.partition(HEAD_MARK)
    return schema.version(now), schema.version(needs)


def _psql(client: Any, script: str) -> str:
    """A shell script in prod's database container, as its superuser; its output."""
    db = client.containers.get(f"{stack.PROJECT}_db_1")
    code, out = db.exec_run(["sh", "-c", f"set -e; {script}"], user="postgres")
    text = out.decode(errors="replace") if isinstance(out, bytes) else str(out)
    if code != 0:
        raise ReleaseError(f"prod's database container: '{script}' failed (exit {code}): {text}")
    return text


def _drop(client: Any, name: str = SCRATCH) -> None:
    _psql(client, f"dropdb -h /tmp -U postgres --if-exists --force {name}")


def ensure_database(client: Any, name: str) -> bool:
    """Database ``name`` (a service's own) on prod's PostgreSQL, owned by the services' role;
    True when it was created now."""
    found = _psql(
        client,
        f"psql -h /tmp -U postgres -tAc \"SELECT 1 FROM pg_database WHERE datname = '{name}'\"",
    )
    if found.strip() == "1":
        return False
    _psql(client, f"createdb -h /tmp -U postgres -O app {name}")
    return True


def empty_database(client: Any, name: str) -> list[str]:
    """Every table of database ``name`` emptied, its identities restarted, but the migration
    tool's own (``alembic_version``: the schema stays as it is); the tables emptied."""
    listed = _psql(
        client,
        f'psql -h /tmp -U postgres -d {name} -tAc "SELECT tablename FROM pg_tables WHERE '
        "schemaname = 'public' AND tablename <> 'alembic_version' ORDER BY 1\"",
    )
    tables = [t for t in listed.split() if t.replace("_", "").isalnum()]
    if tables:
        quoted = ", ".join(f'"{t}"' for t in tables)
        sql = f"TRUNCATE {quoted} RESTART IDENTITY CASCADE"
        _psql(client, f"psql -h /tmp -U postgres -d {name} -q -v ON_ERROR_STOP=1 -c '{sql}'")
    return tables


def drop_database(client: Any, name: str) -> None:
    """Database ``name`` gone (a removed service's; its connections ended)."""
    _drop(client, name)


@contextlib.contextmanager
def scratch_copy(client: Any, source: str) -> Iterator[str]:
    """A copy of database ``source``, dropped afterwards; its name."""
    _drop(client)  # one an interrupted run left
    _psql(
        client,
        f"createdb -h /tmp -U postgres -O app {SCRATCH} && "
        f"pg_dump -h /tmp -U postgres {source} | "
        f"psql -h /tmp -U postgres -q -v ON_ERROR_STOP=1 -d {SCRATCH} >/dev/null",
    )
    try:
        yield SCRATCH
    finally:
        with contextlib.suppress(Exception):  # never hides why the check ended
            _drop(client)


def _name(c: Candidate) -> str:
    return f"{c.project}-{ROLE}"


def remove_leftovers(client: Any) -> None:
    """Scratch releases an interrupted check left (by their label)."""
    import docker.errors

    for ctr in client.containers.list(all=True, filters={"label": f"cdlab.role={ROLE}"}):
        with contextlib.suppress(docker.errors.NotFound):
            ctr.remove(force=True)


@contextlib.contextmanager
def scratch_release(state: State, client: Any, c: Candidate, database: str) -> Iterator[str]:
    """``c`` running on ``database`` in a container of its own (its host name), healthy;
    removed afterwards. Hardened as a release is, but in no pool and never restarted."""
    spec = containers.container_spec(state, c)
    spec.update(
        name=_name(c),
        labels={"cdlab.role": ROLE, containers.ONE_OFF: c.project},
        restart_policy={"Name": "no"},
        environment={
            **spec["environment"],
            "DATABASE_URL": containers.database_url(state, database),
        },
    )
    remove_leftovers(client)
    ctr = client.containers.run(**spec)
    try:
        containers.wait_probe(
            ctr, c.service.probe, c.service.health_timeout, _name(c), c.service.limits
        )
        yield _name(c)
    finally:
        with contextlib.suppress(Exception):
            ctr.remove(force=True)


def check(
    state: State,
    client: Any,
    migrator: Candidate,
    command: str,
    keep_working: Sequence[Candidate],
) -> str:
    """A scratch copy migrated by ``command`` in ``migrator``'s image, then each release of
    ``keep_working`` in turn started on it and its integration tests (its ``test_image``) run
    against it; what they said. ``MigrationFailed`` when the migration fails on the copy,
    ``ReleaseError`` naming the release when its tests do (prod's database untouched)."""
    assert migrator.service.migration is not None
    current = migrator.service.migration.current
    with scratch_copy(client, migrator.service.name) as copy:
        try:  # the migration and the version it leaves, in one container
            out = run(state, client, migrator, f"{command} && echo {HEAD_MARK} && {current}", copy)
        except ReleaseError as exc:
            raise MigrationFailed(str(exc), migrator.service.name, migrator.release) from exc
        at = schema.shown(schema.version(out.partition(HEAD_MARK)[2]))
        said = []
        for c in keep_working:
            with scratch_release(state, client, c, copy) as host:
                try:
                    tests = containers.integration_tests(state, client, c, c.test_image, host=host)
                except ReleaseError as exc:
                    raise ReleaseError(str(exc), c.service.name, c.release) from exc
            said.append(f"{c.release}: {tests}" if len(keep_working) > 1 else tests)
    return f"{'; '.join(said)} (scratch copy at {at})"
