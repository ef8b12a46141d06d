"""How a release runs as a Swarm service (pure): derived from ``containers.container_spec``,
the one description of how a release runs, never a second one.

``service_kwargs`` turns that spec (``containers.run`` arguments) into docker-py's
``client.services.create(**kwargs)`` arguments; ``unexpressible`` names what the service API
(Docker 20.10, API 1.41) cannot carry, and ``INSTEAD`` says where each of those goes.

What changes on the way, and why:

- replicated, ``replicas`` of them, spread over ``node.id`` and deliberately no maximum per
  node: a dead node's replica must be able to land on a node that runs one already;
- ``EndpointSpec(mode="dnsrr")`` and never a published port: a VIP or an ingress port needs
  IPVS, which this kernel lacks (every connection is refused); the proxy resolves
  ``tasks.<name>`` and reaches each replica at its own address;
- no ``cdlab.keepalive`` label: the host's keeper must never ``docker start`` a task's
  container (Swarm replaces tasks), and the restart policy is Swarm's (any exit, 1 s apart);
- the healthcheck every 5 s, not the container's 10 s: Swarm adds a replica to DNS only once it
  is healthy, so the interval is added to every deploy (and each probe costs an exec: 2 s cost
  a core); its start period is the health timeout; slow to call a replica unhealthy (10 s a
  probe, 6 in a row), since Swarm then stops it;
- a 25 s stop grace (a release is drained first), as ``ProdPorts.remove`` gives a container.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lab.release.containers import SECOND

KEEPALIVE = "cdlab.keepalive"  # the host keeper's label (cdlab-host-init): never on a task
STOP_GRACE = 25  # seconds between SIGTERM and SIGKILL when a replica stops
# every probe is an exec (dockerd, containerd, runc, the probe's process): at 2 s, the 18
# replicas of a 3-node lab (3 services, a live and a warm release each) cost a core of 2 and
# halved what the lab carries (158 req/s offered 300; 228 at 5 s)
HEALTH_INTERVAL = 5  # seconds between Docker's probes of a replica
# Swarm stops an unhealthy replica and starts another: its healthcheck is a liveness check,
# slow to give up. At 2 s a probe and 3 in a row, 300 req/s on a 2-core machine made every live
# replica of a release "unhealthy" (a probe is a python3 started in the container) and Swarm
# stopped all of them at once: the pool empty. The proxy's own checks (every second) keep traffic
# off a replica that answers badly, long before this gives up on it.
HEALTH_TIMEOUT = 10  # seconds one probe may take
HEALTH_RETRIES = 6  # failed probes in a row that make a replica unhealthy (30 s at least)
RESTART_DELAY = 1  # seconds between a task's end and its replacement
SPREAD = ("spread", "node.id")  # one replica per node before any node runs two
RESTART = {"always": "any", "unless-stopped": "any", "on-failure": "on-failure", "no": "none"}
# container_spec's arguments a service takes as they are, by another name, or not at all (a
# container option with no meaning for a task); anything else is ``unexpressible``
_CARRIED = frozenset(
    {
        "image",
        "name",
        "environment",
        "labels",
        "restart_policy",
        "read_only",
        "tmpfs",
        "cap_drop",
        "mem_limit",
        "pids_limit",
        "nano_cpus",
        "user",
        "stop_signal",
        "healthcheck",
        "network",
        "log_config",
    }
)
_MEANINGLESS = frozenset({"detach"})  # a service is always detached
_MOUNT = ("size", "mode")  # the options of a container's tmpfs a service's tmpfs mount carries
# where what the service API cannot carry goes instead (design sections 4 and 11)
INSTEAD = {
    "no-new-privileges": "dockerd --no-new-privileges on every swarm node (cdlab-host-init)",
    "memswap_limit": (
        "nowhere: a replica may swap up to its memory limit when its node has swap "
        "(docs/manifest.md)"
    ),
}


def unexpressible(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """What of ``spec`` (``container_spec``'s output) a Swarm service cannot carry, sorted:
    each ``security_opt`` by its name ("no-new-privileges"), every other argument by its key
    ("memswap_limit"), a tmpfs option but its size and mode as "tmpfs <path> <option>"; ``INSTEAD``
    says where the known ones go. ``service_kwargs`` leaves them out."""
    found: set[str] = set()
    for key, value in spec.items():
        if key == "security_opt":
            found.update(opt.split(":")[0].split("=")[0] for opt in value or ())
        elif key not in _CARRIED | _MEANINGLESS:
            found.add(key)
    for path, options in (spec.get("tmpfs") or {}).items():
        found.update(f"tmpfs {path} {name}" for name in _tmpfs(options) if name not in _MOUNT)
    return tuple(sorted(found))


def _tmpfs(options: str) -> dict[str, str]:
    """ "size=16m,mode=1777" -> {"size": "16m", "mode": "1777"}."""
    return {name: value for name, _, value in (o.partition("=") for o in options.split(",") if o)}


def _mount(path: str, options: str) -> Any:
    """A tmpfs at ``path`` with the size and mode (octal) of container tmpfs ``options``."""
    import docker.types

    found = _tmpfs(options)
    mode = int(found["mode"], 8) if "mode" in found else None
    return docker.types.Mount(path, None, "tmpfs", tmpfs_size=found.get("size"), tmpfs_mode=mode)


def service_kwargs(spec: Mapping[str, Any], replicas: int, health_timeout: int) -> dict[str, Any]:
    """``client.services.create(**kwargs)`` arguments for a release of ``replicas`` (1 or more)
    that runs as ``spec`` says (``containers.container_spec``'s output): its name, image,
    environment, user, read-only root, dropped capabilities, stop signal, network, log driver
    and labels (but ``cdlab.keepalive``) as they are; its tmpfs as tmpfs mounts; its memory,
    CPU and pids limits as the task's resources; the restart policy as Swarm's; its probe every
    ``HEALTH_INTERVAL`` s with a ``health_timeout`` s start period. What the API cannot carry
    (``unexpressible``) is left out."""
    import docker.types

    if replicas < 1:
        raise ValueError(f"a release service runs at least one replica, not {replicas}")
    labels = {k: v for k, v in spec["labels"].items() if k != KEEPALIVE}
    resources = docker.types.Resources(cpu_limit=spec.get("nano_cpus"), mem_limit=spec["mem_limit"])
    if spec.get("pids_limit"):  # API 1.41 takes it; docker-py's Resources has no argument for it
        resources.setdefault("Limits", {})["Pids"] = spec["pids_limit"]
    restart = spec["restart_policy"]
    kwargs: dict[str, Any] = {
        "name": spec["name"],
        "image": spec["image"],
        "mode": docker.types.ServiceMode("replicated", replicas=replicas),
        "preferences": [SPREAD],
        "endpoint_spec": docker.types.EndpointSpec(mode="dnsrr"),
        "networks": [spec["network"]],
        "env": [f"{name}={value}" for name, value in spec["environment"].items()],
        "read_only": spec["read_only"],
        "cap_drop": list(spec["cap_drop"]),
        "stop_signal": spec["stop_signal"],
        "stop_grace_period": STOP_GRACE * SECOND,
        "mounts": [_mount(path, options) for path, options in spec["tmpfs"].items()],
        "resources": resources,
        "restart_policy": docker.types.RestartPolicy(
            RESTART[restart["Name"]],
            delay=RESTART_DELAY * SECOND,
            max_attempts=restart.get("MaximumRetryCount", 0),
        ),
        "healthcheck": docker.types.Healthcheck(
            test=spec["healthcheck"]["test"],
            interval=HEALTH_INTERVAL * SECOND,
            timeout=HEALTH_TIMEOUT * SECOND,
            retries=HEALTH_RETRIES,
            start_period=health_timeout * SECOND,
        ),
        "log_driver": spec["log_config"]["type"],
        "log_driver_options": dict(spec["log_config"]["config"]),
        "labels": labels,
        "container_labels": dict(labels),
    }
    if spec.get("user") is not None:
        kwargs["user"] = spec["user"]
    return kwargs
