"""A service's backends as server slots, and the Runtime API commands that make them serve its
routes (pure).

Each service's HAProxy has a backend ``<service>`` of ``SLOTS`` server slots for its pool and a
backend ``<service>-match`` of ``MATCH_SLOTS`` for the candidate on matched requests (A/B), whose
rule is a key in the map ``map_file``. A slot is a server-template entry renamed at run time
(``set server ... fqdn``): no reload, ever.

A release takes one slot per replica (``count``), all named ``document.fqdn``: one slot named
``host`` for a plain container, K slots named ``tasks.<host>`` for a Swarm service of K
replicas. HAProxy resolves that name once for all of them and spreads its addresses over them,
one each (``prevent-dup-ip``, its default; a slot left without one waits in DNS maintenance).
``slot_weights`` gives each slot the weight that keeps every release's share of the traffic.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from .document import MAX_REPLICAS, MAX_WEIGHT, Routes, Server, fqdn

# a pool holds at most the live, the warm and the candidate release, each of up to MAX_REPLICAS
SLOTS = 3 * MAX_REPLICAS
MATCH_SLOTS = MAX_REPLICAS
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
    """The desired state of a route document; the matched candidate runs as its server in the
    pool does (its replicas)."""
    m = routes.match
    if m is None:
        return Wanted(routes.servers, (), ())
    replicas = next((s.replicas for s in routes.servers if s.host == m.host), 0)
    return Wanted(
        routes.servers,
        (Server(m.release, m.host, 100, replicas=replicas),),
        (match_pattern(m.kind, m.name, m.value),),
    )


def count(server: Server) -> int:
    """How many slots ``server`` takes: one per replica, one for a plain container."""
    return max(1, server.replicas)


def short(slots: Sequence[Slot], server: Server) -> bool:
    """Whether ``server`` lacks serving slots at distinct addresses, one per ``count`` (pure):
    a slot to take, one in maintenance, or two slots on one address. Two slots end up on one
    when a slot is given a spare address while HAProxy's resolver gives that address to
    another slot of the name (the plan was made from state read a moment before); HAProxy
    never parts them by itself, and the replica left out would never get a request (seen at
    300 req/s on a 3-node swarm: a deploy waited 30 s for it, then was undone)."""
    mine = [s for s in slots if s.fqdn == fqdn(server) and not s.in_maintenance]
    return len({s.addr for s in mine if s.addr}) < count(server)


def slot_weights(servers: Sequence[Server]) -> dict[str, int]:
    """The weight of each slot of every server, by host (pure).

    Plain containers only (every ``replicas`` 0): each server's own weight, as always. With
    replicas, a release's share of the traffic is its weight ``w`` spread over its ``r`` slots:
    ``w / r`` per slot, scaled by one factor so that the largest is ``MAX_WEIGHT`` (HAProxy's
    weights are integers up to 256: the most room for rounding), rounded, and at least 1 when
    ``w > 0`` (a release with some weight keeps some traffic). While a replica is down its
    slot waits, and its release's share drifts toward the others until Swarm replaces it."""
    if not any(s.replicas for s in servers):
        return {s.host: s.weight for s in servers}
    per_slot = {s.host: s.weight / count(s) for s in servers}
    top = max(per_slot.values())
    if top <= 0:
        return dict.fromkeys(per_slot, 0)
    return {h: max(1, round(MAX_WEIGHT * v / top)) if v else 0 for h, v in per_slot.items()}


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
    return parse_all_servers_state(text).get(backend, [])


def parse_all_servers_state(text: str) -> dict[str, list[Slot]]:
    """Slots of every backend, by backend, from ``show servers state`` output."""
    header: list[str] = []
    out: dict[str, list[Slot]] = {}
    for line in text.splitlines():
        if line.startswith("# be_id"):
            header = line[2:].split()
            continue
        if not line or line.startswith("#") or not header or line[0].isalpha():
            continue
        row = dict(zip(header, line.split(), strict=False))
        if "be_name" not in row:
            continue
        name = row.get("srv_fqdn", "-")
        out.setdefault(row["be_name"], []).append(
            Slot(
                row["srv_name"],
                "" if name in ("-", PLACEHOLDER) else name,
                int(row.get("srv_uweight", "0")),
                int(row.get("srv_admin_state", "0")),
                int(row.get("srv_op_state", "0")),
                "" if row.get("srv_addr", "-") == "-" else row["srv_addr"],
            )
        )
    return out


