"""The control plane is out of a release's reach, and still in the operator's.

From inside a running release container on prod, each way to move traffic or read the lab's
state is refused: a route write to etcd, a Runtime API command, a connection to cd (a push),
to an engine or to the registry, and any of the lab's key files. The same calls from the
workstation (and from cd's runner credentials) work; without a control-plane certificate, or
with the lab's engine certificate (another CA), etcd and the Runtime API refuse them.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import uuid
from typing import Any

import pytest
import requests

from lab.estate.state import State
from lab.ports import engines
from lab.ports.lab import Lab
from lab.release import api as release
from lab.release import devloop

pytestmark = pytest.mark.xdist_group("prod")  # it execs into the live release: none replaces it

# What a process inside a release tries: every attempt's outcome as JSON ("ok: ..." when it got
# through). Bounded: each connection waits at most 2 s.
ATTEMPTS = r"""
import json, os, socket, ssl, sys, urllib.request
targets = json.loads(sys.argv[1])
out = {}
def tcp(host, port):
    try:
        socket.create_connection((host, port), 2).close()
        return "ok: connected"
    except OSError as exc:
        return f"refused: {type(exc).__name__}: {exc}"
for label, (host, port) in targets["tcp"].items():
    out[label] = tcp(host, port)
ctx = ssl.create_default_context()
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
for label, url in targets["http"].items():
    body = json.dumps({"key": "L2NkbGFiL3JvdXRlcy9hcHA=", "value": "e30="}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=2, context=ctx) as resp:
            out[label] = f"ok: HTTP {resp.status}"
    except Exception as exc:
        out[label] = f"refused: {type(exc).__name__}: {exc}"
found = []
for top in ("/etc", "/var", "/home", "/root", "/opt", "/srv", "/tmp", "/run", "/usr/local"):
    for dirpath, _, files in os.walk(top):
        for f in files:
            path = os.path.join(dirpath, f)
            try:
                with open(path, "rb") as fh:
                    head = fh.read(65536)
            except OSError:
                continue
            if b"PRIVATE KEY-----" in head or path.startswith("/etc/cdlab"):
                found.append(path)
