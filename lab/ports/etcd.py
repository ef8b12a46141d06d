"""The one client for the route store (etcd v3 JSON gateway on prod, mutual TLS: etcd accepts
only clients with a certificate of the control plane's CA, see ``lab.estate.pki``).

A write may carry a ``Fence``: then it is one transaction that writes only while a lock key
still holds what its holder created (the key's create revision, which etcd keeps until the key
is deleted); otherwise nothing is written and ``FencedOut`` says who holds the lock now.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from requests.adapters import BaseAdapter

from lab.errors import EtcdError as EtcdError  # its home before lab.errors held every error
from lab.errors import FencedOut


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass(frozen=True)
class Fence:
    """A write's guard: the lock ``key`` still holds what its holder created at ``revision``
    (the key's create revision: a key deleted and created again, by anyone, has a new one; a
    missing key has none)."""

    key: str
    revision: int

    def compare(self) -> dict[str, str]:
        """The transaction's compare (etcd v3 JSON gateway): the key's create revision is ours."""
        return {
            "key": _b64(self.key),
            "target": "CREATE",
            "result": "EQUAL",
            "create_revision": str(self.revision),
        }


@dataclass(frozen=True)
class Entry:
    """A key as etcd holds it: its value and two revisions of the store (a counter that every
    write raises by one, the same for every client, whatever any clock says).
    ``create_revision``: the write that created the key; ``mod_revision``: its last write."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int


