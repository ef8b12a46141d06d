"""Stand-ins the lab talks to, for a real run without the lab: etcd's v3 JSON gateway
(``EtcdStore``: key-value with revisions, transactions, leases; served over HTTP by ``FakeEtcd``,
with watch, or in memory by ``StoreTransport``) and a DNS server that answers every name with
127.0.0.1 unless a test gave it other addresses. Standard library only (and requests, for
``StoreTransport``); each server binds 127.0.0.1 on a port the system picks."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import BaseAdapter

from lab.ports.etcd import Etcd


def _b64(text: bytes) -> str:
    return base64.b64encode(text).decode()


@dataclass
class _Kv:
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


class EtcdStore:
    """etcd's key-value store as its v3 JSON gateway answers it, in memory: the store's
    revision grows by one with every request that changes something (a transaction too, once);
    a key keeps its create revision until it is deleted; a lease's revocation or expiry
    deletes its keys. Transactions compare CREATE, MOD, VERSION or VALUE (EQUAL, NOT_EQUAL,
    GREATER, LESS; a missing key has revisions and version 0) and run put, range and
    delete_range. Numbers of 64 bits are strings, as the gateway writes them; ``succeeded``
    is left out when false, as the gateway does."""

    def __init__(self) -> None:
        self.kvs: dict[bytes, _Kv] = {}
        self.revision = 1  # a new etcd's
        self.leases: dict[int, int] = {}  # id -> TTL
        self.changed = threading.Condition()
        self.asked: list[str] = []  # the path of every request, in order
        self._next_lease = 7587

    # what a test does to the store directly
    @property
    def data(self) -> dict[bytes, bytes]:
        with self.changed:
            return {k: kv.value for k, kv in self.kvs.items()}

    def put(self, key: str, value: Any) -> None:
        """``value`` as JSON at ``key``."""
        with self.changed:
            self._put(key.encode(), json.dumps(value).encode(), 0)
            self._wrote()

    def delete(self, key: str) -> None:
        with self.changed:
            if self._delete(key.encode(), None):
                self._wrote()

    def expire(self, lease: str | int) -> None:
        """``lease`` expires (its keys go), as when no renewal came for its TTL."""
        with self.changed:
            self._revoke(int(lease))

    def create_revision(self, key: str) -> int:
        with self.changed:
            kv = self.kvs.get(key.encode())
            return kv.create_revision if kv else 0

    # the gateway
    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """What the gateway answers a POST of ``body`` to ``path``: (HTTP status, document)."""
        with self.changed:
            self.asked.append(path)
            before = self.revision
            status, doc = self._answer(path, body)
            if self.revision != before:
                self.changed.notify_all()
            return status, doc

    def _answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        ops = {
            "/v3/kv/range": ("request_range", "response_range"),
            "/v3/kv/put": ("request_put", "response_put"),
            "/v3/kv/deleterange": ("request_delete_range", "response_delete_range"),
        }
        if path in ops:
            request, _ = ops[path]
            if request == "request_put" and not self._lease_ok(body):
                return 404, _error("etcdserver: requested lease not found", 5)
            doc = self._op({request: body})
            wrote = request != "request_range" and doc.pop("_wrote", False)
            if wrote:
                self._wrote()
            return 200, {"header": self._header(), **next(iter(doc.values()))}
        if path == "/v3/kv/txn":
            return self._txn(body)
        if path == "/v3/lease/grant":
            lease, self._next_lease = self._next_lease, self._next_lease + 1
            ttl = max(int(float(body["TTL"])), 2)  # etcd's least TTL (a test's own may be less)
            self.leases[lease] = ttl
            return 200, {"header": self._header(), "ID": str(lease), "TTL": str(ttl)}
        if path == "/v3/lease/keepalive":
            lease = int(body["ID"])
            result: dict[str, Any] = {"header": self._header(), "ID": str(lease)}
            if lease in self.leases:
                result["TTL"] = str(self.leases[lease])
            return 200, {"result": result}
        if path == "/v3/lease/revoke":
            if int(body["ID"]) not in self.leases:
                return 404, _error("etcdserver: requested lease not found", 5)
            self._revoke(int(body["ID"]))
            return 200, {"header": self._header()}
        return 404, {}

    def _txn(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        ok = all(self._holds(c) for c in body.get("compare", []))
        branch = body.get("success" if ok else "failure", [])
        if not all(self._lease_ok(op["request_put"]) for op in branch if "request_put" in op):
            return 404, _error("etcdserver: requested lease not found", 5)
        answers = [self._op(op) for op in branch]
        if any(a.pop("_wrote", False) for a in answers):
            self._wrote()  # one revision for the whole transaction
        for a in answers:
            next(iter(a.values()))["header"] = self._header()
        doc: dict[str, Any] = {"header": self._header(), "responses": answers}
        if ok:
            doc["succeeded"] = True
        return 200, doc

    def _holds(self, c: dict[str, Any]) -> bool:
        kv = self.kvs.get(base64.b64decode(c["key"]))
        target = c.get("target", "VERSION")
        have: Any
        want: Any
        if target == "VALUE":
            if kv is None:
                return False
            have, want = kv.value, base64.b64decode(c.get("value", ""))
        else:
            field = {"CREATE": "create_revision", "MOD": "mod_revision", "VERSION": "version"}
            have = getattr(kv, field[target]) if kv else 0
            want = int(c.get(field[target], "0"))
        return {
            "EQUAL": have == want,
            "NOT_EQUAL": have != want,
            "GREATER": have > want,
            "LESS": have < want,
        }[c.get("result", "EQUAL")]

    def _op(self, op: dict[str, Any]) -> dict[str, Any]:
        """One request of a transaction: its response (``_wrote``: it changed the store; the
        revision is the caller's to move, once)."""
        rev = self.revision + 1  # the revision a write of this request takes
        if "request_put" in op:
            req = op["request_put"]
            self._put(
                base64.b64decode(req["key"]),
                base64.b64decode(req.get("value", "")),
                int(req.get("lease", "0")),
                rev,
            )
            return {"response_put": {}, "_wrote": True}
        if "request_delete_range" in op:
            req = op["request_delete_range"]
            deleted = self._delete(base64.b64decode(req["key"]), req.get("range_end"))
            answer: dict[str, Any] = {"deleted": str(deleted)} if deleted else {}
            return {"response_delete_range": answer, "_wrote": deleted > 0}
        req = op["request_range"]
        key = base64.b64decode(req["key"])
        end = base64.b64decode(req["range_end"]) if req.get("range_end") else None
        kvs = [
            _kv_doc(k, kv)
            for k, kv in sorted(self.kvs.items())
            if (k == key if end is None else key <= k < end)
        ]
        return {"response_range": {"kvs": kvs, "count": str(len(kvs))} if kvs else {}}

    def _put(self, key: bytes, value: bytes, lease: int, rev: int | None = None) -> None:
        rev = rev if rev is not None else self.revision + 1
        old = self.kvs.get(key)
        if old is None:
            self.kvs[key] = _Kv(value, rev, rev, 1, lease)
        else:
            self.kvs[key] = _Kv(value, old.create_revision, rev, old.version + 1, lease)

    def _delete(self, key: bytes, range_end: str | None) -> int:
        end = base64.b64decode(range_end) if range_end else None
        gone = [k for k in self.kvs if (k == key if end is None else key <= k < end)]
        for k in gone:
            del self.kvs[k]
        return len(gone)

    def _revoke(self, lease: int) -> None:
        self.leases.pop(lease, None)
        gone = [k for k, kv in self.kvs.items() if kv.lease == lease]
        for k in gone:
            del self.kvs[k]
        if gone:
            self._wrote()

    def _lease_ok(self, put: dict[str, Any]) -> bool:
        lease = int(put.get("lease", "0"))
        return lease == 0 or lease in self.leases

    def _wrote(self) -> None:
        self.revision += 1
        self.changed.notify_all()

    def _header(self) -> dict[str, str]:
        return {"cluster_id": "14841639068965178418", "revision": str(self.revision)}


def _kv_doc(key: bytes, kv: _Kv) -> dict[str, str]:
    doc = {
        "key": _b64(key),
        "create_revision": str(kv.create_revision),
        "mod_revision": str(kv.mod_revision),
        "version": str(kv.version),
        "value": _b64(kv.value),
    }
    if kv.lease:
        doc["lease"] = str(kv.lease)
    return doc


def _error(message: str, code: int) -> dict[str, Any]:
    return {"error": message, "message": message, "code": code}


class StoreTransport(BaseAdapter):
    """A requests transport that answers from an ``EtcdStore`` in this process (no socket):
    ``Etcd(..., transport=StoreTransport(store))``."""

    def __init__(self, store: EtcdStore) -> None:
        super().__init__()
        self.store = store

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        raw = request.body or b"{}"
        body = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        path = "/" + str(request.url).split("/", 3)[3]
        status, doc = self.store.answer(path, body)
        resp = requests.Response()
        resp.status_code, resp.url, resp.request = status, str(request.url), request
        resp._content = json.dumps(doc).encode()
        resp.headers["Content-Type"] = "application/json"
        return resp

    def close(self) -> None:
        """Nothing to close."""


def memory_etcd() -> tuple[Etcd, EtcdStore]:
    """The lab's etcd client on a store in memory, and that store."""
    store = EtcdStore()
    return Etcd("etcd.test", transport=StoreTransport(store)), store


class FakeEtcd(http.server.ThreadingHTTPServer):
    """An ``EtcdStore`` served over HTTP on 127.0.0.1, with the gateway's watch."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Gateway)
        self.store = EtcdStore()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def changed(self) -> threading.Condition:
        return self.store.changed

    @property
    def data(self) -> dict[bytes, bytes]:
        return self.store.data

    def put(self, key: str, value: Any) -> None:
        self.store.put(key, value)

    def delete(self, key: str) -> None:
        self.store.delete(key)


class _Gateway(http.server.BaseHTTPRequestHandler):
    server: FakeEtcd

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/v3/watch":
            self._watch(body["create_request"])
            return
        status, doc = self.server.store.answer(self.path, body)
        self._json(doc, status)

    def _json(self, doc: dict[str, Any], status: int = 200) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _watch(self, req: dict[str, str]) -> None:
        key, end = base64.b64decode(req["key"]), base64.b64decode(req["range_end"])
        self.send_response(200)
        self.end_headers()  # HTTP/1.0: the stream ends when the connection closes
        self.wfile.write(b'{"result":{"created":true}}\n')
        self.wfile.flush()
        etcd = self.server
        with etcd.changed:
            seen = etcd.data
        while True:
            with etcd.changed:
                etcd.changed.wait(1)
                now = etcd.data
            keys = {k for k in set(seen) | set(now) if key <= k < end and seen.get(k) != now.get(k)}
            seen = now
            if keys:
                events = [{"kv": {"key": _b64(k)}} for k in sorted(keys)]
                try:
                    self.wfile.write(json.dumps({"result": {"events": events}}).encode() + b"\n")
                    self.wfile.flush()
                except OSError:
                    return


class FakeDns:
    """Answers A questions from ``names`` (name -> IPv4 addresses, TTL 1 s; changed by a test
    while it runs: ``set``), a name it does not hold with 127.0.0.1, a name held with no
    address and names ending in ``.invalid`` with NXDOMAIN; AAAA with no record."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.names: dict[str, list[str]] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()
        return f"{host}:{port}"

    def set(self, name: str, addresses: list[str]) -> None:
        """``name`` answers ``addresses`` from the next question on ([]: NXDOMAIN)."""
        with self.lock:
            self.names[name.lower()] = list(addresses)

    def _lookup(self, name: str) -> list[str] | None:
        """The addresses of ``name`` (None: NXDOMAIN)."""
        if name.endswith(".invalid"):
            return None
        with self.lock:
            found = self.names.get(name.lower(), ["127.0.0.1"])
        return found or None

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            (tid,) = struct.unpack("!H", data[:2])
            i, labels = 12, []
            while data[i]:
                labels.append(data[i + 1 : i + 1 + data[i]].decode(errors="replace"))
                i += data[i] + 1
            question = data[12 : i + 5]
            (qtype,) = struct.unpack("!H", data[i + 1 : i + 3])
            found = self._lookup(".".join(labels))
            if found is None:
                self.sock.sendto(struct.pack("!6H", tid, 0x8183, 1, 0, 0, 0) + question, peer)
                continue
            answers = [
                b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 1, 4) + socket.inet_aton(ip)
                for ip in (found if qtype == 1 else [])
            ]
            head = struct.pack("!6H", tid, 0x8180, 1, len(answers), 0, 0)
            self.sock.sendto(head + question + b"".join(answers), peer)

    def close(self) -> None:
        self.sock.close()


