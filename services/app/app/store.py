"""Users in PostgreSQL: a small repository with a per-process connection pool.

The schema is the migrations' (``migrations/versions/``), applied by the pipeline before a
release starts: the app neither creates nor changes a table."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class User:
    id: int
    name: str
    email: str
    release: str  # the release that registered the user
    created_at: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "release": self.release,
            "created_at": self.created_at,
        }


class DuplicateEmail(Exception):
    pass


class Store(Protocol):
    def ping(self) -> None: ...
    def add(self, name: str, email: str, release: str) -> User: ...
    def get(self, user_id: int) -> User | None: ...
    def get_by_email(self, email: str) -> User | None: ...
    def list(self, limit: int) -> list[User]: ...


class MemoryStore:
    """Users in this process's memory: for the self-contained test mode (``memory://``) only.

    Nothing survives a restart and nothing is shared between processes: run one worker.
    """

    def __init__(self) -> None:
        self._users: list[User] = []
        self._lock = threading.Lock()

    def ping(self) -> None:
        return None

    def add(self, name: str, email: str, release: str) -> User:
        with self._lock:
            if any(u.email == email for u in self._users):
                raise DuplicateEmail(email)
            user = User(len(self._users) + 1, name, email, release, datetime.now(UTC).isoformat())
            self._users.append(user)
            return user

    def get(self, user_id: int) -> User | None:
        with self._lock:
            return next((u for u in self._users if u.id == user_id), None)

    def get_by_email(self, email: str) -> User | None:
        """The user registered with ``email`` (as stored: lower case), or None."""
        with self._lock:
            return next((u for u in self._users if u.email == email), None)

    def list(self, limit: int) -> list[User]:
        with self._lock:
            return list(reversed(self._users))[:limit]


def open_store(url: str) -> Store:
    """``postgresql://...`` for real use; ``memory://`` only when asked for by name."""
    if url == "memory://":
        return MemoryStore()
    return PostgresStore(url)


class PostgresStore:
    def __init__(self, dsn: str, maxconn: int = 8) -> None:
        self.dsn, self.maxconn = dsn, maxconn
        self._pool: Any = None
        self._lock = threading.Lock()

    def _get_pool(self) -> Any:
        with self._lock:
            if self._pool is None:
                from psycopg2.pool import ThreadedConnectionPool

                # minconn = maxconn: psycopg2 closes a returned connection whenever the pool
                # holds minconn already, so a smaller minconn means a new connection (a backend
                # fork and a SCRAM handshake) for most requests under concurrency.
                self._pool = ThreadedConnectionPool(
                    self.maxconn, self.maxconn, self.dsn, connect_timeout=2
                )
            return self._pool

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg2

        pool = self._get_pool()
        conn = pool.getconn()
        broken = False
        try:
            with conn, conn.cursor() as cur:
                cur.execute("SET LOCAL statement_timeout = 2000")
                cur.execute(sql, args)
                return cur.fetchall() if cur.description else []
        except psycopg2.errors.UniqueViolation as exc:
            raise DuplicateEmail(str(exc)) from exc
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            broken = True
            raise
        finally:
            pool.putconn(conn, close=broken or conn.closed != 0)

    def ping(self) -> None:
        self._run("SELECT 1")

    def add(self, name: str, email: str, release: str) -> User:
        (row,) = self._run(
            "INSERT INTO users (name, email, release) VALUES (%s, %s, %s) "
            "RETURNING id, name, email, release, created_at",
            (name, email, release),
        )
        return _user(row)

    def get(self, user_id: int) -> User | None:
        rows = self._run(
            "SELECT id, name, email, release, created_at FROM users WHERE id = %s", (user_id,)
        )
        return _user(rows[0]) if rows else None

    def get_by_email(self, email: str) -> User | None:
        """The user registered with ``email`` (as stored: lower case), or None; the column's
        unique index answers it."""
        rows = self._run(
            "SELECT id, name, email, release, created_at FROM users WHERE email = %s", (email,)
        )
        return _user(rows[0]) if rows else None

    def list(self, limit: int) -> list[User]:
        rows = self._run(
            "SELECT id, name, email, release, created_at FROM users ORDER BY id DESC LIMIT %s",
            (limit,),
        )
        return [_user(r) for r in rows]


def _user(row: tuple[Any, ...]) -> User:
    return User(int(row[0]), row[1], row[2], row[3], row[4].isoformat())