def _range_end(prefix: str) -> str:
    """The first key after every key that starts with ``prefix`` (etcd's range end)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _entry(kv: dict[str, Any]) -> Entry:
    """An ``Entry`` from a kv of the JSON gateway (int64 fields arrive as strings; a field
    at zero is left out)."""
    return Entry(
        base64.b64decode(kv["key"]).decode(),
        base64.b64decode(kv.get("value", "")),
        int(kv.get("create_revision", 0)),
        int(kv.get("mod_revision", 0)),
    )


class Etcd:
    def __init__(
        self,
        host: str,
        port: int = 2379,
        timeout: float = 5.0,
        tls: tuple[Path, Path, Path] | None = None,
        transport: BaseAdapter | None = None,
    ) -> None:
        """``tls``: (CA, certificate, key) for HTTPS with a client certificate; None speaks
        plain HTTP (only a test's own etcd). ``transport``: what answers the requests instead
        of the network (a test's gateway in memory)."""
        self.url = f"{'https' if tls else 'http'}://{host}:{port}"
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # lab traffic never goes through a proxy
        if transport is not None:
            self.session.mount(self.url, transport)
        if tls:
            ca, cert, key = tls
            self.session.verify = str(ca)
            self.session.cert = (str(cert), str(key))

    def _post(self, action: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            resp = self.session.post(self.url + path, json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            raise EtcdError(action, self.url, str(exc)) from exc
        if resp.status_code != 200:
            raise EtcdError(action, self.url, f"HTTP {resp.status_code}: {resp.text[:200]}")
        doc: dict[str, Any] = resp.json()
        return doc

    def get(self, key: str) -> bytes | None:
        kvs = self._post(f"read {key}", "/v3/kv/range", {"key": _b64(key)}).get("kvs") or []
        return base64.b64decode(kvs[0]["value"]) if kvs else None

    def get_prefix(self, prefix: str) -> dict[str, bytes]:
        """Every key under ``prefix`` (key -> value)."""
        return {e.key: e.value for e in self.get_prefix_with_revisions(prefix)}

    def get_prefix_with_revisions(self, prefix: str) -> list[Entry]:
        """Every key under ``prefix`` with its revisions, in key order."""
        body = {"key": _b64(prefix), "range_end": _b64(_range_end(prefix))}
        kvs = self._post(f"read {prefix}*", "/v3/kv/range", body).get("kvs") or []
        return [_entry(kv) for kv in kvs]

    def lease(self, key: str) -> str | None:
        """The id of the lease ``key`` is bound to (None: no such key, or bound to none)."""
        kvs = self._post(f"read {key}", "/v3/kv/range", {"key": _b64(key)}).get("kvs") or []
        lease = str(kvs[0].get("lease", "0")) if kvs else "0"
        return None if lease == "0" else lease

    def put(
        self, key: str, value: bytes, fence: Fence | None = None, lease: str | None = None
    ) -> None:
        """Write ``key``; with ``fence``, only while it holds (else ``FencedOut``); with
        ``lease``, bound to it (gone when it ends)."""
        body = {"key": _b64(key), "value": base64.b64encode(value).decode()}
        if lease is not None:
            body["lease"] = lease
        if fence is None:
            self._post(f"write {key}", "/v3/kv/put", body)
        else:
            self._fenced(f"write {key}", key, {"request_put": body}, fence)

    def get_json(self, key: str) -> Any:
        raw = self.get(key)
        return json.loads(raw) if raw else None

    def put_json(self, key: str, doc: Any, fence: Fence | None = None) -> None:
        self.put(key, json.dumps(doc, sort_keys=True).encode(), fence)

    def delete(self, key: str, fence: Fence | None = None) -> None:
        """Delete ``key``; with ``fence``, only while it holds (else ``FencedOut``)."""
        if fence is None:
            self._post(f"delete {key}", "/v3/kv/deleterange", {"key": _b64(key)})
        else:
            self._fenced(f"delete {key}", key, {"request_delete_range": {"key": _b64(key)}}, fence)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``; how many there were."""
        body = {"key": _b64(prefix), "range_end": _b64(_range_end(prefix))}
        return int(self._post(f"delete {prefix}*", "/v3/kv/deleterange", body).get("deleted", 0))

    def _fenced(self, action: str, key: str, op: dict[str, Any], fence: Fence) -> None:
        """``op`` in one transaction with ``fence``'s compare; ``FencedOut`` (with what the
        lock key holds now) when it does not hold: then nothing was written."""
        doc = self._post(
            f"{action} (fenced by {fence.key})",
            "/v3/kv/txn",
            {
                "compare": [fence.compare()],
                "success": [op],
                "failure": [{"request_range": {"key": _b64(fence.key)}}],
            },
        )
        if doc.get("succeeded"):
            return
        raise FencedOut(action, key, fence.key, fence.revision, _found(doc))

    def grant(self, ttl: int) -> str:
        """A new lease of ``ttl`` seconds; its id."""
        return str(self._post("grant a lease", "/v3/lease/grant", {"TTL": ttl})["ID"])

    def keepalive(self, lease: str) -> int:
        """Renew ``lease`` once; its remaining TTL (0 when it has expired)."""
        doc = self._post("renew a lease", "/v3/lease/keepalive", {"ID": lease})
        return int((doc.get("result") or {}).get("TTL", 0))

    def revoke(self, lease: str) -> None:
        self._post("revoke a lease", "/v3/lease/revoke", {"ID": lease})

    def create(self, key: str, value: bytes, lease: str | None = None) -> Fence | bytes:
        """Put ``key`` only if it does not exist (bound to ``lease`` when given): on success
        the fence of what was created (the transaction's revision, which is the key's create
        revision), else the value already there (one transaction: two callers can never both
        win, and nothing is overwritten)."""
        put: dict[str, Any] = {"key": _b64(key), "value": base64.b64encode(value).decode()}
        if lease is not None:
            put["lease"] = lease
        doc = self._post(
            f"create {key}",
            "/v3/kv/txn",
            {
                "compare": [
                    {
                        "key": _b64(key),
                        "target": "CREATE",
                        "result": "EQUAL",
                        "create_revision": "0",
                    }
                ],
                "success": [{"request_put": put}],
                "failure": [{"request_range": {"key": _b64(key)}}],
            },
        )
        if doc.get("succeeded"):
            return Fence(key, int(doc["header"]["revision"]))
        return _found(doc) or b""

    def healthy(self) -> bool:
        try:
            doc = self.session.get(self.url + "/health", timeout=2).json()
        except (requests.RequestException, ValueError):
            return False
        return bool(doc.get("health") == "true")


def _found(doc: dict[str, Any]) -> bytes | None:
    """The value a transaction's failure branch read (its one range), None when no key."""
    responses = doc.get("responses") or [{}]
    kvs = (responses[0].get("response_range") or {}).get("kvs") or []
    return base64.b64decode(kvs[0].get("value", "")) if kvs else None
