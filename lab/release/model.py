"""The release engine's data: what is deployed (``Candidate``), what is known (``Facts``), how
(``Options``), and what to do (``Plan``: named ``Step``s, each with its undo); and what the
ports answer beyond a plain value (``StepVerdict``, ``Drained``, ``Pruned``).

Everything here is frozen and pure; ``actions`` says what each step does through the ports and
``apply`` runs a plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from lab.ports.proxy import Drained as Drained  # measured by the proxy's Runtime API
from lab.release import judge, routes
from lab.stack.services import Service

if TYPE_CHECKING:
    from lab.release.ports import ReleasePorts

DEFAULT_BAKE = 10.0  # seconds the previous release stays warm and watched after a switch


@dataclass(frozen=True)
class Candidate:
    service: Service
    release: str  # commit short sha
    image: str  # pinned by digest
    test_image: str | None = None  # pinned; None: the manifest's test_command, or built meanwhile

    @property
    def project(self) -> str:
        return f"{self.service.name}-{self.release}"

    @property
    def host(self) -> str:
        return routes.host_name(self.service.name, self.release)


@dataclass(frozen=True)
class Facts:
    """What a plan is computed from, read once before planning."""

    routes: routes.Routes
    running: frozenset[str]  # releases of the service with a running, not unhealthy container
    present: frozenset[str]  # releases of the service with any container on prod
    deployed: tuple[str, ...] = ()  # releases made live by succeeded runs, oldest first
    frontend_current: bool = True  # the proxy holds the candidate's frontend document already
    # the live release as the registry has it (its integration-test image too), for the scratch
    # check of a migration; None: no live release, or no [migrate]
    live: Candidate | None = None
    # replicas a release started now runs with: one per ready node of prod's swarm, or the
    # manifest's (lab.release.replicas.wanted); 0 when prod is one host (a plain container)
    replicas: int = 0


@dataclass(frozen=True)
class Options:
    strategy: str = "bluegreen"  # or "canary"
    steps: tuple[int, ...] = (100,)
    interval: float = 30.0
    thresholds: judge.Thresholds = field(default_factory=judge.Thresholds)
    match: routes.Match | None = None
    bake: float = DEFAULT_BAKE
    health_timeout: float | None = None  # default: the manifest's
    background_tests: bool = False  # the integration-test image is built while it starts
    retain: bool = True  # prune the registry after a deploy
    force: bool = False  # a migration that fails its scratch check runs all the same


@dataclass(frozen=True)
class StepVerdict:
    """How a canary step ended (``ReleasePorts.judge_step``): the ``verdict``, and ``by_hand``,
    the command a person gave instead of waiting for the judge ("promote", "abort"; "" when the
    metrics decided)."""

    verdict: judge.Verdict
    by_hand: str = ""
    figures: Mapping[str, float] = field(default_factory=dict)  # what the judge read


@dataclass(frozen=True)
class Pruned:
    """What retention did to a service's releases (``ReleasePorts.prune``): ``kept`` (the pool
    first, then the newest deployed) can be rolled back to; ``pruned`` were deleted."""

    kept: tuple[str, ...]
    pruned: tuple[str, ...]


class Action(Protocol):
    """One thing a step does through the ports; returns a detail for people and figures."""

    def run(self, ports: ReleasePorts) -> Result: ...


@dataclass(frozen=True)
class Result:
    detail: str = ""
    figures: dict[str, float] = field(default_factory=dict)
    changed: bool = True
    notes: dict[str, str] = field(default_factory=dict)  # named facts for the record (schema)
    skip_to: str = ""  # a step key: the steps before it are skipped (a canary promoted by hand)


@dataclass(frozen=True)
class Step:
    key: str  # stable: records, the bench and tests read it
    title: str  # for people
    do: tuple[Action, ...]
    undo: tuple[Action, ...] = ()  # run (reversed order of steps) when a later step fails
    after_commit: bool = False  # done once the release is live: a failure is a warning


@dataclass(frozen=True)
class Plan:
    kind: str  # deploy, match, rollback, promote, abort
    service: str
    release: str
    previous: str | None
    steps: tuple[Step, ...]
    note: str = ""  # why nothing is to be done, when steps is empty

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(s.key for s in self.steps)
