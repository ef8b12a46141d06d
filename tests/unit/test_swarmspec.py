"""A release as a Swarm service (``lab.release.swarmspec``): its ``services.create`` arguments
derive from ``containers.container_spec``'s own output, checked as arguments and as the JSON
docker-py sends the engine for API 1.41 (a fake at the HTTP transport records it): dnsrr and
no published port ever, no ``cdlab.keepalive``, spread over the nodes, the limits, the
healthcheck; and what the service API cannot carry is named. No engine is needed."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from lab import config
from lab.estate.state import State
from lab.release import containers, swarmspec
from lab.release.model import Candidate
from lab.stack.limits import MIB, Limits
from lab.stack.services import Service

ROOT = Path(__file__).resolve().parents[2]
SECOND = 1_000_000_000
IMAGE = "10.100.200.200:5000/cdlab/app@sha256:" + "3f9c2e1a" * 8
APP = Service("app", "services/app", 8000)
BOUNDED = dataclasses.replace(APP, limits=Limits(512 * MIB, 100, 1.5), database=True)
CUSTOM = dataclasses.replace(APP, healthcheck="curl -fsS http://127.0.0.1:8000/ready")


@pytest.fixture
def state(tmp_path: Path) -> State:
    topology = json.loads(config.TOPOLOGY.read_text())
    return State(config.parse_topology(topology, ROOT, tmp_path))


def spec_of(state: State, service: Service = APP) -> dict[str, Any]:
    return containers.container_spec(state, Candidate(service, "3f9c2e1a0b1c", IMAGE, None))


class Engine(requests.adapters.BaseAdapter):
    """The engine's side of docker-py's HTTP transport: records each request, answers every
    one with a service ID."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.sent.append(request)
        answer = requests.Response()
        answer.status_code = 201 if request.method == "POST" else 200
        answer._content = b'{"ID": "q8m3w0e5r2t7y4u9i6o1p3a8s"}'
        answer.headers["Content-Type"] = "application/json"
        answer.request, answer.url = request, str(request.url)
        return answer

    def close(self) -> None:
        pass


