"""prod as a Docker Swarm cluster: the manager on prod's address, workers on their own lab
addresses, joined with the manager's worker token (the nodes then speak Swarm's own mutual TLS).

Facts (each node's ``docker info`` Swarm section, the manager's node list) -> a pure ``plan``
-> ``apply`` through the nodes' engine clients. Idempotent: a second ``lab.up`` finds every
node in the cluster and does nothing. A recreated worker host (an empty engine) joins again and
its former node, left Down in the manager's list, is removed; a node that belongs to another
swarm (a manager recreated under it) leaves that swarm first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lab.config import Host, LabConfig
from lab.errors import SwarmError as SwarmError  # raised here; defined with the others

PORT = 2377  # Swarm's cluster management port, on each node's lab address


@dataclass(frozen=True)
class NodeFacts:
    """One engine's view of its Swarm membership (``docker info`` .Swarm)."""

    host: str
    address: str
    state: str  # LocalNodeState: inactive, pending, active, error, locked
    node_id: str = ""
    is_manager: bool = False  # ControlAvailable
    managers: tuple[str, ...] = ()  # RemoteManagers' addresses ("10.100.200.201:2377")
    existing: bool = False  # a machine cdlab did not create: never taken out of a swarm not ours


@dataclass(frozen=True)
class Member:
    """A node in the manager's list (``docker node ls``)."""

    node_id: str
    hostname: str
    address: str
    role: str  # "manager" or "worker"
    state: str  # "ready", "down", "unknown", "disconnected"
    availability: str = "active"


@dataclass(frozen=True)
class Step:
    action: str  # "init", "leave", "join", "remove"
    host: str  # the node it runs on (the manager for "remove")
    target: str  # what it acts on: an address, or the node id to remove
    why: str


def facts_of(host: Host, info: dict[str, Any]) -> NodeFacts:
    """``info`` (``docker info`` as the SDK returns it) into a host's ``NodeFacts`` (pure)."""
    sw = info.get("Swarm") or {}
    return NodeFacts(
        host.name,
        host.address,
        str(sw.get("LocalNodeState") or "inactive"),
        str(sw.get("NodeID") or ""),
        bool(sw.get("ControlAvailable")),
        tuple(str(m.get("Addr", "")) for m in sw.get("RemoteManagers") or ()),
        host.existing,
    )


def member_of(node: dict[str, Any]) -> Member:
    """A node object of the manager's API (``client.nodes.list()[i].attrs``) (pure)."""
    status = node.get("Status") or {}
    spec = node.get("Spec") or {}
    return Member(
        str(node.get("ID", "")),
        str((node.get("Description") or {}).get("Hostname", "")),
        str(status.get("Addr", "")),
        str(spec.get("Role", "")),
        str(status.get("State", "")),
        str(spec.get("Availability", "active")),
    )


def plan(
    manager: NodeFacts, workers: Sequence[NodeFacts], members: Sequence[Member]
) -> tuple[Step, ...]:
    """What makes ``manager`` the swarm's only manager and every one of ``workers`` a worker of
    it (pure). ``members`` is the manager's node list (empty before ``init``)."""
    steps: list[Step] = []
    own = f"{manager.address}:{PORT}"
    if manager.state in ("pending", "error", "locked"):  # never wipe a cluster on a guess
        raise SwarmError(
            "read the swarm",
            manager.host,
            f"its engine's swarm is {manager.state}; cdlab does not start it over by itself "
            "(that would lose the cluster's state)",
            hint="wait and run 'invoke lab.up' again; a swarm that stays so needs "
            "'invoke lab.shell prod', then 'docker swarm init --force-new-cluster'",
        )
    if not (manager.state == "active" and manager.is_manager):
        if manager.state != "inactive":
            _never_theirs(manager, own)
            steps.append(Step("leave", manager.host, "", f"its engine is {_said(manager, own)}"))
        steps.append(Step("init", manager.host, manager.address, "prod's swarm does not exist"))
        members = ()
    known = {m.node_id: m for m in members}
    joined: set[str] = set()
    for w in workers:
        member = known.get(w.node_id)
        if w.state == "active" and own in w.managers and member is not None:
            joined.add(w.node_id)
            continue
        if w.state != "inactive":
            _never_theirs(w, own)
            steps.append(Step("leave", w.host, "", f"its engine is {_said(w, own)}"))
        steps.append(Step("join", w.host, own, "not a node of prod's swarm"))
    addresses = {w.address for w in workers}
    for m in members:
        if m.node_id == manager.node_id or m.node_id in joined:
            continue
        if m.role == "worker" and (m.state != "ready" or m.address in addresses):
            why = f"{m.hostname or m.address} is {m.state}: a host recreated or gone"
            steps.append(Step("remove", manager.host, m.node_id, why))
    return tuple(steps)


def _never_theirs(n: NodeFacts, own: str) -> None:
    """An existing machine in a swarm that is not prod's is someone else's cluster: cdlab does
    not force it out (a manager leaving could cost that cluster its quorum)."""
    if n.existing and own not in n.managers:
        raise SwarmError(
            "join prod's swarm",
            n.host,
            f"this existing machine's engine is {_said(n, own)}",
            hint=f"make it leave that swarm yourself ('docker swarm leave' on {n.host}) if it "
            "may, or name another machine in the topology; then run 'invoke lab.up' again",
        )


