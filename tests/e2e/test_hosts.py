"""The four hosts, their engines (mutual TLS) and the registry (TLS + htpasswd), from outside."""

from __future__ import annotations

import datetime as dt
import ssl
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests
from docker.tls import TLSConfig

from lab import config as lab_config
from lab.estate import pki
from lab.estate.state import State
from lab.ports import engines
from lab.ports.registry import RegistryClient

ALL = [h.name for h in lab_config.load().hosts]
ENGINES = [h.name for h in lab_config.load().engine_hosts]
WITH_PROJECT = [h.name for h in lab_config.load().hosts if h.project_mount]
WITHOUT_PROJECT = [h.name for h in lab_config.load().hosts if not h.project_mount]


@pytest.mark.parametrize("name", ALL)
def test_each_host_has_its_address_on_the_lab_network(
    lab: State, testinfra_host: Callable[[str], Any], name: str
) -> None:
    host = testinfra_host(name)
    addresses = host.check_output("ip -4 -o addr show")
    assert f"inet {lab.config.host(name).address}/24" in addresses
    assert host.check_output("hostname") == name


@pytest.mark.parametrize("name", ENGINES)
def test_engine_listens_with_tls_on_2376_and_nothing_on_2375(
    testinfra_host: Callable[[str], Any], name: str
) -> None:
    host = testinfra_host(name)
    assert host.socket("tcp://0.0.0.0:2376").is_listening
    assert not host.socket("tcp://2375").is_listening
    dockerd = host.process.get(comm="dockerd")
    assert "--tlsverify" in dockerd.args


@pytest.mark.parametrize("name", ENGINES)
def test_run_is_a_tmpfs_so_a_host_boots_after_its_engine_was_killed(
    testinfra_host: Callable[[str], Any], name: str
) -> None:
    host = testinfra_host(name)
    assert host.mount_point("/run").filesystem == "tmpfs"
    assert host.file("/var/run/docker.pid").exists  # the engine's pid file is on it


@pytest.mark.parametrize("engine", ENGINES, indirect=True)
def test_engine_answers_over_mutual_tls(engine: Any) -> None:
    info = engine.info()
    assert info["Driver"] == "overlay2"
    assert info["Name"] in ENGINES


def _client(lab: State, name: str, tls: TLSConfig) -> Any:
    url = engines.url(lab.config, lab.config.host(name)).replace("tcp://", "https://")
    c = docker.DockerClient(base_url=url, tls=tls, timeout=10, version=engines.API_VERSION)
    c.api.trust_env = False
    return c


@pytest.mark.parametrize("name", ENGINES)
def test_engine_refuses_a_client_without_a_certificate(lab: State, name: str) -> None:
    client = _client(lab, name, TLSConfig(ca_cert=str(lab.pki.ca_cert), verify=True))
    with pytest.raises(
        (requests.exceptions.SSLError, requests.exceptions.ConnectionError, docker.errors.APIError)
    ):
        client.version()


def test_engine_refuses_a_certificate_from_another_ca(lab: State, tmp_path: Path) -> None:
    other = pki.Pki(tmp_path / "other")
    other.ensure([pki.CertSpec("client", "intruder", "client")], now=dt.datetime.now(dt.UTC))
    tls = TLSConfig(
        client_cert=(str(other.cert("client")), str(other.key("client"))),
        ca_cert=str(lab.pki.ca_cert),
        verify=True,
    )
    with pytest.raises(
        (requests.exceptions.SSLError, requests.exceptions.ConnectionError, ssl.SSLError)
    ):
        _client(lab, "prod", tls).version()


def _registry(lab: State, authenticated: bool = True) -> RegistryClient:
    creds = lab.credentials() if authenticated else None
    return RegistryClient(lab.config.registry_addr, lab.pki.ca_cert, creds)


def test_registry_lists_the_base_image_to_an_authenticated_client(lab: State) -> None:
    base = (lab.dir / "base-image").read_text().strip()
    repository, tag = base.rsplit(":", 1)
    assert repository in _registry(lab).catalog()
    assert tag in _registry(lab).tags(repository)


def test_registry_answers_401_without_or_with_wrong_credentials(lab: State) -> None:
    url = f"https://{lab.config.registry_addr}/v2/_catalog"
    s = requests.Session()
    s.trust_env = False
    assert s.get(url, verify=str(lab.pki.ca_cert), timeout=5).status_code == 401
    bad = s.get(url, auth=("cdlab", "wrong"), verify=str(lab.pki.ca_cert), timeout=5)
    assert bad.status_code == 401


def test_registry_serves_only_tls_signed_by_the_lab_ca(lab: State) -> None:
    s = requests.Session()
    s.trust_env = False
    with pytest.raises(requests.exceptions.SSLError):
        s.get(f"https://{lab.config.registry_addr}/v2/", verify=True, timeout=5)


@pytest.mark.parametrize("engine", ["prod"], indirect=True)
def test_prod_pulls_from_the_registry_and_a_push_without_credentials_fails(
    lab: State, engine: Any
) -> None:
    base = f"{lab.config.registry_addr}/{(lab.dir / 'base-image').read_text().strip()}"
    image = engine.images.pull(base, auth_config=lab.credentials().auth_config())
    target = f"{lab.config.registry_addr}/cdlab/anonymous-push-{uuid.uuid4().hex[:8]}"
    image.tag(target, "x")
    try:
        out = list(engine.images.push(target, tag="x", stream=True, decode=True))
        errors = [line["error"] for line in out if "error" in line]
        assert errors, f"an anonymous push was accepted: {out[-3:]}"
        assert "basic auth" in errors[0] or "unauthorized" in errors[0].lower()
        assert target.split("/", 1)[1] not in _registry(lab).catalog()
    finally:
        engine.images.remove(f"{target}:x")


@pytest.mark.parametrize("name", ENGINES)
def test_every_engine_trusts_the_lab_ca(
    lab: State, testinfra_host: Callable[[str], Any], name: str
) -> None:
    host = testinfra_host(name)
    assert host.file(f"/etc/docker/certs.d/{lab.config.registry_addr}/ca.crt").exists
    status = host.check_output(
        f"curl -s -o /dev/null -w '%{{http_code}}' https://{lab.config.registry_addr}/v2/"
    )
    assert status == "401"  # TLS verified against the system store, which holds the lab CA


@pytest.mark.parametrize("name", WITH_PROJECT)
def test_project_is_mounted_read_only_and_lab_secrets_are_hidden(
    testinfra_host: Callable[[str], Any], name: str
) -> None:
    host = testinfra_host(name)
    assert host.file("/vagrant/Vagrantfile").exists
    assert host.run("touch /vagrant/.cdlab-write-test").rc != 0
    assert not host.file("/vagrant/.lab/pki/ca-key.pem").exists


@pytest.mark.parametrize("name", WITHOUT_PROJECT)
def test_hosts_without_the_project_do_not_see_it(
    testinfra_host: Callable[[str], Any], name: str
) -> None:
    assert not testinfra_host(name).file("/vagrant").exists


def test_registry_host_runs_the_distribution_registry(testinfra_host: Callable[[str], Any]) -> None:
    host = testinfra_host("registry")
    proc = host.process.get(comm="docker-registry")
    assert "serve" in proc.args
    assert host.socket("tcp://0.0.0.0:5000").is_listening
    assert host.file("/etc/cdlab/key.pem").mode == 0o600
