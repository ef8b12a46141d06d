"""The lab's docker network and volumes on the workstation: facts, a pure conflict check, apply."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lab.config import LABEL, LabConfig
from lab.errors import PreflightError
from lab.ports import shell


@dataclass(frozen=True)
class Claim:
    """A subnet something on the workstation already uses."""

    owner: str  # "docker network 'x'" or "route on eth0"
    cidr: str


def conflicts(subnet: str, claims: Iterable[Claim]) -> list[Claim]:
    """The claims that overlap ``subnet`` (pure)."""
    net = ipaddress.ip_network(subnet)
    out = []
    for claim in claims:
        try:
            other = ipaddress.ip_network(claim.cidr, strict=False)
        except ValueError:
            continue
        if other.version == net.version and other.prefixlen > 0 and net.overlaps(other):
            out.append(claim)
    return out


def parse_routes(text: str) -> list[Claim]:
    """Claims from ``ip -4 route show`` output (the default route claims nothing)."""
    claims = []
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] == "default" or "/" not in parts[0]:
            continue
        dev = parts[parts.index("dev") + 1] if "dev" in parts else "?"
        claims.append(Claim(f"route via {dev}", parts[0]))
    return claims


def volume_names(config: LabConfig) -> list[str]:
    made = config.created_hosts  # an existing machine keeps its data on its own disk
    names = [config.volume_name(h, "docker" if h.has_engine else "data") for h in made]
    # cdlab's own state on each engine host: the git repository and runs on cd
    return names + [config.volume_name(h, "cdlab") for h in made if h.has_engine]


def ensure(config: LabConfig, client: Any) -> list[str]:
    """Create the labelled network and volumes if missing; refuse a subnet that is taken."""
    import docker.types

    changed = []
    net = config.network
    existing = {n.name: n for n in client.networks.list()}
    mine = existing.get(net.name)
    if mine is not None and mine.attrs.get("Labels", {}).get(LABEL) != config.name:
        raise PreflightError(
            f"a docker network named '{net.name}' exists and is not this lab's",
            f"remove it ('docker network rm {net.name}') or rename the lab's "
            "network in lab/topology.json",
        )
    if mine is None:
        claims = [
            Claim(f"docker network '{n.name}'", cfg["Subnet"])
            for n in existing.values()
            for cfg in (n.attrs.get("IPAM", {}).get("Config") or [])
            if "Subnet" in cfg
        ]
        routes = shell.run(["ip", "-4", "route", "show"], check=False).output
        taken = conflicts(net.subnet, claims + parse_routes(routes))
        if taken:
            what = ", ".join(f"{c.owner} ({c.cidr})" for c in taken)
            raise PreflightError(
                f"the lab subnet {net.subnet} is already used by {what}",
                "free that subnet, or change network.subnet and the host "
                "addresses in lab/topology.json",
            )
        ipam = docker.types.IPAMConfig(
            pool_configs=[docker.types.IPAMPool(subnet=net.subnet, gateway=net.gateway)]
        )
        client.networks.create(
            net.name, driver="bridge", ipam=ipam, labels=config.labels, check_duplicate=True
        )
        changed.append(f"network {net.name} {net.subnet}")
    have = {v.name for v in client.volumes.list(filters={"label": f"{LABEL}={config.name}"})}
    for name in volume_names(config):
        if name not in have:
            client.volumes.create(name, labels=config.labels)
            changed.append(f"volume {name}")
    return changed


def port_taken(port: int, address: str = "127.0.0.1") -> bool:
    """True when something already listens on ``address:port``."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((address, port)) == 0


def check_ports(config: LabConfig, facts: Mapping[str, Any], starting: set[str]) -> None:
    """Refuse to start a host whose published workstation port something else holds."""
    for host in config.hosts:
        if host.name not in starting:
            continue
        running_here = getattr(facts.get(host.name), "running", False)
        for port in (p for spec in host.publish for p in published_ports(spec)):
            if not running_here and port_taken(port):
                raise PreflightError(
                    f"port 127.0.0.1:{port}, which the lab publishes for host '{host.name}', "
                    "is already in use on this machine",
                    f"stop what listens there (see 'ss -ltnp sport = :{port}'), or change "
                    f"hosts[].publish in {config.topology_file.name}",
                )


def published_ports(spec: str) -> range:
    """The workstation ports of ``127.0.0.1:8000-8009:8000-8009`` (or a single port)."""
    first, _, last = spec.split(":")[1].partition("-")
    return range(int(first), int(last or first) + 1)
