from __future__ import annotations

import datetime as dt
import json
import os
import stat
from pathlib import Path

import pytest

from lab import config
from lab.estate import pki

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
CFG = config.parse_topology(json.loads(config.TOPOLOGY.read_text()), Path("/p"), Path("/p/.lab"))
ISSUED = 1 + 1 + len(CFG.engine_hosts) + 1  # the CA, the registry's, each engine's, the client's


def test_plan_covers_registry_each_engine_and_one_client() -> None:
    specs = {s.name: s for s in pki.plan(CFG)}
    engines = {"engine-prod", "engine-cd", "engine-dev", "engine-prod-2", "engine-prod-3"}
    assert set(specs) == {"registry", *engines, "client"}
    assert len(specs) == ISSUED - 1  # the CA is not in the plan
    assert specs["registry"].ips == ("10.100.200.200", "127.0.0.1")
    assert specs["engine-prod"].ips == ("10.100.200.201", "127.0.0.1")
    assert specs["engine-prod"].usage == "server"
    assert specs["engine-prod-2"].ips == ("10.100.200.204", "127.0.0.1")  # a swarm worker
    assert specs["client"].usage == "client" and specs["client"].ips == ()


SPEC = pki.CertSpec("engine-prod", "cdlab-prod", "server", ("10.100.200.201",), ("prod",))
GOOD = pki.CertFacts("cdlab-prod", ("10.100.200.201",), ("prod",), b"ca", NOW + dt.timedelta(300))


@pytest.mark.parametrize(
    ("facts", "why"),
    [
        (None, "missing"),
        (GOOD, ""),
        (
            pki.CertFacts("cdlab-prod", GOOD.ips, GOOD.dns, b"other", GOOD.not_after),
            "signed by another CA",
        ),
        (pki.CertFacts("x", GOOD.ips, GOOD.dns, b"ca", GOOD.not_after), "different name"),
        (
            pki.CertFacts("cdlab-prod", ("10.0.0.9",), GOOD.dns, b"ca", GOOD.not_after),
            "different addresses",
        ),
        (
            pki.CertFacts("cdlab-prod", GOOD.ips, GOOD.dns, b"ca", NOW + dt.timedelta(days=3)),
            "expires soon",
        ),
    ],
)
def test_needs_issue(facts: pki.CertFacts | None, why: str) -> None:
    assert pki.needs_issue(SPEC, facts, b"ca", NOW) == why


def test_ensure_issues_once_then_nothing_and_keeps_keys_private(tmp_path: Path) -> None:
    store = pki.Pki(tmp_path / "pki")
    first = store.ensure(pki.plan(CFG))
    assert first[0] == "ca" and len(first) == ISSUED
    assert store.ensure(pki.plan(CFG)) == []
    assert stat.S_IMODE(os.stat(store.dir).st_mode) == 0o700
    for spec in pki.plan(CFG):
        assert stat.S_IMODE(os.stat(store.key(spec.name)).st_mode) == 0o600
    facts = pki.read_facts(store.cert("engine-cd").read_bytes())
    assert facts.ips == ("10.100.200.202", "127.0.0.1") and facts.common_name == "cdlab-cd"


def test_a_new_ca_reissues_every_certificate(tmp_path: Path) -> None:
    store = pki.Pki(tmp_path / "pki")
    store.ensure(pki.plan(CFG))
    store.ca_key.unlink()
    again = store.ensure(pki.plan(CFG))
    assert again[0] == "ca"
    assert all("signed by another CA" in item for item in again[1:]) and len(again) == ISSUED