def plan(
    backend: str,
    slots: Sequence[Slot],
    desired: Sequence[Server],
    addresses: Mapping[str, str | Sequence[str]] | None = None,
    drained: Collection[str] = (),
) -> list[str]:
    """Runtime API commands that make ``slots`` serve ``desired`` (pure; empty when in shape).

    A release keeps its slots while it stays desired and takes free ones for what it lacks
    (``count``: one per replica); slots of releases no longer desired, or beyond a release's
    count, go to maintenance. Weights (``slot_weights``) and drain state are set as asked. More
    slots than the backend has: ``ValueError`` naming the counts.

    A slot that changes hands would otherwise keep its previous release's address until DNS
    answers again, and send requests there meanwhile (the old release may still be running):
    it goes to maintenance first, then gets the new name and, from ``addresses`` (name -> its
    addresses, the supervisor's own lookup; one address alone may be given as a string), an
    address no other slot of that name holds, at once. (A slot that never had an address waits
    in maintenance for DNS; HAProxy refuses ``addr`` there.) Releases reach the proxy only once
    healthy and tested, so the slot's last health state is not a risk; ``health down`` would
    be ignored in maintenance anyway.

    A release of replicas (several slots of one name) is stricter: with no address to give, a
    new slot is one that never had any if there is one; a slot that would keep an address its
    name does not have (another release's) stays in maintenance until one is known; and of two
    slots holding one address (HAProxy never parts them), the second takes a spare one.

    A slot at one of the ``drained`` addresses (``document.Drained``) drains, and serves again
    once its address is no longer in them, unless its release drains; a new slot is seeded
    with an address that is not drained first. (A slot that will learn its address from DNS
    drains at the next pass after it has.)
    """
    known = {name: _addresses(value) for name, value in (addresses or {}).items()}
    needed = sum(count(d) for d in desired)
    if needed > len(slots):
        detail = ", ".join(f"{d.host}: {count(d)}" for d in desired)
        raise ValueError(
            f"backend {backend}: more than {len(slots)} releases and replicas routed: the "
            f"routes need {needed} slots ({detail}), the backend has {len(slots)}"
        )
    weights = slot_weights(desired)
    kept: dict[str, list[Slot]] = {}
    for d in desired:  # serving slots first, then those with an address
        mine = sorted((s for s in slots if s.fqdn == fqdn(d)), key=_busy_first)
        kept[fqdn(d)] = mine[: count(d)]
    taken = {s.name for ss in kept.values() for s in ss}
    # idle slots first (a slot whose release just left may still be finishing its requests),
    # and among those the ones with an address: they take the new one at once, where a slot
    # that never had one waits for DNS (up to its hold time)
    free = sorted(
        (s for s in slots if s.name not in taken), key=lambda s: (not s.in_maintenance, not s.addr)
    )
    cmds: list[str] = []
    for d in desired:
        ips = known.get(fqdn(d), ())
        cmds += _serve(backend, d, kept[fqdn(d)], free, ips, weights[d.host], drained)
    for slot in free:
        # forced: a slot only waiting for DNS (its release's address gone) would come back and
        # serve on its own once the name answers again (a release restarted after it left)
        if not slot.forced_maintenance:
            cmds.append(f"set server {backend}/{slot.name} state maint")
    return cmds


def _addresses(value: str | Sequence[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _busy_first(slot: Slot) -> tuple[bool, bool]:
    return slot.in_maintenance, not slot.addr


def _serve(
    backend: str,
    d: Server,
    keep: Sequence[Slot],
    free: list[Slot],
    ips: tuple[str, ...],
    weight: int,
    drained: Collection[str],
) -> list[str]:
    """Commands that make ``keep`` (``d``'s slots now), and as many slots taken out of ``free``
    as it lacks, serve ``d``, each at ``weight``; ``ips``: the addresses of its name."""
    strict = d.replicas > 0
    spare = sorted((a for a in ips if a not in {s.addr for s in keep}), key=lambda a: a in drained)
    cmds: list[str] = []
    seen: set[str] = set()
    for slot in keep:
        at = f"{backend}/{slot.name}"
        # back from maintenance (a release taken out, then started again: a new container) at
        # an address its name no longer has (unknown: kept, but not by a release of replicas)
        usable = slot.addr in ips if ips or strict else True
        stale = slot.in_maintenance and bool(slot.addr) and not usable
        addr = slot.addr
        if (stale or (addr and addr in seen)) and spare:
            addr = spare.pop(0)
            cmds.append(f"set server {at} addr {addr}")
            stale = False
        seen.add(addr)
        cmds += _state(at, slot, d, weight, hold=strict and stale, drain=addr in drained)
    for _ in range(count(d) - len(keep)):
        ip = spare.pop(0) if spare else ""
        slot = free.pop(0) if ip or not strict else _unaddressed(free)
        at = f"{backend}/{slot.name}"
        if not slot.in_maintenance:
            cmds.append(f"set server {at} state maint")
        cmds.append(f"set server {at} fqdn {fqdn(d)}")
        if ip and slot.addr:  # never addressed: HAProxy refuses addr
            cmds.append(f"set server {at} addr {ip}")
        new = Slot(slot.name, fqdn(d), -1, slot.admin | 0x01, 0)
        hold = strict and bool(slot.addr) and not ip
        cmds += _state(at, new, d, weight, hold, drain=bool(ip and slot.addr) and ip in drained)
    return cmds


def _unaddressed(free: list[Slot]) -> Slot:
    """The first free slot that never had an address (it waits for DNS), else the first."""
    slot = next((s for s in free if not s.addr), free[0])
    free.remove(slot)
    return slot


def _state(
    at: str, slot: Slot, d: Server, weight: int, hold: bool, drain: bool = False
) -> list[str]:
    """``slot``'s weight and drain state as ``d`` asks; ``hold``: it stays in maintenance;
    ``drain``: it drains whatever ``d`` asks (its address is drained)."""
    cmds = [f"set server {at} weight {weight}"] if slot.weight != weight else []
    if hold:
        return cmds
    drain = drain or d.drain
    if drain and (slot.forced_maintenance or not slot.draining):
        cmds.append(f"set server {at} state drain")
    elif not drain and (slot.forced_maintenance or slot.draining):
        cmds.append(f"set server {at} state ready")
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