def sent_to_engine(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The body docker-py's ``services.create(**kwargs)`` posts to an engine of API 1.41."""
    client = docker.DockerClient(base_url="tcp://127.0.0.1:9", version="1.41")
    engine = Engine()
    client.api.mount("http://", engine)
    client.services.create(**kwargs)
    create = [r for r in engine.sent if str(r.url).endswith("/v1.41/services/create")]
    assert len(create) == 1 and create[0].body is not None
    body: dict[str, Any] = json.loads(create[0].body)
    return body


def keys(node: object) -> Iterator[str]:
    """Every key anywhere in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from keys(value)
    elif isinstance(node, list):
        for value in node:
            yield from keys(value)


@pytest.mark.parametrize("service", [APP, BOUNDED, CUSTOM])
@pytest.mark.parametrize("replicas", [1, 3, 8])
def test_a_release_service_is_its_container_spec_replicated(
    state: State, service: Service, replicas: int
) -> None:
    spec = spec_of(state, service)
    kw = swarmspec.service_kwargs(spec, replicas, service.health_timeout)
    assert (kw["name"], kw["image"]) == ("app-3f9c2e1a0b1c", IMAGE)
    assert kw["mode"] == {"replicated": {"Replicas": replicas}}
    assert kw["networks"] == ["cdlab-apps"]
    assert kw["env"] == [f"{k}={v}" for k, v in spec["environment"].items()]
    assert ("DATABASE_URL" in str(kw["env"])) is service.database
    assert (kw["user"], kw["read_only"], kw["cap_drop"]) == ("10001:10001", True, ["ALL"])
    assert (kw["stop_signal"], kw["stop_grace_period"]) == ("SIGTERM", 25 * SECOND)
    assert kw["mounts"] == [
        {"Target": "/tmp", "Source": None, "Type": "tmpfs", "ReadOnly": False,
         "TmpfsOptions": {"SizeBytes": 16 * MIB}}
    ]  # fmt: skip
    assert kw["restart_policy"] == {
        "Condition": "any", "Delay": SECOND, "MaxAttempts": 0, "Window": 0
    }  # fmt: skip
    assert (kw["log_driver"], kw["log_driver_options"]) == ("syslog", spec["log_config"]["config"])


@pytest.mark.parametrize(
    ("service", "limits"),
    [
        (APP, {"MemoryBytes": 256 * MIB, "Pids": 256}),  # no CPU cap: none on the task either
        (BOUNDED, {"MemoryBytes": 512 * MIB, "Pids": 100, "NanoCPUs": 1_500_000_000}),
    ],
)
def test_the_manifests_limits_bound_each_replica(
    state: State, service: Service, limits: dict[str, int]
) -> None:
    kw = swarmspec.service_kwargs(spec_of(state, service), 2, 60)
    assert kw["resources"] == {"Limits": limits}
    body = sent_to_engine(kw)
    assert body["TaskTemplate"]["Resources"] == {"Limits": limits}


@pytest.mark.parametrize(("service", "start"), [(APP, 60), (CUSTOM, 600), (BOUNDED, 1)])
def test_the_healthcheck_runs_every_5_s_is_slow_to_give_up_and_has_the_health_timeout_to_start(
    state: State, service: Service, start: int
) -> None:
    kw = swarmspec.service_kwargs(spec_of(state, service), 3, start)
    assert dict(kw["healthcheck"]) == {
        "Test": ["CMD-SHELL", service.probe],
        "Interval": 5 * SECOND,  # each probe is an exec: every 2 s cost a core of 2
        "Timeout": 10 * SECOND,  # liveness: Swarm stops an unhealthy replica, so slow to say it
        "Retries": 6,
        "StartPeriod": start * SECOND,
    }


@pytest.mark.parametrize("replicas", [1, 3])
def test_the_engine_gets_dnsrr_no_port_spread_and_no_keepalive(state: State, replicas: int) -> None:
    spec = spec_of(state)
    body = sent_to_engine(swarmspec.service_kwargs(spec, replicas, 60))
    template, container = body["TaskTemplate"], body["TaskTemplate"]["ContainerSpec"]
    assert body["Name"] == "app-3f9c2e1a0b1c" and body["Mode"] == {
        "replicated": {"Replicas": replicas}
    }
    assert body["EndpointSpec"] == {"Mode": "dnsrr"}  # a VIP refuses every connection here
    assert not {"Ports", "PublishedPort", "TargetPort"} & set(keys(body))
    assert template["Placement"] == {"Preferences": [{"Spread": {"SpreadDescriptor": "node.id"}}]}
    assert "MaxReplicas" not in set(keys(body))  # a lost node's replica may land anywhere
    assert template["Networks"] == [{"Target": "cdlab-apps"}]
    expected = {k: v for k, v in spec["labels"].items() if k != "cdlab.keepalive"}
    assert set(expected) == {"cdlab.role", "cdlab.service", "cdlab.release", "cdlab.made"}
    assert body["Labels"] == container["Labels"] == expected
    assert "cdlab.keepalive" not in json.dumps(body)
    assert container["CapabilityDrop"] == ["ALL"] and container["ReadOnly"] is True
    assert container["StopGracePeriod"] == 25 * SECOND and container["User"] == "10001:10001"
    assert template["RestartPolicy"]["Condition"] == "any"
    assert template["LogDriver"] == {"Name": "syslog", "Options": spec["log_config"]["config"]}


@pytest.mark.parametrize(
    "extra",
    [
        {"ports": {"8000/tcp": 8000}},
        {"ports": {"8000/tcp": ("127.0.0.1", 8000)}, "publish_all_ports": True},
    ],
)
def test_no_service_ever_publishes_a_port_even_when_its_container_would(
    state: State, extra: dict[str, Any]
) -> None:
    spec = {**spec_of(state), **extra}
    body = sent_to_engine(swarmspec.service_kwargs(spec, 2, 60))
    assert not {"Ports", "PublishedPort", "TargetPort"} & set(keys(body))
    assert set(extra) <= set(swarmspec.unexpressible(spec))  # said, not silently dropped


def test_what_a_release_needs_that_the_service_api_cannot_carry(state: State) -> None:
    found = swarmspec.unexpressible(spec_of(state))
    # a new argument of container_spec lands here first: decide how a service carries it
    assert found == ("memswap_limit", "no-new-privileges")
    assert set(found) <= set(swarmspec.INSTEAD)


@pytest.mark.parametrize(
    ("change", "found"),
    [
        ({}, ("memswap_limit", "no-new-privileges")),
        ({"security_opt": []}, ("memswap_limit",)),
        ({"security_opt": ["no-new-privileges", "seccomp=unconfined"]}, ("memswap_limit",
          "no-new-privileges", "seccomp")),
        ({"tmpfs": {"/tmp": "size=16m,mode=1777"}}, ("memswap_limit", "no-new-privileges")),
        ({"tmpfs": {"/tmp": "size=16m,exec"}}, ("memswap_limit", "no-new-privileges",
          "tmpfs /tmp exec")),
        ({"ulimits": [{"Name": "nofile"}]}, ("memswap_limit", "no-new-privileges", "ulimits")),
    ],
)  # fmt: skip
def test_unexpressible_names_each_option_left_out(
    state: State, change: dict[str, Any], found: tuple[str, ...]
) -> None:
    assert swarmspec.unexpressible({**spec_of(state), **change}) == found


@pytest.mark.parametrize(
    ("policy", "condition", "attempts"),
    [
        ({"Name": "always"}, "any", 0),
        ({"Name": "unless-stopped"}, "any", 0),
        ({"Name": "on-failure", "MaximumRetryCount": 5}, "on-failure", 5),
        ({"Name": "no"}, "none", 0),
    ],
)
def test_the_restart_policy_becomes_swarms(
    state: State, policy: dict[str, Any], condition: str, attempts: int
) -> None:
    kw = swarmspec.service_kwargs({**spec_of(state), "restart_policy": policy}, 1, 60)
    assert (kw["restart_policy"]["Condition"], kw["restart_policy"]["MaxAttempts"]) == (
        condition,
        attempts,
    )


@pytest.mark.parametrize(
    ("tmpfs", "mounts"),
    [
        ({"/tmp": "size=16m"}, [("/tmp", {"SizeBytes": 16 * MIB})]),
        ({"/tmp": "size=1g,mode=1777"}, [("/tmp", {"SizeBytes": 1024 * MIB, "Mode": 0o1777})]),
        ({"/tmp": "size=16m", "/run": "mode=755"}, [("/tmp", {"SizeBytes": 16 * MIB}),
                                                    ("/run", {"Mode": 0o755})]),
    ],
)  # fmt: skip
def test_each_tmpfs_becomes_a_tmpfs_mount(
    state: State, tmpfs: dict[str, str], mounts: list[tuple[str, dict[str, int]]]
) -> None:
    kw = swarmspec.service_kwargs({**spec_of(state), "tmpfs": tmpfs}, 1, 60)
    assert [(m["Target"], m["Type"], m["TmpfsOptions"]) for m in kw["mounts"]] == [
        (path, "tmpfs", options) for path, options in mounts
    ]


def test_a_release_service_runs_at_least_one_replica(state: State) -> None:
    with pytest.raises(ValueError, match="at least one replica"):
        swarmspec.service_kwargs(spec_of(state), 0, 60)
