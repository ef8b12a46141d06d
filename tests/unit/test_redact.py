"""Secrets out of evidence and records (``lab.proof.redact``): known values wherever they are,
URL passwords, sensitive NAME=value pairs, headers, private keys; JSON documents keep their
shape and their Env names. Table-driven: (text in, text out)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from lab import config
from lab.estate.state import State
from lab.proof.redact import MASK, MIN_SECRET, redact, redact_doc, sensitive

ROOT = Path(__file__).resolve().parents[2]
DB = "Zr8nq-1vX_3kT0pLmW9aYc2Eb5dFh7gJ"  # as State.secret makes them: token_urlsafe(24)
REG = "q2W_e3R-t4Y5u6I7o8P9a0SdFgHjKlZx"
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAz7Xo0m2pL9Q3VxGk1m\n"
    "aVb8s9D0fE1gH2iJ3kL4mN5oP6qR7sT8uV\n"
    "-----END RSA PRIVATE KEY-----"
)
SSH = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
    "-----END OPENSSH PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # known values, wherever they are, however often
        (f"password is {DB}", f"password is {MASK}"),
        (f"{DB} and again {DB}", f"{MASK} and again {MASK}"),
        (f"a={DB}b", f"a={MASK}b"),
        (
            f"2026-12-01 app ERROR connect failed ({DB})",
            f"2026-12-01 app ERROR connect failed ({MASK})",
        ),
        (f"login {REG} to registry", f"login {MASK} to registry"),
        # the password inside a URL: the user, host and path are kept
        (
            f"DATABASE_URL=postgresql://app:{DB}@db:5432/app",
            f"DATABASE_URL=postgresql://app:{MASK}@db:5432/app",
        ),
        (
            "postgres://user:hunter2@10.0.0.1/x",
            f"postgres://user:{MASK}@10.0.0.1/x",
        ),
        ("redis://:pw@cache:6379/0", f"redis://:{MASK}@cache:6379/0"),
        (
            'engine = create_engine("postgresql+psycopg://app:s3cr3t@db/app")',
            f'engine = create_engine("postgresql+psycopg://app:{MASK}@db/app")',
        ),
        ("http://127.0.0.1:8000/version", "http://127.0.0.1:8000/version"),
        ("udp://10.100.200.201:5514", "udp://10.100.200.201:5514"),
        ("https://host/a:b@c", "https://host/a:b@c"),
        # NAME=value of a sensitive name, in any case, in an env listing or a command line
        ("POSTGRES_PASSWORD=xyz", f"POSTGRES_PASSWORD={MASK}"),
        ("DB_PASSWORD=xyz PROD_ADDR=10.0.0.1", f"DB_PASSWORD={MASK} PROD_ADDR=10.0.0.1"),
        ("API_KEY=abc123&page=2", f"API_KEY={MASK}&page=2"),
        ("GITHUB_TOKEN=ghp_abc", f"GITHUB_TOKEN={MASK}"),
        ("AWS_SECRET_ACCESS_KEY=wJalr/K7MDENG", f"AWS_SECRET_ACCESS_KEY={MASK}"),
        ("pg --db-password=hunter2 --user=app", f"pg --db-password={MASK} --user=app"),
        ("csrf_token=abc; path=/", f"csrf_token={MASK}; path=/"),
        ('SECRET="two words" NEXT=1', f'SECRET="{MASK}" NEXT=1'),
        ("SECRET='two words'", f"SECRET='{MASK}'"),
        ('SECRET="unterminated', f'SECRET="{MASK}'),
        ("POSTGRES_PASSWORD=", "POSTGRES_PASSWORD="),  # empty: nothing to hide, and evidence
        ("SERVICE_NAME=app RELEASE=3f9c2e1a0b1c", "SERVICE_NAME=app RELEASE=3f9c2e1a0b1c"),
        ("cdlab.keepalive=true", "cdlab.keepalive=true"),
        # JSON text and YAML/log pairs
        ('{"password": "hunter2", "user": "app"}', f'{{"password": "{MASK}", "user": "app"}}'),
        ('{"auth_token": "a\\"b", "n": 1}', f'{{"auth_token": "{MASK}", "n": 1}}'),
        ('{"Env": ["DB_PASSWORD=x1", "A=b"]}', f'{{"Env": ["DB_PASSWORD={MASK}", "A=b"]}}'),
        ('{"Cmd": "X_TOKEN=\\"a b\\""}', f'{{"Cmd": "X_TOKEN=\\"{MASK}\\""}}'),
        ("password: hunter2", f"password: {MASK}"),
        ("  client_secret:\thunter2", f"  client_secret:\t{MASK}"),
        ("primary key: id", "primary key: id"),
        ("tokens: 5", f"tokens: {MASK}"),
        # headers, and tokens elsewhere
        ("Authorization: Basic Y2RsYWI6cGFzcw==", f"Authorization: Basic {MASK}"),
        ("authorization: Bearer eyJhbGciOi.J9x", f"authorization: Bearer {MASK}"),
        ("Proxy-Authorization: Basic dXNlcjpw", f"Proxy-Authorization: Basic {MASK}"),
        ('{"Authorization": "Bearer abc.def"}', f'{{"Authorization": "Bearer {MASK}"}}'),
        ("X-Registry-Auth: eyJ1c2VybmFtZSI6ImNkbGFiIn0=", f"X-Registry-Auth: {MASK}"),
        ("curl -H 'Authorization: token ghp_1'", f"curl -H 'Authorization: token {MASK}'"),
        ("sent Bearer eyJhbGciOiJIUzI1NiJ9.e30", f"sent Bearer {MASK}"),
        ("HTTP 401 (authentication required)", "HTTP 401 (authentication required)"),
        ("Basic authentication required", "Basic authentication required"),
        # private keys: the armour stays, the key goes
        (PEM, f"-----BEGIN RSA PRIVATE KEY-----\n{MASK}\n-----END RSA PRIVATE KEY-----"),
        (SSH, f"-----BEGIN OPENSSH PRIVATE KEY-----\n{MASK}\n-----END OPENSSH PRIVATE KEY-----"),
        (
            f"before\n{PEM}\nafter",
            f"before\n-----BEGIN RSA PRIVATE KEY-----\n{MASK}\n"
            "-----END RSA PRIVATE KEY-----\nafter",
        ),
        (
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\n(cut off by tail",
            f"-----BEGIN PRIVATE KEY-----\n{MASK}",
        ),
        (
            json.dumps({"data": PEM})[1:-1],
            f'"data": "-----BEGIN RSA PRIVATE KEY-----\\n{MASK}\\n-----END RSA PRIVATE KEY-----"',
        ),
        (json.dumps({"ssh_key": "AAAAC3Nza"})[1:-1], f'"ssh_key": "{MASK}"'),  # by its name
        (
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        ),
        ("nothing secret here", "nothing secret here"),
        ("", ""),
    ],
)
def test_redact_masks_what_is_secret_and_keeps_the_rest(text: str, expected: str) -> None:
    assert redact(text, [DB, REG]) == expected


def test_a_short_secret_is_masked_only_where_a_pattern_finds_it() -> None:
    """A value shorter than ``MIN_SECRET`` would blank innocent text if masked anywhere ("ab"
    in every "about"); where it stands as a password it is masked all the same."""
    short = "ab"
    assert len(short) < MIN_SECRET
    text = f"about tables: POSTGRES_PASSWORD={short} postgres://u:{short}@db/x"
    assert redact(text, [short]) == (
        f"about tables: POSTGRES_PASSWORD={MASK} postgres://u:{MASK}@db/x"
    )
    assert redact("a" * 200, ["a", "", "   "]) == "a" * 200
    assert redact("xxxxxxxx", ["xxxxxxx"]) == "xxxxxxxx"  # 7 characters: not by value
    assert redact("xxxxxxxx", ["x" * MIN_SECRET]) == MASK


def test_a_secret_inside_another_is_masked_with_it() -> None:
    long, inner = "abcdefgh-ijklmnop", "ijklmnop"
    assert redact(f"{long} {inner}", [inner, long]) == f"{MASK} {MASK}"


def test_a_secret_with_surrounding_whitespace_is_found_as_stored() -> None:
    assert redact(f"pw {DB}.", [f"{DB}\n"]) == f"pw {MASK}."


@pytest.mark.parametrize(
    "text",
    [
        f"DATABASE_URL=postgresql://app:{DB}@db:5432/app",
        f"{PEM}\nAuthorization: Basic Y2RsYWI6cGFzcw== password: x",
        'SECRET="a b" {"token": "t"} X-Registry-Auth: e30=',
    ],
)
def test_redacting_twice_is_redacting_once(text: str) -> None:
    once = redact(text, [DB])
    assert redact(once, [DB]) == once
    assert DB not in once


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("POSTGRES_PASSWORD", True),
        ("db-password", True),
        ("Passwd", True),
        ("SSH_PASSPHRASE", True),
        ("client_secret", True),
        ("GITHUB_TOKEN", True),
        ("API_KEY", True),
        ("SandboxKey", True),
        ("apikey", True),
        ("ssh-keys", True),
        ("key", False),  # a stage's key, an etcd key: an identifier
        ("KEY_ID", False),
        ("CREDENTIALS", True),
        ("DATABASE_URL", False),  # its password is masked as a URL's: host and name are kept
        ("SERVICE_NAME", False),
        ("cdlab.keepalive", False),
        ("RELEASE", False),
    ],
)
def test_which_names_are_sensitive(name: str, secret: bool) -> None:
    assert sensitive(name) is secret


INSPECT = {
    "Id": "4f2a",
    "Name": "/app-3f9c2e1a0b1c",
    "Args": ["-c", f"psql postgresql://app:{DB}@db/app"],
    "Config": {
        "Env": [
            f"DATABASE_URL=postgresql://app:{DB}@db:5432/app",
            f"POSTGRES_PASSWORD={DB}",
            "REGISTRY_TOKEN=",
            "SERVICE_NAME=app",
            "GREETING=hello=world",
            f"NOTE=the password {REG} was rotated",
        ],
        "Labels": {"cdlab.release": "3f9c2e1a0b1c", "cdlab.keepalive": "true"},
        "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 10_000_000_000},
    },
    "HostConfig": {"Memory": 268435456, "ReadonlyRootfs": True, "CapDrop": ["ALL"]},
    "Mounts": [{"Source": "/etc/cdlab/key.pem", "Destination": "/key.pem"}],
    "Secrets": {"api_key": "k-123", "token_count": 3, "nested": {"password": "x"}},
    "State": {"Status": "running", "OOMKilled": False, "Pid": 4321, "Error": ""},
}


def test_redact_doc_keeps_the_shape_and_the_env_names() -> None:
    before = copy.deepcopy(INSPECT)
    doc = redact_doc(INSPECT, [DB, REG])
    assert before == INSPECT  # the document given is never changed
    assert doc["Config"]["Env"] == [
        f"DATABASE_URL=postgresql://app:{MASK}@db:5432/app",
        f"POSTGRES_PASSWORD={MASK}",
        "REGISTRY_TOKEN=",
        "SERVICE_NAME=app",
        "GREETING=hello=world",
        f"NOTE=the password {MASK} was rotated",
    ]
    assert doc["Args"] == ["-c", f"psql postgresql://app:{MASK}@db/app"]
    assert doc["Secrets"] == {"api_key": MASK, "token_count": 3, "nested": {"password": MASK}}
    for same in ("Id", "Name", "HostConfig", "Mounts", "State"):
        assert doc[same] == INSPECT[same]
    assert doc["Config"]["Labels"] == INSPECT["Config"]["Labels"]
    assert doc["Config"]["Healthcheck"] == INSPECT["Config"]["Healthcheck"]
    text = json.dumps(doc)
    assert DB not in text and REG not in text and "k-123" not in text
    assert redact_doc(doc, [DB, REG]) == doc  # idempotent


def test_redact_doc_takes_any_json_value() -> None:
    assert redact_doc(None) is None and redact_doc(3) == 3 and redact_doc(True) is True
    assert redact_doc((f"x {DB}",), [DB]) == [f"x {MASK}"]
    assert redact_doc(f"POSTGRES_PASSWORD={DB}") == f"POSTGRES_PASSWORD={MASK}"
    assert redact_doc({"stages": [{"detail": f"failed: DB_PASSWORD={DB} x"}]}) == {
        "stages": [{"detail": f"failed: DB_PASSWORD={MASK} x"}]
    }
    # a string that is an entry NAME=value of a sensitive name loses its whole value
    assert redact_doc(["SECRET=two words", "A=b c"]) == [f"SECRET={MASK}", "A=b c"]


def test_a_secret_is_matched_as_it_is_never_as_a_pattern() -> None:
    odd = "a.b*c+d?e(f)[g]"
    assert redact(f"x {odd} y aXb", [odd]) == f"x {MASK} y aXb"
    assert redact("a.b*c+d?e(f)[g]", ["a.b.c.d.e.f"]) == "a.b*c+d?e(f)[g]"


def test_the_lab_lists_its_secret_values_without_making_any(tmp_path: Path) -> None:
    topology = json.loads(config.TOPOLOGY.read_text())
    state = State(config.parse_topology(topology, ROOT, tmp_path / "lab"))
    assert state.secret_values() == ()
    assert not (tmp_path / "lab").exists()  # reading made nothing
    state.dir.mkdir()
    db = state.secret("db-password")
    state.password_file.write_text(REG + "\n")
    assert state.secret_values() == (REG, db)
    assert redact(f"postgresql://app:{db}@db/app login {REG}", state.secret_values()) == (
        f"postgresql://app:{MASK}@db/app login {MASK}"
    )
