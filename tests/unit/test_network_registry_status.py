from __future__ import annotations

import bcrypt
import pytest

from lab.estate import lifecycle, network
from lab.ports import registry

ROUTES = """\
default via 10.0.0.1 dev eth0
10.0.0.0/24 dev eth0 proto kernel scope link src 10.0.0.5
172.17.0.0/16 dev docker0 proto kernel scope link src 172.17.0.1 linkdown
"""


def test_parse_routes_skips_the_default_route() -> None:
    assert network.parse_routes(ROUTES) == [
        network.Claim("route via eth0", "10.0.0.0/24"),
        network.Claim("route via docker0", "172.17.0.0/16"),
    ]


@pytest.mark.parametrize(
    ("cidr", "overlaps"),
    [
        ("10.100.200.0/24", True),
        ("10.100.0.0/16", True),
        ("10.100.200.128/25", True),
        ("10.100.201.0/24", False),
        ("172.17.0.0/16", False),
        ("0.0.0.0/0", False),
        ("fd00::/64", False),
        ("not-a-cidr", False),
    ],
)
def test_conflicts(cidr: str, overlaps: bool) -> None:
    got = network.conflicts("10.100.200.0/24", [network.Claim("x", cidr)])
    assert bool(got) is overlaps


def test_registry_config_uses_tls_and_htpasswd_from_the_bundle() -> None:
    text = registry.render_config(5000)
    assert "addr: 0.0.0.0:5000" in text
    assert "certificate: /etc/cdlab/cert.pem" in text
    assert "path: /etc/cdlab/htpasswd" in text


def test_htpasswd_is_bcrypt_and_verifiable() -> None:
    line = registry.htpasswd_line("cdlab", "s3cret")
    assert line.startswith("cdlab:$2")
    assert registry.htpasswd_matches(line, "cdlab", "s3cret")
    assert not registry.htpasswd_matches(line, "cdlab", "wrong")
    assert not registry.htpasswd_matches("", "cdlab", "s3cret")


def test_an_htpasswd_entry_at_another_cost_is_rewritten() -> None:
    """An older lab's entry (cost 10) no longer matches, so ``lab.up`` writes a cheap one."""
    old = "cdlab:" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=10)).decode()
    assert not registry.htpasswd_matches(old, "cdlab", "s3cret")
    assert registry.htpasswd_line("cdlab", "s3cret").startswith(
        f"cdlab:$2b${registry.BCRYPT_ROUNDS:02d}$"
    )


def test_status_table_aligns_columns_and_shows_missing_counts_as_dash() -> None:
    rows = [
        lifecycle.HostStatus(
            "registry", "10.100.200.200", "registry", "running", "registry HTTP 200", None
        ),
        lifecycle.HostStatus("prod", "10.100.200.201", "engine", "running", "20.10.24", 3),
    ]
    lines = lifecycle.render_status(rows).splitlines()
    assert lines[0].split() == ["HOST", "ADDRESS", "ROLE", "STATE", "ENGINE", "CONTAINERS"]
    assert lines[1].endswith("-") and lines[2].endswith("3")
    assert lines[1].index("10.100") == lines[2].index("10.100")


def test_summarize_state_is_one_short_line() -> None:
    changed = [
        "ca",
        "registry (missing)",
        "client (missing)",
        "registry password",
        "registry: ca.pem",
        "prod: cert.pem",
        "prod: key.pem",
    ]
    assert lifecycle.summarize_state(changed) == (
        "new lab CA; 2 certificate(s) issued; registry password; bundles for prod, registry"
    )


def test_a_taken_published_port_is_refused_with_the_next_step() -> None:
    import dataclasses
    import json
    import socket
    from pathlib import Path

    from lab import config
    from lab.errors import PreflightError

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        cfg = config.parse_topology(
            json.loads(config.TOPOLOGY.read_text()), Path("/p"), Path("/p/.lab")
        )
        prod = dataclasses.replace(cfg.host("prod"), publish=(f"127.0.0.1:{port}:8000",))
        cfg = dataclasses.replace(cfg, hosts=(prod,))
        with pytest.raises(PreflightError) as err:
            network.check_ports(cfg, {}, {"prod"})
        assert f"port 127.0.0.1:{port}" in str(err.value) and "Next step:" in str(err.value)
        network.check_ports(cfg, {}, set())  # a host that is not starting is not checked


@pytest.mark.parametrize(
    ("spec", "ports"),
    [("127.0.0.1:8082:8082", [8082]), ("127.0.0.1:8000-8002:8000-8002", [8000, 8001, 8002])],
)
def test_published_port_ranges(spec: str, ports: list[int]) -> None:
    assert list(network.published_ports(spec)) == ports


def test_status_shows_each_swarm_node_when_prod_is_a_cluster() -> None:
    rows = [
        lifecycle.HostStatus("registry", "10.100.200.200", "registry", "running", "HTTP 200", None),
        lifecycle.HostStatus(
            "prod",
            "10.100.200.201",
            "engine",
            "running",
            "20.10.24",
            8,
            "manager ready",
            {"app-3f9c2e1a0b1c": 1, "quotes-5d1e0c9b8a7f": 1},
        ),
        lifecycle.HostStatus(
            "prod-2", "10.100.200.204", "engine", "running", "20.10.24", 0, "worker down"
        ),
    ]
    lines = lifecycle.render_status(rows).splitlines()
    assert lines[0].split()[-2:] == ["SWARM", "REPLICAS"]
    assert lines[1].endswith("-") and lines[2].endswith("manager ready  2")
    assert lines[3].endswith("worker down    -")
