"""``Lab``: the lab's state and every client that reaches it, built once (by a task, a test
fixture or the bench) and passed down. Clients are made on first use and kept; ``close``
(or the ``with`` block) closes the engine connections.

    with Lab.of(state) as lab:
        pipeline.deploy(lab, progress, "app", "HEAD")
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any

from lab.config import LabConfig
from lab.estate.state import State
from lab.ports import engines
from lab.ports.etcd import Etcd
from lab.ports.metrics import Graphite
from lab.ports.proxy import Runtime
from lab.ports.registry import RegistryClient


class Lab:
    def __init__(self, state: State) -> None:
        self.state = state
        self._engines: dict[tuple[str, int], Any] = {}

    @classmethod
    def of(cls, state: State | Lab) -> Lab:
        """``state`` as a ``Lab`` (a ``Lab`` is returned as it is)."""
        return state if isinstance(state, Lab) else cls(state)

    def at(self, root: Path) -> Lab:
        """The same lab, for the checkout (or clone) at ``root``."""
        return Lab(self.state.at(root))

    # what the state knows
    @property
    def config(self) -> LabConfig:
        return self.state.config

    @property
    def runs(self) -> Path:
        return self.state.runs

    @property
    def logs(self) -> Path:
        return self.state.logs

    @property
    def prod_address(self) -> str:
        return self.config.host("prod").address

    # the clients
    @cached_property
    def etcd(self) -> Etcd:
        """The route store on prod (routes, frontends, locks, the shared run history)."""
        return Etcd(self.prod_address, tls=self.state.control_tls())

    @cached_property
    def runtime(self) -> Runtime:
        """The proxy's Runtime API on prod."""
        return Runtime(self.prod_address, tls=self.state.control_tls())

    @cached_property
    def graphite(self) -> Graphite:
        return Graphite()

    @cached_property
    def registry(self) -> RegistryClient:
        return self.state.registry_client()

    def engine(self, host: str = "prod", timeout: int = 300) -> Any:
        """A Docker SDK client for ``host``'s engine (mutual TLS), one per host and timeout."""
        key = (host, timeout)
        if key not in self._engines:
            self._engines[key] = engines.client(self.state, self.config.host(host), timeout)
        return self._engines[key]

    def close(self) -> None:
        for client in self._engines.values():
            client.close()
        self._engines.clear()

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