def _said(n: NodeFacts, own: str) -> str:
    if n.state == "active" and own in n.managers:
        return "in an earlier swarm of prod's (a manager recreated since)"
    if n.state == "active":
        return f"active in another swarm (managers {', '.join(n.managers) or 'none'})"
    return n.state


def apply(
    steps: Sequence[Step],
    clients: dict[str, Any],
    addresses: dict[str, str],
    manager_host: str,
    say: Callable[[str], None] = lambda _: None,
) -> list[str]:
    """Run ``steps`` through each node's engine client (``clients`` by host name; joins take
    ``manager_host``'s worker token); what was done."""
    done: list[str] = []
    for step in steps:
        c = clients[step.host]
        try:
            if step.action == "init":
                c.swarm.init(advertise_addr=step.target, listen_addr=f"{step.target}:{PORT}")
            elif step.action == "leave":
                c.swarm.leave(force=True)
            elif step.action == "join":
                manager = clients[manager_host]
                manager.swarm.reload()
                token = manager.swarm.attrs["JoinTokens"]["Worker"]
                address = addresses[step.host]
                c.swarm.join(
                    remote_addrs=[step.target],
                    join_token=token,
                    advertise_addr=address,
                    listen_addr=f"{address}:{PORT}",
                )
            elif step.action == "remove":
                c.nodes.get(step.target).remove(force=True)
        except Exception as exc:  # the engine's own words: the step and its reason come first
            what = f"{step.action} {step.target}" if step.target else step.action
            raise SwarmError(what, step.host, f"{type(exc).__name__}: {exc}", step.why) from exc
        done.append(f"{step.action} {step.host}" + (f" {step.target}" if step.target else ""))
        say(f"{step.action} on {step.host}: {step.why}")
    return done


SETTLE = 30.0  # how long a node may say "pending" (starting, reconnecting) before it counts


def converge(
    config: LabConfig, connect: Callable[[Host], Any], say: Callable[[str], None] = lambda _: None
) -> list[str]:
    """Make prod's nodes one swarm as the topology says, then wait until the manager lists each
    of them ready; what changed (empty: nothing did)."""
    manager_host = config.swarm_manager
    if manager_host is None:
        return []
    nodes = (manager_host, *config.swarm_workers)
    clients = {h.name: connect(h) for h in nodes}
    addresses = {h.name: h.address for h in nodes}
    deadline = time.monotonic() + SETTLE
    while True:  # a node that is still starting says "pending": wait for it, bounded
        facts = {h.name: facts_of(h, _read(h.name, "read its swarm state", clients[h.name].info))
                 for h in nodes}  # fmt: skip
        if time.monotonic() > deadline or all(f.state != "pending" for f in facts.values()):
            break
        time.sleep(0.5)
    manager = facts[manager_host.name]
    workers = [facts[h.name] for h in config.swarm_workers]
    listed: list[Member] = []
    if manager.state == "active" and manager.is_manager:
        listed = _listed(clients[manager_host.name], manager_host.name)
    done = apply(plan(manager, workers, listed), clients, addresses, manager_host.name, say)
    wait_ready(clients[manager_host.name], nodes, timeout=60.0 if done else SETTLE)
    return done


def _read(host: str, what: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:  # the engine's words, with the node they came from
        raise SwarmError(what, host, f"{type(exc).__name__}: {exc}") from exc


def _listed(manager: Any, host: str) -> list[Member]:
    return [member_of(n.attrs) for n in _read(host, "list the swarm's nodes", manager.nodes.list)]


def wait_ready(manager: Any, nodes: Sequence[Host], timeout: float = 60.0) -> list[Member]:
    """Poll the manager until each of ``nodes`` (by address) is listed ready; the last list
    read, or the last error (a manager just restarted has no leader for a moment), is in the
    error."""
    deadline = time.monotonic() + timeout
    last = "nothing read"
    while True:
        try:
            listed = [member_of(n.attrs) for n in manager.nodes.list()]
        except Exception as exc:  # transient: no leader yet, a connection reset
            last = f"{type(exc).__name__}: {exc}"
        else:
            ready = {m.address for m in listed if m.state == "ready"}
            missing = [h.name for h in nodes if h.address not in ready]
            if not missing:
                return listed
            seen = ", ".join(f"{m.hostname} {m.state}" for m in listed) or "no node"
            last = f"not ready: {', '.join(missing)} (the manager lists {seen})"
        if time.monotonic() > deadline:
            raise SwarmError(f"see every node ready within {timeout:.0f} s", nodes[0].name, last)
        time.sleep(0.5)


def members(config: LabConfig, connect: Callable[[Host], Any]) -> list[Member] | str:
    """The manager's node list, or why it could not be read (status prints whatever the
    cluster's state); one entry per address, a ready one before a down one (a recreated host
    leaves its old node down at the same address)."""
    manager = config.swarm_manager
    if manager is None:
        return []
    try:
        listed = [member_of(n.attrs) for n in connect(manager).nodes.list()]
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:60] if str(exc) else ''}"
    best: dict[str, Member] = {}
    for m in listed:
        if m.address not in best or (m.state == "ready" and best[m.address].state != "ready"):
            best[m.address] = m
    return list(best.values())
