"""The lab's configuration: the topology (``lab/topology.json``) plus where state lives.

``topology.json`` is the single source of the hosts and their addresses: the ``Vagrantfile``
reads the same file. Everything here is plain data; loading validates every field and names the
one that is wrong.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lab.errors import ConfigError

ROLES = ("registry", "engine")
SWARM_ROLES = ("manager", "worker")
_NAME = re.compile(r"\A[a-z][a-z0-9-]{0,30}\Z")
_PUBLISH = re.compile(
    r"^127\.0\.0\.1:\d{1,5}(-\d{1,5})?:\d{1,5}(-\d{1,5})?$"
)  # published ports bind loopback only
TOPOLOGY = Path(__file__).with_name("topology.json")
LABEL = "cdlab.lab"  # every container, volume, network and image the lab creates carries it


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    role: str  # "registry" or "engine"
    project_mount: bool  # the project folder is mounted read-only at /vagrant
    publish: tuple[str, ...] = ()  # "127.0.0.1:8000:8000": workstation ports forwarded to the host
    swarm: str = ""  # "manager" or "worker": a node of prod's swarm; "" on no swarm
    # a machine that already runs (a team's VM): cdlab neither creates, stops nor removes it,
    # and reaches its engine at ``address`` with the lab's client certificate (``lab.bundle``)
    existing: bool = False

    @property
    def has_engine(self) -> bool:
        return self.role == "engine"


@dataclass(frozen=True)
class Network:
    name: str
    subnet: str
    gateway: str


@dataclass(frozen=True)
class LabConfig:
    name: str
    network: Network
    hosts: tuple[Host, ...]
    registry_port: int
    engine_port: int
    root: Path  # the project checkout
    state_dir: Path  # git-ignored, mode 0700: CA, certificates, passwords, logs
    topology_file: Path = TOPOLOGY

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        names = ", ".join(h.name for h in self.hosts)
        raise ConfigError("host", name, f"one of: {names}")

    @property
    def registry(self) -> Host:
        return next(h for h in self.hosts if h.role == "registry")

    @property
    def engine_hosts(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.has_engine)

    @property
    def swarm_manager(self) -> Host | None:
        """prod's swarm manager, when the topology makes prod a cluster."""
        return next((h for h in self.hosts if h.swarm == "manager"), None)

    @property
    def swarm_workers(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.swarm == "worker")

    @property
    def created_hosts(self) -> tuple[Host, ...]:
        """The hosts cdlab creates (Vagrant), not the existing machines it only uses."""
        return tuple(h for h in self.hosts if not h.existing)

    @property
    def public_address(self) -> str:
        """Where prod's published ports answer: 127.0.0.1 (the workstation's forwards of a
        host cdlab created), or prod's own address when prod is an existing machine."""
        prod = next((h for h in self.hosts if h.name == "prod"), None)
        return prod.address if prod is not None and prod.existing else "127.0.0.1"

    @property
    def builder(self) -> Host:
        """The host that builds and pushes: ``cd`` when the topology has one."""
        engines = self.engine_hosts
        return next((h for h in engines if h.name == "cd"), engines[0])

    @property
    def registry_addr(self) -> str:
        """``address:port`` of the registry, as image references spell it."""
        return f"{self.registry.address}:{self.registry_port}"

    def container_name(self, host: Host) -> str:
        return f"{self.name}-{host.name}"

    def volume_name(self, host: Host, purpose: str) -> str:
        return f"{self.name}-{host.name}-{purpose}"

    def published(self, port: int) -> int:
        """The workstation port where prod's ``port`` is published (``hosts[].publish``); the
        port itself on an existing prod (reached at its own address, ``public_address``)."""
        if self.public_address != "127.0.0.1":
            return port
        for host in self.hosts:
            for spec in host.publish:
                _, ours, theirs = spec.split(":")
                first, _, last = theirs.partition("-")
                if int(first) <= port <= int(last or first):
                    return int(ours.partition("-")[0]) + port - int(first)
        raise ConfigError(
            "published port", port, "a port prod publishes (hosts[].publish)", self.name
        )

    @property
    def labels(self) -> dict[str, str]:
        """Labels that mark a resource as this lab's (removal is by these, never by prune)."""
        return {LABEL: self.name}


def _require(data: Mapping[str, Any], key: str, kind: type, where: str, expected: str) -> Any:
    if key not in data:
        raise ConfigError(key, None, expected + " (field is missing)", where)
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(key, value, expected, where)
    return value


