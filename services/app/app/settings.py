"""Configuration from the environment only (12-factor): the same image runs everywhere."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    service: str
    release: str  # the commit the image was built from
    image: str  # the image reference the container runs (by digest in production)
    database_url: str
    carbon_host: str  # "" disables metrics
    carbon_port: int
    hostname: str

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
        )