out["key files"] = "ok: " + ", ".join(found[:5]) if found else "refused: none readable"
print(json.dumps(out))
"""


def _inside_release(lab: State, service: str, targets: dict[str, Any]) -> dict[str, str]:
    live = release.current_routes(lab, service).live
    assert live, f"{service} has no live release"
    with engines.connect(lab, lab.config.host("prod")) as prod:
        (container,) = prod.containers.list(
            filters={"label": [f"cdlab.service={service}", f"cdlab.release={live}"]}
        )
        code, out = container.exec_run(["python3", "-c", ATTEMPTS, json.dumps(targets)])
    assert code == 0, out.decode(errors="replace")
    doc: dict[str, str] = json.loads(out.decode().strip().splitlines()[-1])
    return doc


def test_a_release_reaches_no_part_of_the_control_plane(lab: State) -> None:
    prod = lab.config.host("prod").address
    cd = lab.config.builder.address
    routes_before = release.current_routes(lab, "app")
    targets = {
        "tcp": {
            "Runtime API by the proxy's name": ["proxy", 9999],
            "Runtime API on prod's address": [prod, 9999],
            "proxy's own page by its name": ["proxy", 8404],
            "proxy's own page on prod's address": [prod, 8404],
            "etcd on prod's address": [prod, 2379],
            "prod's engine": [prod, 2376],
            "cd's git daemon (push)": [cd, 9418],
            "cd's ssh (push)": [cd, 22],
            "cd's engine": [cd, 2376],
            "the registry": [lab.config.registry.address, lab.config.registry_port],
        },
        "http": {
            "route write to etcd by name": "https://etcd:2379/v3/kv/put",
            "route write to etcd on prod": f"https://{prod}:2379/v3/kv/put",
            "route write to etcd over plain HTTP": f"http://{prod}:2379/v3/kv/put",
        },
    }
    seen = _inside_release(lab, "app", targets)
    through = {k: v for k, v in seen.items() if v.startswith("ok")}
    assert through == {}, json.dumps(seen, indent=2)
    assert len(seen) == len(targets["tcp"]) + len(targets["http"]) + 1
    # what a release needs is still there: its frontends through the proxy, and the database
    needs = _inside_release(
        lab, "app", {"tcp": {"proxy": ["proxy", 8000], "db": ["db", 5432]}, "http": {}}
    )
    assert needs["proxy"].startswith("ok") and needs["db"].startswith("ok"), needs
    assert release.current_routes(lab, "app") == routes_before


def test_the_operator_reaches_etcd_and_the_runtime_api_with_its_certificate(lab: State) -> None:
    ops = Lab(lab)
    key = f"/cdlab/test/control-plane-{uuid.uuid4().hex[:8]}"
    ops.etcd.put(key, b"operator")
    try:
        assert ops.etcd.get(key) == b"operator"
    finally:
        ops.etcd.delete(key)
    assert "app" in ops.runtime.send("show cdlab")
    # and the proxy's own page, on prod's address (what a release cannot reach)
    prod = lab.config.host("prod").address
    assert requests.get(f"http://{prod}:8404/healthz", timeout=5).ok


def _plain_or_wrong_ca_refused(lab: State, port: int, cert: tuple[str, str] | None) -> str:
    prod = lab.config.host("prod").address
    ctx = ssl.create_default_context(cafile=str(lab.control_pki.ca_cert))
    if cert:
        ctx.load_cert_chain(*cert)
    try:
        with (
            socket.create_connection((prod, port), 3) as raw,
            ctx.wrap_socket(raw, server_hostname=prod) as sock,
        ):
            sock.sendall(b"show cdlab\n" if port == 9999 else b"GET /version HTTP/1.0\r\n\r\n")
            data = sock.recv(4096)
    except (OSError, ssl.SSLError) as exc:
        return f"refused: {type(exc).__name__}"
    return f"answered: {data[:60]!r}" if data else "refused: closed"


@pytest.mark.parametrize("port", [2379, 9999], ids=["etcd", "runtime-api"])
def test_without_a_control_plane_certificate_etcd_and_the_runtime_api_refuse(
    lab: State, port: int
) -> None:
    _, cert, key = lab.client_tls()  # the engines' client certificate: another CA
    assert _plain_or_wrong_ca_refused(lab, port, None).startswith("refused")
    assert _plain_or_wrong_ca_refused(lab, port, (str(cert), str(key))).startswith("refused")
    plain = requests.Session()
    plain.trust_env = False
    with pytest.raises(requests.RequestException):
        plain.post(f"http://{lab.config.host('prod').address}:{port}/v3/kv/range", timeout=3)


def test_cd_runner_reaches_etcd_with_its_own_copy_of_the_certificate(lab: State) -> None:
    cd = lab.config.container_name(lab.config.builder)
    prod = lab.config.host("prod").address
    runner = "/etc/cdlab/runner/pki-control"
    read = (
        f"curl -sS --max-time 5 --cacert {runner}/ca.pem --cert {runner}/operator.pem "
        f'--key {runner}/operator-key.pem -X POST -d \'{{"key": "L2NkbGFi"}}\' '
        f"https://{prod}:2379/v3/kv/range"
    )
    ok = subprocess.run(["docker", "exec", cd, "sh", "-c", read], capture_output=True, text=True)
    assert ok.returncode == 0 and '"header"' in ok.stdout, ok.stdout + ok.stderr
    anonymous = subprocess.run(
        [
            "docker",
            "exec",
            cd,
            "sh",
            "-c",
            read.split(" --cert")[0] + f" -X POST -d '{{}}' https://{prod}:2379/v3/kv/range",
        ],
        capture_output=True,
        text=True,
    )
    assert anonymous.returncode != 0, anonymous.stdout


def _on_dev(lab: State, script: str) -> subprocess.CompletedProcess[str]:
    dev = lab.config.container_name(lab.config.host("dev"))
    return subprocess.run(
        ["docker", "exec", dev, "sh", "-c", script], capture_output=True, text=True, timeout=60
    )


def test_only_the_pushers_key_reaches_cds_repository_and_only_for_git(lab: State) -> None:
    cd = lab.config.builder.address
    url = devloop.remote_url(lab.config)
    with_key = _on_dev(lab, f"git ls-remote {url}")
    assert with_key.returncode == 0, with_key.stderr
    no_key = _on_dev(
        lab,
        "GIT_SSH_COMMAND='ssh -F /dev/null -o IdentitiesOnly=yes -i /dev/null -o BatchMode=yes "
        f"-o UserKnownHostsFile=/root/.ssh/known_hosts' git ls-remote {url}",
    )
    assert no_key.returncode != 0 and "Permission denied" in no_key.stderr, no_key.stderr
    shell = _on_dev(lab, f"ssh root@{cd} id")
    assert shell.returncode != 0 and "uid=" not in shell.stdout, shell.stdout + shell.stderr
    daemon = _on_dev(lab, f"timeout 10 git ls-remote git://{cd}:9418/cdlab.git")
    assert daemon.returncode != 0, daemon.stdout  # no anonymous git daemon any more
