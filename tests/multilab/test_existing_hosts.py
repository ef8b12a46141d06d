"""A lab whose prod is two machines cdlab did not create ("existing": true in the topology):
prod, the swarm's manager, and prod-2, a worker. Here they are containers started outside
Vagrant from the lab's host image, each made a cdlab host the way a team's VM is: its bundle
from ``invoke lab.bundle`` unpacked and ``install-host.sh`` run as root.

What it shows: ``lab.up`` refuses, before creating anything, while their engines do not answer,
and says how to install them; once installed, the whole lab comes up over them (the stack on
prod, the current commit deployed with a replica on each of the two), twice; what cdlab cannot do
to a machine it did not make is refused; ``lab.destroy`` takes back what cdlab put there and
leaves the machines and their engines running. About 8 minutes, beside the default lab (or
alone): ``invoke test --suite multilab``."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import config, testing
from tests.multilab.test_named_labs import served

ROOT = Path(__file__).resolve().parents[2]
NAME = "cdlab-exist"
SUBNET = "10.100.220"
MACHINES = {"prod": "201", "prod-2": "204"}  # the existing ones, by their last octet


def topology() -> dict[str, Any]:
    """The default topology as a lab of its own (name, subnet, ports + 1100) whose prod and
    one swarm worker are existing machines; no dev host (nothing here pushes from it)."""
    data: dict[str, Any] = json.loads(config.TOPOLOGY.read_text())
    data["name"] = data["network"]["name"] = NAME
    data["network"]["subnet"] = f"{SUBNET}.0/24"
    data["network"]["gateway"] = f"{SUBNET}.1"
    hosts = []
    for h in data["hosts"]:
        if h["name"] == "dev":
            continue
        h["address"] = f"{SUBNET}." + h["address"].rsplit(".", 1)[1]
        h["publish"] = [config.shifted(p, 1100) for p in h["publish"]]
        if h["name"] == "prod":
            h.update(swarm="manager", existing=True, publish=[])
        hosts.append(h)
    hosts.append(
        {
            "name": "prod-2",
            "address": f"{SUBNET}.{MACHINES['prod-2']}",
            "role": "engine",
            "project_mount": False,
            "swarm": "worker",
            "existing": True,
        }
    )
    data["hosts"] = hosts
    return data


class Lab:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.env = {"CDLAB_TOPOLOGY": str(state / "topology.json"), "CDLAB_STATE_DIR": str(state)}

    def cdlab(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        invoke = str(ROOT / ".venv" / "bin" / "invoke")
        return testing.run_on_lab([invoke, *args], self.env, timeout)


def docker(*args: str, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 or not check, f"docker {' '.join(args)}: {done.stderr[-2000:]}"
    return done.stdout.strip()


def machine(name: str) -> str:
    return f"{NAME}-machine-{name}"  # not a lab host's name: cdlab does not know it


def start_machine(name: str, image: str) -> None:
    """A Debian machine with Docker installed but no engine running: the lab's host image
    asleep, with what docker-in-docker needs (as the Vagrantfile gives a host it creates)."""
    docker(
        *("run", "-d", "--name", machine(name), "--hostname", name, "--init"),
        *("--network", NAME, "--ip", f"{SUBNET}.{MACHINES[name]}"),
        *("--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE"),
        *("--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined"),
        *("--security-opt", "systempaths=unconfined", "--cgroupns", "host"),
        *("-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--device-cgroup-rule", "a *:* rwm"),
        *("--tmpfs", "/run:rw,exec,nosuid,nodev,mode=755", "-v", "/var/lib/docker"),
        *(image, "sleep", "infinity"),
    )


def host_image(lab: Lab) -> str:
    """The lab's host image (a Debian machine with Docker installed), built if missing: what
    the machines start from."""
    from lab.estate import images
    from lab.estate.state import State
    from lab.ports import engines

    state = State(config.load(ROOT, lab.env))
    imgs = images.Images(state.config, engines.local(), state.logs, state.dir / "cache")
    base, _ = imgs.ensure_base(images.read_base_inputs())
    return imgs.ensure_host(base)[0].ref


def on_machine(name: str, script: str, check: bool = True) -> str:
    return docker("exec", machine(name), "sh", "-c", script, check=check)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.fixture
def lab() -> Iterator[Lab]:
    state = ROOT / ".lab" / "existing-test"
    state.mkdir(parents=True, exist_ok=True)
    (state / "topology.json").write_text(json.dumps(topology(), indent=2) + "\n")
    lab = Lab(state)
    try:
        yield lab
    finally:
        for name in MACHINES:
            docker("rm", "-f", "-v", machine(name), check=False)
        gone = lab.cdlab("lab.destroy")
        assert gone.returncode == 0, gone.stdout[-2000:] + gone.stderr[-2000:]


def test_a_prod_of_existing_machines_comes_up_serves_and_is_given_back(
    lab: Lab, tmp_path: Path
) -> None:
    prod = f"{SUBNET}.{MACHINES['prod']}"
    # 1. their engines do not answer yet: refused before anything is built or created
    first = lab.cdlab("lab.up", timeout=300)
    said = first.stdout + first.stderr
    assert first.returncode != 0, said[-2000:]
    assert "'prod' is an existing machine" in said and "invoke lab.bundle --host prod" in said
    assert not docker("ps", "-aq", "--filter", f"label=cdlab.lab={NAME}"), "a host was created"

    # 2. each machine made a cdlab host from its bundle, as on a team's VM
    image = host_image(lab)
    for name in MACHINES:
        made = ok(lab.cdlab("lab.bundle", "--host", name, "--out", str(tmp_path)))
        assert "mode 0600" in made
        tarball = tmp_path / f"{name}.tar.gz"
        assert tarball.stat().st_mode & 0o777 == 0o600
        start_machine(name, image)
        docker("cp", str(tarball), f"{machine(name)}:/root/")
        out = on_machine(name, f"cd /root && tar xzf {name}.tar.gz && sh {name}/install-host.sh")
        assert f"{name} ready" in out, out
    # installed again (a new bundle's way): the host it started is stopped and started anew
    again = on_machine("prod-2", "cd /root && sh prod-2/install-host.sh 2>&1")
    assert "prod-2 ready" in again, again
    refused = lab.cdlab("lab.bundle", "--host", "cd")
    assert refused.returncode != 0 and "existing machine" in refused.stderr, refused.stderr

    # 3. the lab comes up over them: stack on prod, the commit live, a replica on each
    up = ok(lab.cdlab("lab.up", timeout=1500))
    assert "existing machines' engines answer" in up and "prod's swarm (2 nodes)" in up, up[-3000:]
    live = served(8000, prod)
    assert len(live) == 12, f"prod does not serve at {prod}:8000: {live}"
    rows = {r["name"]: r for r in json.loads(ok(lab.cdlab("lab.status", "--json")))}
    for name, role in (("prod", "manager"), ("prod-2", "worker")):
        assert rows[name]["state"] == "existing", rows[name]
        assert rows[name]["swarm"] == f"{role} ready", rows[name]
        assert sum((rows[name]["replicas"] or {}).values()) >= 1, rows[name]
    mine = ("--filter", f"label=cdlab.lab={NAME}")
    assert not docker("ps", "-aq", *mine, "--filter", "label=cdlab.host=prod"), "prod created"

    # 4. again: nothing to do, the same release served
    again = ok(lab.cdlab("lab.up", timeout=900))
    assert "prod: " not in again.split("hosts (vagrant")[1].split("\n")[0], again[-2000:]
    assert served(8000, prod) == live

    # 5. what cdlab cannot do to a machine it did not make is refused, and changes nothing
    restart = lab.cdlab("lab.restart-workers")
    assert restart.returncode != 0 and "restarted by its owner" in restart.stderr, restart.stderr
    shell = lab.cdlab("lab.shell", "--host", "prod-2")
    assert shell.returncode != 0 and "ssh" in shell.stderr, shell.stderr
    assert served(8000, prod) == live

    # 6. destroy gives them back: out of the swarm, nothing of cdlab's left, engines running
    gone = ok(lab.cdlab("lab.destroy"))
    assert "take back what cdlab put on the existing machines" in gone, gone[-2000:]
    # here the machines sit on the lab's network: it is kept for them, and said
    assert f"kept network {NAME} (still used by {machine('prod')}, " in gone, gone[-2000:]
    for name in MACHINES:
        assert on_machine(name, "docker info --format '{{.Swarm.LocalNodeState}}'") == "inactive"
        assert on_machine(name, "docker ps -aq") == "", f"containers left on {name}"
        nets = on_machine(name, "docker network ls --format '{{.Name}}'").split()
        assert not {"cdlab", "cdlab-apps"} & set(nets), nets
