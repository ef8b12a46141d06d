"""The lab's certificate authority: a plan of certificates (pure) and their issuance.

One CA per checkout, created at the first ``lab.up``. It signs the registry's server certificate,
each engine host's server certificate (mutual TLS on port 2376) and one client certificate for
the lab's own tooling. Keys are written 0600 inside the 0700 state dir.

A second CA, the control plane's (``control_plan``), signs only what speaks to the route store
(etcd) and the proxy's Runtime API: their server certificates, the proxy's client certificate
and the operator's (the workstation and cd's runner). Engines do not trust it, so the proxy's
key drives no engine, and the lab client's key alone opens no route store.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.config import LabConfig

VALID_DAYS = 825
RENEW_BEFORE_DAYS = 30


@dataclass(frozen=True)
class CertSpec:
    """One certificate the lab needs: who it names and what it may do."""

    name: str  # file stem in the pki dir
    common_name: str
    usage: str  # "server", "client" or "server+client"
    ips: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()


@dataclass(frozen=True)
class CertFacts:
    """What an existing certificate on disk says about itself."""

    common_name: str
    ips: tuple[str, ...]
    dns: tuple[str, ...]
    issuer_key_id: bytes
    not_after: dt.datetime


def plan(config: LabConfig) -> tuple[CertSpec, ...]:
    """Every certificate the topology needs (the CA itself excepted)."""
    specs = [
        CertSpec(
            "registry",
            f"{config.name}-registry",
            "server",
            (config.registry.address, "127.0.0.1"),
            ("registry", "localhost"),
        )
    ]
    for host in config.engine_hosts:
        specs.append(
            CertSpec(
                f"engine-{host.name}",
                f"{config.name}-{host.name}",
                "server",
                (host.address, "127.0.0.1"),
                (host.name, "localhost"),
            )
        )
    specs.append(CertSpec("client", f"{config.name}-client", "client"))
    return tuple(specs)


def control_plan(config: LabConfig) -> tuple[CertSpec, ...]:
    """The control plane's certificates (signed by its own CA): etcd's and the Runtime API's
    server certificates, valid for prod's address and their names on the stack network; the
    proxy supervisor's client certificate (etcd); the operator's (etcd and the Runtime API)."""
    # a lab without prod (no stack) still gets them, for 127.0.0.1 only
    ips = (*(h.address for h in config.hosts if h.name == "prod"), "127.0.0.1")
    return (
        # etcd's own JSON gateway dials etcd with this certificate: it is a client too
        CertSpec(
            "etcd",
            f"{config.name}-etcd",
            "server+client",
            ips,
            ("etcd", "localhost"),
        ),
        CertSpec(
            "runtime",
            f"{config.name}-runtime",
            "server",
            ips,
            ("proxy", "proxy-control", "localhost"),
        ),
        CertSpec("proxy", f"{config.name}-proxy", "client"),
        CertSpec("operator", f"{config.name}-operator", "client"),
    )


def needs_issue(spec: CertSpec, facts: CertFacts | None, ca_key_id: bytes, now: dt.datetime) -> str:
    """Why ``spec`` must be (re)issued, or "" when the certificate on disk still fits."""
    if facts is None:
        return "missing"
    if facts.issuer_key_id != ca_key_id:
        return "signed by another CA"
    if facts.common_name != spec.common_name:
        return "different name"
    if sorted(facts.ips) != sorted(spec.ips) or sorted(facts.dns) != sorted(spec.dns):
        return "different addresses"
    if facts.not_after - now < dt.timedelta(days=RENEW_BEFORE_DAYS):
        return "expires soon"
    return ""


class Pki:
    """Files of the lab CA under ``<state>/pki``."""

    def __init__(self, directory: Path, ca_name: str = "cdlab CA") -> None:
        self.dir = directory
        self.ca_name = ca_name

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca-key.pem"

    def cert(self, name: str) -> Path:
        return self.dir / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}-key.pem"

    def ensure(self, specs: Iterable[CertSpec], now: dt.datetime | None = None) -> list[str]:
        """Create the CA if missing and (re)issue what ``needs_issue`` says; return what changed."""
        now = now or dt.datetime.now(dt.UTC)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        changed: list[str] = []
        if not (self.ca_cert.exists() and self.ca_key.exists()):
            self._new_ca(now)
            changed.append("ca")
        ca_cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca_key_id = _subject_key_id(ca_cert)
        for spec in specs:
            path = self.cert(spec.name)
            facts = read_facts(path.read_bytes()) if path.exists() else None
            why = needs_issue(spec, facts, ca_key_id, now)
            if why:
                self._issue(spec, ca_cert, ca_key, now)
                changed.append(f"{spec.name} ({why})")
        return changed

    def _new_ca(self, now: dt.datetime) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, self.ca_name),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cdlab"),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        _write(self.ca_key, _key_pem(key), 0o600)
        _write(self.ca_cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)

    def _issue(
        self,
        spec: CertSpec,
        ca_cert: x509.Certificate,
        ca_key: ec.EllipticCurvePrivateKey,
        now: dt.datetime,
    ) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        usages = {
            "server": ExtendedKeyUsageOID.SERVER_AUTH,
            "client": ExtendedKeyUsageOID.CLIENT_AUTH,
        }
        usage = [usages[u] for u in spec.usage.split("+")]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        alt: list[x509.GeneralName] = [x509.DNSName(d) for d in spec.dns]
        alt += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in spec.ips]
        if alt:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write(self.key(spec.name), _key_pem(key), 0o600)
        _write(self.cert(spec.name), cert.public_bytes(serialization.Encoding.PEM), 0o644)


def read_facts(pem: bytes) -> CertFacts:
    """Parse what ``needs_issue`` compares out of a PEM certificate."""
    cert = x509.load_pem_x509_certificate(pem)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ips = tuple(str(i) for i in san.get_values_for_type(x509.IPAddress))
        dns = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        ips, dns = (), ()
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        issuer_key_id = aki.key_identifier or b""
    except x509.ExtensionNotFound:
        issuer_key_id = b""
    return CertFacts(
        str(cn[0].value) if cn else "", ips, dns, issuer_key_id, cert.not_valid_after_utc
    )


def _subject_key_id(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
