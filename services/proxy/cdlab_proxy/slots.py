"""A service's backends as server slots, and the Runtime API commands that make them serve its
routes (pure).

Each service's HAProxy has a backend ``<service>`` of ``SLOTS`` server slots for its pool and a
backend ``<service>-match`` of ``MATCH_SLOTS`` for the candidate on matched requests (A/B), whose
rule is a key in the map ``map_file``. A slot is a server-template entry renamed at run time
(``set server ... fqdn``): no reload, ever.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .document import Routes, Server

SLOTS = 6
MATCH_SLOTS = 2
MATCH_SUFFIX = "-match"  # the backend that serves matched requests (A/B), e.g. app-match
PLACEHOLDER = "cdlab-unassigned.invalid"  # the name of a slot never assigned


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

    @property
    def forced_maintenance(self) -> bool:
        """Put in maintenance by the config or a command: what ``state ready`` ends (0x20,
        waiting for DNS, ends by itself once the name resolves)."""
        return bool(self.admin & 0x01)


@dataclass(frozen=True)
class Wanted:
    """A service's desired state: its pool, and the matched-traffic candidate with its rule."""

    servers: tuple[Server, ...]
    matched: tuple[Server, ...]  # the -match backend: empty, or the candidate at weight 100
    patterns: tuple[str, ...]  # the map's keys: empty, or the match rule's regex


def wanted(routes: Routes) -> Wanted:
    m = routes.match
    if m is None:
        return Wanted(routes.servers, (), ())
    return Wanted(
        routes.servers,
        (Server(m.release, m.host, 100),),
        (match_pattern(m.kind, m.name, m.value),),
    )


def _anycase(text: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in text)


def _literal(text: str) -> str:
    return "".join(f"[{c}]" if c == "." else c for c in text)


def match_pattern(kind: str, name: str, value: str) -> str:
    """A regex on ``req.hdrs`` (every header as ``name: value\\r\\n``) that finds a header or
    a cookie with exactly ``value``. Names and values are checked tokens (the route document),
    so the pattern holds no space, backslash or semicolon: safe as one Runtime API argument."""
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


def map_plan(path: str, present: Sequence[str], keys: Sequence[str]) -> list[str]:
    """Runtime API commands that make map ``path`` hold exactly ``keys`` (value 1; pure)."""
    cmds = [f"add map {path} {key} 1" for key in keys if key not in present]
    return cmds + [f"del map {path} {key}" for key in present if key not in keys]


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
                "" if fqdn in ("-", PLACEHOLDER) else fqdn,
                int(row.get("srv_uweight", "0")),
                int(row.get("srv_admin_state", "0")),
                int(row.get("srv_op_state", "0")),
                "" if row.get("srv_addr", "-") == "-" else row["srv_addr"],
            )
        )
    return slots


def plan(
    backend: str,
    slots: Sequence[Slot],
    desired: Sequence[Server],
    addresses: Mapping[str, str] | None = None,
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
    known = addresses or {}
    by_host = {s.fqdn: s for s in slots if s.fqdn}
    hosts = {d.host for d in desired}
    # idle slots first (a slot whose release just left may still be finishing its requests),
    # and among those the ones with an address: they take the new one at once, where a slot
    # that never had one waits for DNS (up to its hold time)
    free = sorted(
        (s for s in slots if s.fqdn not in hosts),
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
            if known.get(d.host) and slot.addr:  # never addressed: HAProxy refuses addr
                cmds.append(f"set server {name} addr {known[d.host]}")
            slot = Slot(slot.name, d.host, -1, slot.admin | 0x01, 0)
        elif slot.in_maintenance and slot.addr and slot.addr != known.get(d.host, slot.addr):
            # back from maintenance (a release taken out, then started again: a new container)
            # with its current address, not the one it had
            cmds.append(f"set server {backend}/{slot.name} addr {known[d.host]}")
        if slot.weight != d.weight:
            cmds.append(f"set server {backend}/{slot.name} weight {d.weight}")
        if d.drain and (slot.forced_maintenance or not slot.draining):
            cmds.append(f"set server {backend}/{slot.name} state drain")
        elif not d.drain and (slot.forced_maintenance or slot.draining):
            cmds.append(f"set server {backend}/{slot.name} state ready")
    for slot in free:
        if not slot.in_maintenance:
            cmds.append(f"set server {backend}/{slot.name} state maint")
    return cmds


def seed(state: str, backends: Sequence[str], port: int) -> str:
    """A server-state file for a service's next HAProxy, from the ``show servers state`` of the
    one it replaces (pure): the slots of ``backends`` as they are (name, address, weight,
    maintenance and drain), so the new process serves the live releases from its first request.

    HAProxy gives a server its file's port over the config's, so ``port`` (the service's port
    now) replaces it; and it takes a slot's name from the file only with the "FQDN set from the
    CLI" bit (0x40), which its own dump does not always carry."""
    lines = state.splitlines()
    header = next((line[2:].split() for line in lines if line.startswith("# be_id")), [])
    if not header:
        return ""
    col = {name: i for i, name in enumerate(header)}
    out = [lines[0] if lines and lines[0].strip().isdigit() else "1", "# " + " ".join(header)]
    for line in lines:
        row = line.split()
        if len(row) != len(header) or not row[0].isdigit() or row[col["be_name"]] not in backends:
            continue
        row[col["srv_port"]] = str(port)
        if row[col["srv_fqdn"]] not in ("-", PLACEHOLDER):
            row[col["srv_admin_state"]] = str(int(row[col["srv_admin_state"]]) | 0x40)
        out.append(" ".join(row))
    return "\n".join(out) + "\n"
