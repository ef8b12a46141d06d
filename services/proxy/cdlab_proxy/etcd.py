"""The bits of etcd's v3 JSON gateway the proxy needs: a range over a prefix, and a watch."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from collections.abc import Callable
from typing import Any


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _end(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class Etcd:
    def __init__(
        self, host: str, port: int, timeout: float = 5.0, context: ssl.SSLContext | None = None
    ) -> None:
        """``context``: HTTPS with that client context (``tls.client``); None: plain HTTP."""
        self.host, self.port, self.timeout, self.context = host, port, timeout, context

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if self.context:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=self.context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        conn = self._connection(self.timeout)
        try:
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise OSError(f"etcd {path}: HTTP {resp.status} {data[:200]!r}")
            doc: dict[str, Any] = json.loads(data)
            return doc
        finally:
            conn.close()

    def get_prefix(self, prefix: str) -> dict[str, bytes]:
        """Every key under ``prefix`` with its value."""
        body = {"key": _b64(prefix), "range_end": _b64(_end(prefix))}
        kvs = self._post("/v3/kv/range", body).get("kvs") or []
        return {
            base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", ""))
            for kv in kvs
        }

    def watch(self, prefix: str, on_event: Callable[[list[str] | None], None]) -> None:
        """Block, calling ``on_event(keys)`` for every change under ``prefix`` (``keys``: the
        keys it changed; None when the message could not be read); return when etcd ends the
        stream, raise ``OSError`` when it breaks."""
        conn = self._connection(None)
        try:
            body = {"create_request": {"key": _b64(prefix), "range_end": _b64(_end(prefix))}}
            conn.request(
                "POST", "/v3/watch", json.dumps(body), {"Content-Type": "application/json"}
            )
            resp = conn.getresponse()
            if resp.status != 200:
                raise OSError(f"etcd /v3/watch: HTTP {resp.status}")
            buf = b""
            while chunk := resp.read1(65536):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if b'"events"' in line:
                        on_event(changed_keys(line))
        finally:
            conn.close()


def changed_keys(line: bytes) -> list[str] | None:
    """The keys of a watch message's events (pure); None when it is not one."""
    try:
        events = json.loads(line)["result"]["events"]
        return [base64.b64decode(e["kv"]["key"]).decode() for e in events]
    except (ValueError, KeyError, TypeError):
        return None
