"""The store's settings, from ``CDLAB_LOGS_*`` variables; the defaults are its container on
prod."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

MB = 1024 * 1024
PORT = 5514  # UDP: what Docker's syslog driver and the proxy's supervisor send to


@dataclass(frozen=True)
class Limits:
    """How much the store keeps: a file over ``file_bytes`` becomes ``<release>.log.1`` (one
    old file kept); over ``total_bytes`` in all, the files written to longest ago go first."""

    file_bytes: int = 20 * MB
    total_bytes: int = 500 * MB
    open_files: int = 64  # files kept open for writing (the most recently written)


@dataclass(frozen=True)
class Settings:
    port: int = PORT
    listen: str = "0.0.0.0"
    root: str = "/var/log/cdlab"
    limits: Limits = Limits()

    @property
    def probe_address(self) -> tuple[str, int]:
        """Where ``check`` sends its probe: the receiver's own address on this machine."""
        return ("127.0.0.1" if self.listen in ("", "0.0.0.0") else self.listen, self.port)


def from_env(env: Mapping[str, str]) -> Settings:
    """``Settings`` from ``CDLAB_LOGS_PORT``, ``_LISTEN``, ``_DIR``, ``_FILE_MB`` and
    ``_TOTAL_MB``; raises ``ValueError`` naming the variable and the expected form."""
    d = Settings()
    return Settings(
        port=int(_number(env, "CDLAB_LOGS_PORT", d.port, "a port from 1 to 65535", 1, 65535, int)),
        listen=env.get("CDLAB_LOGS_LISTEN", d.listen),
        root=env.get("CDLAB_LOGS_DIR", d.root),
        limits=Limits(
            file_bytes=_megabytes(env, "CDLAB_LOGS_FILE_MB", d.limits.file_bytes),
            total_bytes=_megabytes(env, "CDLAB_LOGS_TOTAL_MB", d.limits.total_bytes),
        ),
    )


def _megabytes(env: Mapping[str, str], name: str, default: int) -> int:
    mb = _number(env, name, default / MB, "a size in MB, e.g. 20 or 0.5", 0.001, 1e6)
    return int(mb * MB)


def _number(
    env: Mapping[str, str],
    name: str,
    default: float,
    expected: str,
    low: float,
    high: float,
    kind: Callable[[str], float] = float,
) -> float:
    text = env.get(name, "")
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # nan fails too
        raise ValueError(f"bad value for {name}: {text!r}; expected {expected}")
    return value