def parse_topology(
    data: Mapping[str, Any], root: Path, state_dir: Path, source: str = "topology.json"
) -> LabConfig:
    """Validate a parsed topology document into a ``LabConfig``."""
    name = _require(data, "name", str, source, "a lowercase name like 'cdlab'")
    if not _NAME.match(name):
        raise ConfigError("name", name, "lowercase letters, digits and '-'", source)
    net = _require(data, "network", dict, source, "an object with name, subnet, gateway")
    try:
        subnet = ipaddress.ip_network(_require(net, "subnet", str, source, "a CIDR"))
    except ValueError as exc:
        raise ConfigError(
            "network.subnet", net.get("subnet"), "a CIDR like 10.100.200.0/24", source
        ) from exc
    gateway = _require(net, "gateway", str, source, "an address inside the subnet")
    if _address(gateway, "network.gateway", source) not in subnet:
        raise ConfigError("network.gateway", gateway, f"an address inside {subnet}", source)
    network = Network(
        _require(net, "name", str, source, "a docker network name"), str(subnet), gateway
    )
    hosts: list[Host] = []
    for i, raw in enumerate(_require(data, "hosts", list, source, "a list of hosts")):
        where = f"{source} hosts[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"hosts[{i}]", raw, "an object", source)
        hname = _require(raw, "name", str, where, "a lowercase host name")
        if not _NAME.match(hname):
            raise ConfigError(
                f"hosts[{i}].name", hname, "lowercase letters, digits and '-'", source
            )
        existing = raw.get("existing", False)
        if not isinstance(existing, bool):
            raise ConfigError(f"hosts[{i}].existing", existing, "true or false", source)
        addr = _require(raw, "address", str, where, "an IPv4 address")
        ip = _address(addr, f"hosts[{i}].address", source)
        if existing and (ip.version != 4 or ip.is_loopback or ip.is_unspecified):
            raise ConfigError(
                f"hosts[{i}].address",
                addr,
                "the IPv4 address at which the lab reaches the existing machine (not loopback)",
                source,
            )
        if not existing and (ip not in subnet or addr == gateway):
            raise ConfigError(
                f"hosts[{i}].address",
                addr,
                f"an address inside {subnet} other than the gateway",
                source,
            )
        role = _require(raw, "role", str, where, " or ".join(ROLES))
        if role not in ROLES:
            raise ConfigError(f"hosts[{i}].role", role, " or ".join(ROLES), source)
        mount = _require(raw, "project_mount", bool, where, "true or false")
        publish = raw.get("publish", [])
        if not isinstance(publish, list) or not all(
            isinstance(p, str) and _PUBLISH.match(p) and _spans_agree(p) for p in publish
        ):
            raise ConfigError(
                f"hosts[{i}].publish",
                publish,
                'a list like ["127.0.0.1:8000:8000"] or ["127.0.0.1:8100-8109:8000-8009"] '
                "(127.0.0.1:host:guest, ranges ascending and of one length, ports 1-65535)",
                source,
            )
        swarm = raw.get("swarm", "")
        if swarm not in ("", *SWARM_ROLES) or (
            swarm and (role != "engine" or mount or ":" in addr or hname in ("cd", "dev"))
        ):
            raise ConfigError(
                f"hosts[{i}].swarm",
                swarm,
                "'manager' or 'worker', on a host whose role is 'engine', with an IPv4 address, "
                "project_mount false and not cd or dev (the builder and the developer's host "
                "run no release), or no field",
                source,
            )
        if existing and (role != "engine" or mount or publish or hname in ("cd", "dev")):
            raise ConfigError(
                f"hosts[{i}].existing",
                existing,
                "true only on an engine host that is not cd or dev, with project_mount false "
                "and no publish (cdlab mounts and forwards nothing on a machine it did not "
                "create); else false or no field",
                source,
            )
        hosts.append(Host(hname, addr, role, mount, tuple(publish), swarm, existing))
    for field, values in (
        ("name", [h.name for h in hosts]),
        ("address", [h.address for h in hosts]),
    ):
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise ConfigError(f"hosts[].{field}", dupes, "unique values", source)
    roles = [h.role for h in hosts]
    if roles.count("registry") != 1 or "engine" not in roles:
        raise ConfigError(
            "hosts[].role", roles, "exactly one 'registry' and at least one 'engine'", source
        )
    swarm_roles = [h.swarm for h in hosts if h.swarm]
    if swarm_roles and (
        swarm_roles.count("manager") != 1
        or "prod" not in {h.name for h in hosts if h.swarm == "manager"}
    ):
        raise ConfigError(
            "hosts[].swarm",
            swarm_roles,
            "exactly one 'manager', on the host named 'prod', and any number of 'worker's",
            source,
        )
    engines = [h for h in hosts if h.role == "engine"]
    builder = next((h for h in engines if h.name == "cd"), engines[0])
    if builder.existing:  # it would hold the pipeline's secrets and run cd's git server
        raise ConfigError(
            "hosts[].existing",
            builder.name,
            "a topology with a host named 'cd' (the builder, which cdlab creates) when a host "
            "is an existing machine: without cd, the first engine host builds",
            source,
        )
    ports = {}
    for key in ("registry_port", "engine_port"):
        ports[key] = _require(data, key, int, source, "a TCP port number")
        if not 0 < ports[key] < 65536:
            raise ConfigError(key, ports[key], "a TCP port number (1-65535)", source)
    return LabConfig(
        name, network, tuple(hosts), ports["registry_port"], ports["engine_port"], root, state_dir
    )