class FakeCarbon:
    """Carbon's plaintext listener: every ``path value timestamp`` line received, kept.
    ``away``: its port taken but refusing connections until ``back``; ``drop`` closes the
    connections it accepted, as a carbon restarted."""

    def __init__(self, away: bool = False) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.lines: list[tuple[str, float, int]] = []
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        if not away:
            self.back()

    def back(self) -> None:
        self.sock.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    def drop(self) -> None:
        with self.lock:
            conns, self.conns = self.conns, []
        for conn in conns:
            with contextlib.suppress(OSError):  # a FIN at once, even while a thread reads it
                conn.shutdown(socket.SHUT_RDWR)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            for raw in lines:
                path, value, stamp = raw.decode().split()
                with self.lock:
                    self.lines.append((path, float(value), int(stamp)))

    def total(self, path_suffix: str, release_path: str) -> float:
        """Sum of every value received for ``<release_path>.<path_suffix>``."""
        with self.lock:
            return sum(v for p, v, _ in self.lines if p == f"{release_path}.{path_suffix}")

    def close(self) -> None:
        self.sock.close()


class FakeSyslog:
    """A UDP syslog receiver: every datagram kept, and every message (a datagram may hold
    several, one a line)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.datagrams: list[bytes] = []
        self.messages: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def _read(self) -> None:
        while True:
            try:
                datagram = self.sock.recv(65536)
                self.datagrams.append(datagram)
                data = datagram.decode(errors="replace")
                self.messages.extend(m for m in data.split("\n") if m)  # batches: one a line
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
