"""cdlab's proxy supervisor: HAProxy with routes from etcd, applied live through the Runtime API.

Each service gets a frontend port and a backend of ``SLOTS`` server slots. The desired routes of a
service live in etcd under ``/cdlab/routes/<service>`` as JSON::

    {"service": "app", "servers": [{"release": "3f9c2e1a0b1c", "host": "app-3f9c2e1a0b1c",
                                    "weight": 100, "drain": false}]}

At start, and on every change etcd reports (a watch), the supervisor reads the routes, compares
them with ``show servers state`` and sends only the difference (``set server ... fqdn/weight/
state``). A killed and restarted proxy therefore comes back with the live release and weights.
Standard library only: this file is also imported by cdlab's unit tests.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

SLOTS = 6
MATCH_SLOTS = 2
ROUTES_PREFIX = "/cdlab/routes/"
SOCKET = "/tmp/haproxy-admin.sock"
MATCH_SUFFIX = "-match"  # the backend that serves matched requests (A/B), e.g. app-match


@dataclass(frozen=True)
class Service:
    name: str
    listen: int  # frontend port in the proxy container
    port: int  # the service's own port in its containers
    health: str = "/health"  # the readiness path the proxy checks
    # requests sent to one release at a time (0: no limit); the rest wait in the proxy's queue
    # (up to ``timeout queue``) instead of in the release's own backlog
    maxconn: int = 0


@dataclass(frozen=True)
class Desired:
    release: str
    host: str  # DNS name of the release on the stack network
    weight: int  # 0..256
    drain: bool = False


@dataclass(frozen=True)
class Slot:
    name: str  # r1 .. rN
    fqdn: str  # "" when never assigned
    weight: int
    admin: int  # HAProxy's srv_admin_state bit field
    operational: int  # 0 stopped/down, 2 running/up
    addr: str = ""  # "" until the name resolved (HAProxy shows "-")

    # srv_admin_state bits: 0x01 forced maint, 0x02 inherited maint, 0x04 "disabled" in the
    # config (a record of origin, not a state), 0x08/0x10 forced/inherited drain, 0x20 DNS
    # resolution maint, 0x40 FQDN set from the CLI. HAProxy's own maintenance mask is 0x23.
    @property
    def in_maintenance(self) -> bool:
        return bool(self.admin & 0x23)

    @property
    def draining(self) -> bool:
        return bool(self.admin & 0x18)


def parse_services(spec: str) -> list[Service]:
    """``app:8000:8000:/health:32,other:8001:9000:/ready``
    (name:listen:port[:health[:maxconn]])."""
    out = []
    for item in filter(None, (p.strip() for p in spec.split(","))):
        parts = item.split(":")
        if (
            len(parts) not in (3, 4, 5)
            or not all(p.isdigit() for p in parts[1:3] + parts[4:])
            or (len(parts) >= 4 and not parts[3].startswith("/"))
        ):
            raise ValueError(
                f"bad service {item!r}: expected name:listen_port:service_port[:/health[:maxconn]]"
            )
        health = parts[3] if len(parts) >= 4 else "/health"
        maxconn = int(parts[4]) if len(parts) == 5 else 0
        out.append(Service(parts[0], int(parts[1]), int(parts[2]), health, maxconn))
    return out


def render_config(services: list[Service], slots: int = SLOTS) -> str:
    """The static haproxy.cfg: written once at start, never reloaded."""
    lines = [
        "global",
        "    log stdout format raw local0 notice",
        f"    stats socket {SOCKET} mode 600 level admin",
        "    stats socket ipv4@0.0.0.0:9999 level admin",
        "    maxconn 8192",
        "    hard-stop-after 30s",
        "",
        "resolvers docker",
        "    nameserver dns 127.0.0.11:53",
        # a release started again is a new container at a new address: HAProxy takes it at
        # the next lookup (every second), not after keeping the old one for a while
        "    hold valid 1s",
        "    hold obsolete 0s",
        "    timeout resolve 200ms",
        "    timeout retry 200ms",
        "    accepted_payload_size 8192",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option dontlognull",
        "    timeout connect 2s",
        "    timeout client 60s",
        "    timeout server 30s",
        "    timeout http-keep-alive 60s",
        "    timeout queue 5s",
        # a health check's answer may take this long (connecting: at most ``inter``): an
        # overloaded release answers late, and the only live one taken out of the pool turns
        # slow answers into 503s (373 in 0.9 s at 1000 req/s on 2 cores, 1 s and fall 2)
        "    timeout check 2s",
        "    option redispatch",
        "    retries 3",
        "    retry-on conn-failure empty-response",
        "",
        "listen stats",
        "    bind :8404",
        "    stats enable",
        "    stats uri /stats",
        "    stats refresh 2s",
        "    http-request return status 200 content-type text/plain string ok if { path /healthz }",
    ]
    for svc in services:
        match = svc.name + MATCH_SUFFIX
        lines += [
            "",
            f"frontend {svc.name}",
            f"    bind :{svc.listen}",
            # matched requests (a header or cookie in the map) go to the A/B candidate while it
            # is up; the map is empty, and the rule costs nothing, until a deploy --match
            f"    use_backend {match} if {{ nbsrv({match}) gt 0 }} "
            f"{{ req.hdrs,map_reg({map_file(svc.name)}) -m found }}",
            f"    default_backend {svc.name}",
        ]
        for backend, count in ((svc.name, slots), (match, MATCH_SLOTS)):
            lines += [
                "",
                f"backend {backend}",
                "    balance roundrobin",
                f"    option httpchk GET {svc.health}",
                "    http-check expect status 200",
                "    http-request disable-l7-retry if METH_POST",
                # a DOWN release is checked every 250 ms too: one started again (a new address)
                # is UP half a second after HAProxy learns the address; 3 failed checks in a row
                # (about 1.5 s) take one out
                "    default-server check inter 1s fastinter 250ms downinter 250ms rise 2 fall 3 "
                "resolvers docker init-addr none resolve-prefer ipv4"
                + (f" maxconn {svc.maxconn}" if svc.maxconn else ""),
                f"    server-template r 1-{count} cdlab-unassigned.invalid:{svc.port} disabled",
            ]
    return "\n".join(lines) + "\n"


def map_file(service: str) -> str:
    return f"/tmp/match-{service}.map"


def _anycase(text: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in text)


def _literal(text: str) -> str:
    return "".join(f"[{c}]" if c == "." else c for c in text)


def match_pattern(kind: str, name: str, value: str) -> str:
    """A regex on ``req.hdrs`` (every header as ``name: value\\r\\n``) that finds a header or
    a cookie with exactly ``value``. Names and values are checked tokens (cdlab's routes), so the
    pattern holds no space, backslash or semicolon: safe as one Runtime API argument."""
    start, end = "(^|[[:cntrl:]])", "([^-_.[:alnum:]]|$)"
    if kind == "header":
        return f"{start}{_anycase(name)}:[[:blank:]]*{_literal(value)}[[:blank:]]*([[:cntrl:]]|$)"
    if kind == "cookie":
        pair = f"{_literal(name)}={_literal(value)}"
        return f"{start}{_anycase('cookie')}:([^[:cntrl:]]*[[:blank:]])?{pair}{end}"
    raise ValueError(f"match kind {kind!r}: expected header or cookie")


def parse_map(text: str) -> list[str]:
    """Keys of a ``show map <file>`` answer (``<ref> <key> <value>`` per line)."""
    return [line.split()[1] for line in text.splitlines() if len(line.split()) >= 3]


def map_plan(path: str, present: list[str], wanted: list[str]) -> list[str]:
    """Runtime API commands that make map ``path`` hold exactly ``wanted`` (value 1; pure)."""
    cmds = [f"add map {path} {key} 1" for key in wanted if key not in present]
    return cmds + [f"del map {path} {key}" for key in present if key not in wanted]


def parse_servers_state(text: str, backend: str) -> list[Slot]:
    """Slots of ``backend`` from ``show servers state`` output (header names the columns)."""
    header: list[str] = []
    slots = []
    for line in text.splitlines():
        if line.startswith("# be_id"):
            header = line[2:].split()
            continue
        if not line or line.startswith("#") or not header or line[0].isalpha():
            continue
        row = dict(zip(header, line.split(), strict=False))
        if row.get("be_name") != backend:
            continue
        fqdn = row.get("srv_fqdn", "-")
        slots.append(
            Slot(
                row["srv_name"],
                "" if fqdn in ("-", "cdlab-unassigned.invalid") else fqdn,
                int(row.get("srv_uweight", "0")),
                int(row.get("srv_admin_state", "0")),
                int(row.get("srv_op_state", "0")),
                "" if row.get("srv_addr", "-") == "-" else row["srv_addr"],
            )
        )
    return slots


def plan(
    backend: str,
    slots: list[Slot],
    desired: list[Desired],
    addresses: dict[str, str] | None = None,
) -> list[str]:
    """Runtime API commands that make ``slots`` serve ``desired`` (pure; empty when in shape).

    A release keeps its slot while it stays desired; new releases take free slots; slots of
    releases no longer desired go to maintenance. Weights and drain state are set as asked.

    A slot that changes hands would otherwise keep its previous release's address until DNS
    answers again, and send requests there meanwhile (the old release may still be running):
    it goes to maintenance first, then gets the new name and, from ``addresses`` (host -> IP,
    the supervisor's own lookup), the new address at once. (A slot that never had an address
    waits in maintenance for DNS; HAProxy refuses ``addr`` there.) Releases reach the proxy
    only once healthy and tested, so the slot's last health state is not a risk; ``health
    down`` would be ignored in maintenance anyway.
    """
    by_host = {s.fqdn: s for s in slots if s.fqdn}
    wanted = {d.host for d in desired}
    # idle slots first (a slot whose release just left may still be finishing its requests),
    # and among those the ones with an address: they take the new one at once, where a slot
    # that never had one waits for DNS (up to its hold time)
    free = sorted(
        (s for s in slots if s.fqdn not in wanted),
        key=lambda s: (not s.in_maintenance, not s.addr),
    )
    cmds: list[str] = []
    for d in desired:
        slot = by_host.get(d.host)
        if slot is None:
            if not free:
                raise ValueError(f"backend {backend}: more than {len(slots)} releases routed")
            slot = free.pop(0)
            name = f"{backend}/{slot.name}"
            if not slot.in_maintenance:
                cmds.append(f"set server {name} state maint")
            cmds.append(f"set server {name} fqdn {d.host}")
            if (addresses or {}).get(d.host):
                cmds.append(f"set server {name} addr {(addresses or {})[d.host]}")
            slot = Slot(slot.name, d.host, -1, slot.admin | 0x01, 0)
        elif (
            slot.in_maintenance
            and slot.addr
            and slot.addr != (addresses or {}).get(d.host, slot.addr)
        ):
            # back from maintenance (a release taken out, then started again: a new container)
            # with its current address, not the one it had
            cmds.append(f"set server {backend}/{slot.name} addr {(addresses or {})[d.host]}")
        if slot.weight != d.weight:
            cmds.append(f"set server {backend}/{slot.name} weight {d.weight}")
        if d.drain and (slot.in_maintenance or not slot.draining):
            cmds.append(f"set server {backend}/{slot.name} state drain")
        elif not d.drain and (slot.in_maintenance or slot.draining):
            cmds.append(f"set server {backend}/{slot.name} state ready")
    for slot in free:
        if not slot.in_maintenance:
            cmds.append(f"set server {backend}/{slot.name} state maint")
    return cmds


@dataclass(frozen=True)
class Wanted:
    """A service's desired state: its pool, and the matched-traffic candidate with its rule."""

    servers: list[Desired]
    matched: list[Desired]  # the -match backend: empty, or the candidate at weight 100
    patterns: list[str]  # the map's keys: empty, or the match rule's regex


def parse_routes(raw: bytes | None, service: str) -> Wanted:
    if not raw:
        return Wanted([], [], [])
    doc = json.loads(raw)
    if doc.get("service") != service:
        raise ValueError(f"route record for {service!r} names service {doc.get('service')!r}")
    servers = [
        Desired(str(s["release"]), str(s["host"]), int(s["weight"]), bool(s.get("drain")))
        for s in doc.get("servers", [])
    ]
    m = doc.get("match")
    if not m:
        return Wanted(servers, [], [])
    pattern = match_pattern(str(m["kind"]), str(m["name"]), str(m["value"]))
    return Wanted(servers, [Desired(str(m["release"]), str(m["host"]), 100)], [pattern])


class Runtime:
    """HAProxy's Runtime API on the admin socket."""

    def __init__(self, path: str = SOCKET) -> None:
        self.path = path

    def send(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(self.path)
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Etcd:
    """The bits of etcd's v3 JSON gateway the proxy needs: range and watch."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def _post(self, path: str, body: dict[str, object], timeout: float = 5) -> dict[str, object]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise OSError(f"etcd {path}: HTTP {resp.status} {data[:200]!r}")
            return json.loads(data)
        finally:
            conn.close()

    def get(self, key: str) -> bytes | None:
        doc = self._post("/v3/kv/range", {"key": _b64(key)})
        kvs = doc.get("kvs") or []
        return base64.b64decode(kvs[0]["value"]) if kvs else None  # type: ignore[index]

    def watch(self, prefix: str, on_event: callable) -> None:  # type: ignore[valid-type]
        """Block, calling ``on_event()`` for every change under ``prefix``; return on error."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        conn = http.client.HTTPConnection(self.host, self.port, timeout=None)
        body = {"create_request": {"key": _b64(prefix), "range_end": _b64(end)}}
        conn.request("POST", "/v3/watch", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        buf = b""
        while chunk := resp.read1(65536):
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if b'"events"' in line:
                    on_event()


def resolve(hosts: list[str]) -> dict[str, str]:
    """IPv4 addresses of the releases' names on the stack network (Docker's DNS); a name that
    does not resolve yet is left to HAProxy's resolvers."""
    out = {}
    for host in hosts:
        try:
            out[host] = socket.gethostbyname(host)
        except OSError:
            continue
    return out


def log(msg: str) -> None:
    print(f"cdlab-proxy: {msg}", file=sys.stderr, flush=True)


class Supervisor:
    def __init__(self, services: list[Service], etcd: Etcd, runtime: Runtime) -> None:
        self.services, self.etcd, self.runtime = services, etcd, runtime
        self.lock = threading.Lock()
        self.applied = 0

    def reconcile(self) -> None:
        with self.lock:
            state = self.runtime.send("show servers state")
            for svc in self.services:
                wanted = parse_routes(self.etcd.get(ROUTES_PREFIX + svc.name), svc.name)
                match = svc.name + MATCH_SUFFIX
                path = map_file(svc.name)
                to_map = map_plan(
                    path, parse_map(self.runtime.send(f"show map {path}")), wanted.patterns
                )
                desired = {svc.name: wanted.servers, match: wanted.matched}
                slots = {b: parse_servers_state(state, b) for b in desired}
                # only a release taking a slot, or coming back from maintenance, needs its
                # address: no DNS lookups when in shape
                known = resolve(
                    [
                        d.host
                        for b, ds in desired.items()
                        for d in ds
                        if d.host not in {s.fqdn for s in slots[b] if not s.in_maintenance}
                    ]
                )
                to_pool = [c for b, ds in desired.items() for c in plan(b, slots[b], ds, known)]
                # a rule goes in after its backend has the candidate, and out before it leaves
                cmds = to_pool + to_map if wanted.patterns else to_map + to_pool
                for cmd in cmds:
                    answer = self.runtime.send(cmd).strip()
                    if answer and not answer.startswith(("IP changed", "no need to change")):
                        log(f"{cmd!r}: {answer}")
                if cmds:
                    self.applied += 1
                    log(
                        f"{svc.name}: applied {len(cmds)} change(s) -> "
                        + ", ".join(
                            f"{d.release}={d.weight}{' drain' if d.drain else ''}"
                            for d in wanted.servers
                        )
                        + "".join(f"; matched requests -> {d.release}" for d in wanted.matched)
                    )

    def run_forever(self) -> None:
        while True:
            try:
                self.reconcile()
                self.etcd.watch(ROUTES_PREFIX, self.reconcile)
            except Exception as exc:  # etcd restarting, haproxy busy: retry, never die
                log(f"reconcile: {type(exc).__name__}: {exc}; retrying")
                time.sleep(0.5)

    def resync_forever(self, every: float = 5.0) -> None:
        """A full pass now and then: repairs anything a missed watch event left behind."""
        while True:
            time.sleep(every)
            try:
                self.reconcile()
            except Exception as exc:  # logged; the watch loop carries on
                log(f"resync: {type(exc).__name__}: {exc}")


def main() -> int:
    services = parse_services(os.environ.get("PROXY_SERVICES", "app:8000:8000"))
    cfg = "/tmp/haproxy.cfg"
    with open(cfg, "w") as fh:
        fh.write(render_config(services))
    for svc in services:
        open(map_file(svc.name), "w").close()  # filled at run time: add map / del map
    haproxy = subprocess.Popen(["haproxy", "-W", "-db", "-f", cfg])
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, f: haproxy.send_signal(signal.SIGUSR1))  # soft stop
    deadline = time.monotonic() + 10
    while not os.path.exists(SOCKET):
        if haproxy.poll() is not None or time.monotonic() > deadline:
            log("haproxy did not start")
            return 1
        time.sleep(0.05)
    etcd = Etcd(os.environ.get("ETCD_HOST", "etcd"), int(os.environ.get("ETCD_PORT", "2379")))
    sup = Supervisor(services, etcd, Runtime())
    threading.Thread(target=sup.run_forever, daemon=True, name="watch").start()
    threading.Thread(target=sup.resync_forever, daemon=True, name="resync").start()
    return haproxy.wait()


if __name__ == "__main__":
    sys.exit(main())
