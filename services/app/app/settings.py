"""Configuration from the environment only (12-factor): the same image runs everywhere."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

URL_FORM = "postgresql://USER:PASSWORD@HOST:PORT/DATABASE"


@dataclass(frozen=True)
class Settings:
    service: str
    release: str  # the commit the image was built from
    image: str  # the image reference the container runs (by digest in production)
    database_url: str
    carbon_host: str  # "" disables metrics
    carbon_port: int
    hostname: str
    misbehave: str = ""  # TEST HOOK (app/misbehave.py): CDLAB_MISBEHAVE, "" when unset

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            service=env.get("SERVICE_NAME", "app"),
            release=env.get("RELEASE", "dev"),
            image=env.get("IMAGE", "unknown"),
            database_url=env.get("DATABASE_URL", ""),
            carbon_host=env.get("CARBON_HOST", ""),
            carbon_port=int(env.get("CARBON_PORT", "2003")),
            hostname=env.get("HOSTNAME") or socket.gethostname(),
            misbehave=env.get("CDLAB_MISBEHAVE", ""),
        )


def migration_url(env: Mapping[str, str]) -> str:
    """The PostgreSQL URL the schema migrations run against: ``DATABASE_URL``, as the lab gives
    every release. Raises ``ValueError`` naming the expected form when it is missing, empty or not
    a PostgreSQL URL (``memory://`` has no schema to migrate); the message never holds the
    password."""
    url = env.get("DATABASE_URL", "").strip()
    if not url:
        raise ValueError(
            "DATABASE_URL is not set: the migrations need the database whose schema they change, "
            f"as {URL_FORM} (cdlab sets it in every container of a service with database = true)"
        )
    if url.partition("://")[0] not in ("postgresql", "postgresql+psycopg2"):
        raise ValueError(
            f"DATABASE_URL {redact(url)!r} is not a PostgreSQL URL: expected {URL_FORM}"
        )
    return url


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{host}{slash}{path}"
