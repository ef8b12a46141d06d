"""Secrets out of what cdlab writes down (evidence, run records, build logs), pure: it imports
nothing of the lab, so any wing may use it.

``redact(text, secrets)`` masks, with ``MASK``:

- each known secret value of ``secrets`` (the lab's database and registry passwords:
  ``State.secret_values``) wherever it appears, when it is at least ``MIN_SECRET`` characters
  long; a shorter value would blank innocent text (a secret "ab" in every word), so it is masked
  only where the patterns below find it;
- a URL's password (``postgresql://app:***@db:5432/app``): the user, host and path stay, they are
  the evidence;
- the value of an entry whose name (``sensitive``) holds PASSWORD, PASSWD, PASSPHRASE, SECRET,
  TOKEN or CREDENTIAL, or ends in KEY after something (API_KEY, not a bare "key"), in any case:
  ``NAME=value`` (an environment, a command line's ``--db-password=x``), ``"name": "value"``
  (JSON), and ``name: value`` but for a KEY (YAML, a log line; "primary key: id" and its like
  use KEY for other things);
- ``Authorization``, ``Proxy-Authorization`` and ``X-Registry-Auth`` headers' credentials (the
  scheme stays: ``Authorization: Basic ***``), and a ``Basic``/``Bearer`` token elsewhere;
- a PEM or OpenSSH private key block, its armour kept (``-----BEGIN ... PRIVATE KEY-----``,
  ``***``, ``-----END ...``); a block cut off before its end is masked to the end of the text.

``redact_doc(obj, secrets)`` does the same through a JSON document (``docker inspect``): a
string in it is redacted as text, an ``Env`` entry ``NAME=value`` of a sensitive name keeps its
name and loses its whole value, and a dictionary key of a sensitive name keeps the key and masks
its string value. The document given is never changed; a new one is returned.

An empty value stays empty (that a variable is set but empty is evidence, not a secret). Both
are idempotent: redacting twice gives what redacting once gave.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["MASK", "MIN_SECRET", "redact", "redact_doc", "sensitive"]

MASK = "***"
MIN_SECRET = 8  # known values shorter than this are masked only where a pattern finds them

# a KEY only after something (API_KEY, apikey, SECRET_KEY): a bare "key" is an identifier in
# most documents (a stage's key, an etcd key), not a secret
_NAME = re.compile(
    r"PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|CREDENTIAL|[A-Za-z0-9][_.-]?KEYS?\Z", re.IGNORECASE
)
# a value in text ends at a blank, a quote, a separator of pairs, or an escaped quote
_VALUE = r"(?:[^\s\"'\\,;&<>]|\\(?![\"'n]))+"
_PEM = re.compile(
    r"(-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----)"
    r"(?:.*?(-----END \2PRIVATE KEY-----)|.*\Z)",
    re.DOTALL,
)
_HEADER = re.compile(
    r"(?P<head>\b(?:Proxy-)?Authorization|\bX-Registry-Auth)(?P<sep>\"?\s*[:=]\s*\"?)"
    r"(?P<scheme>(?:Basic|Bearer|Token|Digest|Negotiate)\s+)?(?P<value>[^\s\"',;]+)",
    re.IGNORECASE,
)
_TOKEN = re.compile(r"\b(?P<scheme>Basic|Bearer)\s+(?P<value>[A-Za-z0-9+/_.~-]{8,}=*)")
_URL = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@\"']*:)(?P<value>[^\s@/\"']+)@")
# NAME=value, NAME="a value", NAME='a value', and NAME=\"a value\" (inside a JSON string)
_PAIR = re.compile(
    r"(?P<name>(?<![A-Za-z0-9_])[A-Za-z_][A-Za-z0-9_.-]*)="
    r"(?:(?P<q>\\?[\"'])(?P<quoted>.+?)(?P=q)|(?P<open>\\?[\"']?)(?P<value>" + _VALUE + r"))"
)
_JSON = re.compile(r"(?P<name>\"[^\"\\]*\")(?P<sep>\s*:\s*)\"(?P<value>(?:[^\"\\]|\\.)+)\"")
_COLON = re.compile(
    r"(?P<name>(?<![A-Za-z0-9_])[A-Za-z_][A-Za-z0-9_.-]*)(?P<sep>:[ \t]*)(?P<value>[^\s\"',;]+)"
)
_COLON_WORDS = re.compile(r"PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN", re.IGNORECASE)
_ENV_ENTRY = re.compile(r"\A([A-Za-z_][A-Za-z0-9_.-]*)=(.*)\Z", re.DOTALL)


def sensitive(name: str) -> bool:
    """Whether a variable, key or field called ``name`` holds a secret (by its name)."""
    return bool(_NAME.search(name))


def _known(secrets: Iterable[str]) -> list[str]:
    """The values worth masking anywhere, longest first (a value inside another is masked
    with it)."""
    found = {s.strip() for s in secrets if s and len(s.strip()) >= MIN_SECRET}
    return sorted(found, key=lambda s: (-len(s), s))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every secret masked (see the module's docstring)."""
    for value in _known(secrets):
        text = text.replace(value, MASK)
    text = _PEM.sub(_pem, text)
    text = _HEADER.sub(lambda m: f"{m['head']}{m['sep']}{m['scheme'] or ''}{MASK}", text)
    text = _TOKEN.sub(lambda m: f"{m['scheme']} {MASK}" if _tokenish(m["value"]) else m[0], text)
    text = _URL.sub(lambda m: f"{m['head']}{MASK}@", text)
    text = _PAIR.sub(_pair, text)
    text = _JSON.sub(
        lambda m: f'{m["name"]}{m["sep"]}"{MASK}"' if sensitive(m["name"][1:-1]) else m[0], text
    )
    return _COLON.sub(
        lambda m: f"{m['name']}{m['sep']}{MASK}" if _COLON_WORDS.search(m["name"]) else m[0],
        text,
    )


def _pair(m: re.Match[str]) -> str:
    if not sensitive(m["name"]):
        return m[0]
    if m["q"]:
        return f"{m['name']}={m['q']}{MASK}{m['q']}"
    return f"{m['name']}={m['open']}{MASK}"


def _pem(m: re.Match[str]) -> str:
    """A private key block, its armour kept, its lines joined as the block's were (a line
    break, or ``\\n`` inside a JSON string)."""
    block = m[0]
    sep = "\n" if "\n" in block else "\\n" if "\\n" in block else " "
    return f"{m[1]}{sep}{MASK}" + (f"{sep}{m[3]}" if m[3] else "")


def _tokenish(value: str) -> bool:
    """A ``Basic``/``Bearer`` word that is a credential, not prose ("Basic authentication"):
    it has a digit, or base64's ``+``, ``/`` or ``=``, or it is the mask already."""
    return bool(re.search(r"[0-9+/=]", value))


def redact_doc(obj: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of the JSON document ``obj`` with every secret masked (see the module's
    docstring)."""
    known = tuple(_known(secrets))
    return _doc(obj, known)


def _doc(obj: Any, known: tuple[str, ...]) -> Any:
    if isinstance(obj, str):
        entry = _ENV_ENTRY.match(obj)
        if entry and sensitive(entry[1]) and entry[2]:
            return f"{entry[1]}={MASK}"
        return redact(obj, known)
    if isinstance(obj, dict):
        return {
            k: (
                MASK
                if isinstance(k, str) and sensitive(k) and isinstance(v, str) and v
                else _doc(v, known)
            )
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [_doc(v, known) for v in obj]
    return obj
