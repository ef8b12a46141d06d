"""Stand-ins the proxy's supervisor talks to, for a real run without the lab: etcd's v3 JSON
gateway (range, put, deleterange, a create-if-absent txn, watch; with etcd's revisions) and a
DNS server that answers every name with 127.0.0.1. Standard library only; each binds 127.0.0.1
on a port the system picks."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import socket
import struct
import threading
from typing import Any


def _b64(text: bytes) -> str:
    return base64.b64encode(text).decode()


class FakeEtcd(http.server.ThreadingHTTPServer):
    """Keys and values, and revisions as etcd keeps them: one counter for the store, raised by
    every write; per key, the revision that created it (anew after a delete) and its last."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Gateway)
        self.data: dict[bytes, bytes] = {}
        self.revisions: dict[bytes, tuple[int, int]] = {}  # key -> (create, mod) revision
        self.changed = threading.Condition()
        self.revision = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def put(self, key: str, value: Any) -> None:
        """``value`` as JSON at ``key`` (a test's write)."""
        self.put_raw(key.encode(), json.dumps(value).encode())

    def put_raw(self, key: bytes, value: bytes) -> None:
        with self.changed:
            self.revision += 1
            created = self.revisions.get(key, (self.revision, 0))[0]
            self.data[key] = value
            self.revisions[key] = (created, self.revision)
            self.changed.notify_all()

    def delete(self, key: str) -> None:
        self.delete_raw(key.encode())

    def delete_raw(self, key: bytes) -> None:
        with self.changed:
            self.data.pop(key, None)
            self.revisions.pop(key, None)
            self.revision += 1
            self.changed.notify_all()

    def kv(self, key: bytes) -> dict[str, str]:
        """``key`` as the gateway shows it (int64 fields as strings)."""
        created, modified = self.revisions[key]
        return {
            "key": _b64(key),
            "value": _b64(self.data[key]),
            "create_revision": str(created),
            "mod_revision": str(modified),
        }


class _Gateway(http.server.BaseHTTPRequestHandler):
    server: FakeEtcd

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        etcd = self.server
        if self.path == "/v3/kv/range":
            key = base64.b64decode(body["key"])
            end = base64.b64decode(body.get("range_end", "")) or None
            with etcd.changed:
                kvs = [
                    etcd.kv(k)
                    for k in sorted(etcd.data)
                    if (k == key if end is None else key <= k < end)
                ]
                header = {"revision": str(etcd.revision)}
            self._json({"header": header, "kvs": kvs} if kvs else {"header": header})
        elif self.path == "/v3/kv/put":
            etcd.put_raw(base64.b64decode(body["key"]), base64.b64decode(body.get("value", "")))
            self._json({"header": {"revision": str(etcd.revision)}})
        elif self.path == "/v3/kv/deleterange":
            etcd.delete_raw(base64.b64decode(body["key"]))
            self._json({"header": {"revision": str(etcd.revision)}})
        elif self.path == "/v3/kv/txn":
            self._create(body)
        elif self.path == "/v3/watch":
            self._watch(body["create_request"])
        else:
            self._json({}, 404)

    def _create(self, body: dict[str, Any]) -> None:
        """The one transaction cdlab sends: put a key if it does not exist (its
        ``create_revision`` is 0), else read it."""
        (compare,) = body["compare"]
        assert (compare["target"], compare["create_revision"]) == ("CREATE", "0"), compare
        key = base64.b64decode(compare["key"])
        etcd = self.server
        with etcd.changed:
            exists = key in etcd.data
            if not exists:
                put = body["success"][0]["request_put"]
                etcd.put_raw(key, base64.b64decode(put.get("value", "")))
            kvs = [etcd.kv(key)] if exists else []
        if exists:
            self._json({"succeeded": False, "responses": [{"response_range": {"kvs": kvs}}]})
        else:
            self._json({"succeeded": True, "responses": [{"response_put": {}}]})

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
            seen = dict(etcd.data)
        while True:
            with etcd.changed:
                etcd.changed.wait(1)
                now = dict(etcd.data)
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
    """Answers every A question with 127.0.0.1 (TTL 1 s), AAAA with no record, and names
    ending in ``.invalid`` with NXDOMAIN."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()
        return f"{host}:{port}"

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            (tid,) = struct.unpack("!H", data[:2])
            i = 12
            while data[i]:
                i += data[i] + 1
            question, name = data[12 : i + 5], data[12:i]
            (qtype,) = struct.unpack("!H", data[i + 1 : i + 3])
            if name.endswith(b"\x07invalid"):
                self.sock.sendto(struct.pack("!6H", tid, 0x8183, 1, 0, 0, 0) + question, peer)
                continue
            answer = b""
            if qtype == 1:
                answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 1, 4) + bytes([127, 0, 0, 1])
            head = struct.pack("!6H", tid, 0x8180, 1, 1 if answer else 0, 0, 0)
            self.sock.sendto(head + question + answer, peer)

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
