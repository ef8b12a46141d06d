"""The apps network (``cdlab-apps``): every release, hook, migration and test container, with
the proxy, the database and carbon beside them. Facts -> pure ``plan`` -> apply, before Compose
brings the stack up (``compose/stack.yml`` names it as external).

- prod a single host: an internal bridge with a fixed name (``cdlab-apps0``), which prod's
  firewall names (``cdlab-host-init``): nothing on it reaches the host itself;
- prod a swarm: an internal, attachable overlay. Releases run as Swarm services on every node
  and reach the stack on the manager through it; internal means no ``docker_gwbridge``, so no
  route to any host, engine or the lab network.

A network in the wanted form is left alone. One of the other kind (the topology changed between
a single host and a swarm) is never replaced behind the lab's back: every container on it would
lose its network. The error says to bring the lab up again from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lab.errors import StackError

NAME = "cdlab-apps"
BRIDGE = "cdlab-apps0"  # the bridge's name on the host: the firewall rule's


@dataclass(frozen=True)
class Net:
    driver: str  # "bridge" or "overlay"
    internal: bool
    attachable: bool


def wanted(swarm: bool) -> Net:
    return Net("overlay", True, True) if swarm else Net("bridge", True, False)


def facts(attrs: dict[str, Any] | None) -> Net | None:
    """The network as prod's engine describes it (``network inspect``), None when missing."""
    if attrs is None:
        return None
    return Net(
        str(attrs.get("Driver", "")),
        bool(attrs.get("Internal")),
        bool(attrs.get("Attachable")),
    )


def plan(found: Net | None, want: Net) -> str:
    """``"create"`` or ``""`` (in shape); ``StackError`` when another kind of network has the
    name (pure)."""
    if found is None:
        return "create"
    same = found.driver == want.driver and found.internal == want.internal
    if same and (found.attachable or not want.attachable):
        return ""
    raise StackError(
        f"use prod's network '{NAME}' for the releases",
        f"it is {_said(found)}, the topology needs {_said(want)} (prod "
        f"{'is' if want.driver == 'overlay' else 'is no longer'} a swarm)",
        hint="a network in use is never replaced by cdlab: 'invoke lab.destroy' then "
        "'invoke lab.up' brings the lab up with the topology's network",
    )


def _said(n: Net) -> str:
    kind = "an internal" if n.internal else "a non-internal"
    return f"{kind}{' attachable' if n.attachable else ''} {n.driver}"


def create_args(want: Net) -> dict[str, Any]:
    """``networks.create`` arguments for ``want`` (pure)."""
    args: dict[str, Any] = {
        "name": NAME,
        "driver": want.driver,
        "internal": want.internal,
        "labels": {"cdlab.role": "apps-network"},
        "check_duplicate": True,  # two lab.up at once: one network, the other call refused
    }
    if want.driver == "bridge":
        args["options"] = {"com.docker.network.bridge.name": BRIDGE}
    else:
        args["attachable"] = True
        args["scope"] = "swarm"
    return args


def ensure(client: Any, swarm: bool) -> str:
    """The apps network on prod's engine (``client``) as the topology wants it; what was done
    ("" when nothing)."""
    import docker.errors

    try:
        attrs: dict[str, Any] | None = client.api.inspect_network(NAME)
    except docker.errors.NotFound:
        attrs = None
    want = wanted(swarm)
    if not plan(facts(attrs), want):
        return ""
    try:
        client.networks.create(**create_args(want))
    except docker.errors.APIError as exc:
        if "already exists" not in str(exc):  # made meanwhile: the next call checks it
            raise StackError(
                f"create prod's network '{NAME}' ({_said(want)})",
                str(exc.explanation or exc),
                hint="'invoke lab.status' shows whether prod's engine is healthy",
            ) from exc
    return f"created {NAME} ({_said(want)})"