def _spans_agree(spec: str) -> bool:
    """``127.0.0.1:A-B:C-D``: each range ascending, both of one length, every port valid."""
    _, ours, theirs = spec.split(":")
    spans = []
    for text in (ours, theirs):
        first, _, last = text.partition("-")
        lo, hi = int(first), int(last or first)
        if not 0 < lo <= hi < 65536:
            return False
        spans.append(hi - lo)
    return spans[0] == spans[1]


def _address(value: str, field: str, source: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError as exc:
        raise ConfigError(field, value, "an IP address like 10.100.200.201", source) from exc


MAX_LABS = 9  # named labs per checkout: index 1-9 (the default lab is index 0)
PORT_STEP = 100  # a named lab's workstation ports: the default's + 100 x its index


def named_topology(data: Mapping[str, Any], lab: str, index: int) -> dict[str, Any]:
    """The default topology ``data`` made into named lab ``lab``'s, number ``index`` (pure):
    its own name (``cdlab-<lab>``: containers, volumes, network), its own subnet (the third
    octet + ``index``, each host keeping its last octet) and its own workstation ports (+ 100 x
    ``index``: app on 8100 for lab 1, Graphite on 8182)."""
    if not 1 <= index <= MAX_LABS:
        raise ConfigError("lab index", index, f"1 to {MAX_LABS}")
    theirs = [h["name"] for h in data["hosts"] if h.get("existing")]
    if theirs:  # moved, it would not be the machine; kept, two labs would share one engine
        raise ConfigError(
            "CDLAB_LAB",
            lab,
            f"a topology without existing machines ({', '.join(theirs)}: one machine's "
            "engine serves one lab); unset CDLAB_LAB, or give the lab its own topology file "
            "(CDLAB_TOPOLOGY and CDLAB_STATE_DIR)",
        )
    out: dict[str, Any] = json.loads(json.dumps(data))  # a deep copy
    out["name"] = f"{data['name']}-{lab}"
    net = ipaddress.ip_network(data["network"]["subnet"])
    shift = index * 256  # the next /24s
    out["network"] = {
        "name": f"{data['network']['name']}-{lab}",
        "subnet": str(ipaddress.ip_network((int(net.network_address) + shift, net.prefixlen))),
        "gateway": str(ipaddress.ip_address(data["network"]["gateway"]) + shift),
    }
    for host in out["hosts"]:
        host["address"] = str(ipaddress.ip_address(host["address"]) + shift)
        host["publish"] = [shifted(spec, index * PORT_STEP) for spec in host.get("publish", [])]
    return out


def shifted(spec: str, by: int) -> str:
    """``127.0.0.1:8000-8009:8000-8009`` with its workstation ports moved by ``by``."""
    ip, ports, guest = spec.split(":")
    first, _, last = ports.partition("-")
    moved = str(int(first) + by) + (f"-{int(last) + by}" if last else "")
    return f"{ip}:{moved}:{guest}"


def _lab_index(labs: Path, lab: str) -> int:
    """Named lab ``lab``'s number: the one it was given (``<labs>/<lab>/index``), or the
    smallest that no other named lab of this checkout holds, kept for next time."""
    kept = labs / lab / "index"
    if kept.is_file():
        return int(kept.read_text().strip())
    taken = set()
    for other in labs.glob("*/index"):
        with contextlib.suppress(ValueError):
            taken.add(int(other.read_text().strip()))
    free = [i for i in range(1, MAX_LABS + 1) if i not in taken]
    if not free:
        raise ConfigError(
            "CDLAB_LAB",
            lab,
            f"one of the {MAX_LABS} named labs this checkout already has (see `invoke lab.list`;"
            " `invoke lab.destroy` with CDLAB_LAB=NAME frees one)",
        )
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(f"{free[0]}\n")
    return free[0]


def load(root: Path | None = None, environ: Mapping[str, str] | None = None) -> LabConfig:
    """Load the lab's config for the checkout at ``root`` (default: the one holding ``lab/``).

    ``CDLAB_LAB`` names a lab of its own beside the default one (a student's: ``alice``): its
    state in ``<root>/.lab/labs/<name>``, its topology derived from the default's there
    (``named_topology``). ``CDLAB_TOPOLOGY`` names another topology file (the Vagrantfile
    honours it too); ``CDLAB_STATE_DIR`` overrides where state lives (default ``<root>/.lab``).
    """
    env = os.environ if environ is None else environ
    root = (root or TOPOLOGY.parent.parent).resolve()
    lab = env.get("CDLAB_LAB", "")
    if lab and lab != "default":
        return _load_named(root, lab, env)
    state = Path(env.get("CDLAB_STATE_DIR", root / ".lab")).resolve()
    topology = Path(env.get("CDLAB_TOPOLOGY", TOPOLOGY)).resolve()
    try:
        data = json.loads(topology.read_text())
    except FileNotFoundError as exc:
        raise ConfigError("CDLAB_TOPOLOGY", str(topology), "an existing JSON file") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError("topology", str(topology), f"valid JSON ({exc})") from exc
    config = parse_topology(data, root, state, source=topology.name)
    return replace(config, topology_file=topology)


def _load_named(root: Path, lab: str, env: Mapping[str, str]) -> LabConfig:
    if not _NAME.match(lab) or len(lab) > 20:
        raise ConfigError(
            "CDLAB_LAB", lab, "a lab name: lowercase letters, digits and '-', at most 20"
        )
    labs = root / ".lab" / "labs"
    state = Path(env.get("CDLAB_STATE_DIR", labs / lab)).resolve()
    base = json.loads(TOPOLOGY.read_text())
    data = named_topology(base, lab, _lab_index(labs, lab))
    topology = state / "topology.json"
    text = json.dumps(data, indent=2) + "\n"
    if not topology.is_file() or topology.read_text() != text:
        topology.parent.mkdir(parents=True, exist_ok=True)
        topology.write_text(text)  # the Vagrantfile reads it (CDLAB_TOPOLOGY)
    config = parse_topology(data, root, state, source=f"lab {lab}")
    return replace(config, topology_file=topology)


def public_port(port: int) -> int:
    """Where prod's published ``port`` (a frontend's 8000-8009, Graphite's 8082) is reached
    from here: the same port on a lab host (``CDLAB_PUBLIC_HOST`` set: prod's own address) or
    on an existing prod, else the workstation port this lab's topology publishes it on (8000
    for the default lab, 8100 for named lab number 1...)."""
    if os.environ.get("CDLAB_PUBLIC_HOST"):
        return port
    return _published(os.environ.get("CDLAB_LAB", ""), os.environ.get("CDLAB_TOPOLOGY", ""), port)


@functools.lru_cache(maxsize=64)
def _published(lab: str, topology: str, port: int) -> int:
    del lab, topology  # the cache's key: the lab this process talks to
    return load().published(port)


def public_host() -> str:
    """Where prod's published ports are reached: 127.0.0.1 on the workstation; prod's lab
    address when cdlab runs on a lab host (the cd host's git hook sets CDLAB_PUBLIC_HOST) or
    when prod is an existing machine (``hosts[].existing``)."""
    given = os.environ.get("CDLAB_PUBLIC_HOST")
    if given:
        return given
    return _public_address(os.environ.get("CDLAB_LAB", ""), os.environ.get("CDLAB_TOPOLOGY", ""))


@functools.lru_cache(maxsize=64)
def _public_address(lab: str, topology: str) -> str:
    del lab, topology  # the cache's key: the lab this process talks to
    return load().public_address


_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(text: str, option: str, minimum: float, maximum: float) -> float:
    """``"90s"``, ``"5m"``, ``"2h"`` or ``"30"`` (seconds) into seconds, from ``minimum`` to
    ``maximum``; a ``ConfigError`` naming ``option`` and the expected form otherwise."""
    text = str(text)
    try:
        value = float(text[:-1]) * _UNITS[text[-1]] if text[-1:] in _UNITS else float(text)
    except (ValueError, IndexError) as exc:
        raise ConfigError(option, text, "a duration like 30s, 5m or 2h") from exc
    if not minimum <= value <= maximum:  # NaN fails too
        raise ConfigError(option, text, f"a duration from {_span(minimum)} to {_span(maximum)}")
    return value


def _span(seconds: float) -> str:
    """``3600`` as ``60m``, ``86400`` as ``24h``: how the range of a duration is said."""
    if seconds > 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
