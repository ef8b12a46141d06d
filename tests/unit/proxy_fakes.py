"""Stand-ins for the proxy's pure parts' tests: slots as HAProxy reports them, commands applied
to them as HAProxy would (``apply``), and a service's HAProxy process on its admin socket
(``FakeProcess``) for ``runtime.apply_routes``."""

from __future__ import annotations

from collections.abc import Sequence

from cdlab_proxy import slots

APP = "app"
FRESH = 0x25  # disabled in the config, never addressed, waiting for DNS
MAINT, UP = 0x41, 0x40  # forced maintenance / serving, both with a name set from the CLI


def fresh(n: int, start: int = 1) -> list[slots.Slot]:
    return [slots.Slot(f"r{i}", "", 1, FRESH, 0) for i in range(start, start + n)]


def apply(found: Sequence[slots.Slot], cmds: list[str]) -> list[slots.Slot]:
    """``found`` after ``cmds``, as HAProxy keeps the columns ``plan`` reads (no DNS)."""
    by_name = {s.name: s for s in found}
    for cmd in cmds:
        _, _, at, what, value = cmd.split()
        s = by_name[at.partition("/")[2]]
        if what == "fqdn":
            s = slots.Slot(s.name, value, s.weight, s.admin | 0x40, s.operational, s.addr)
        elif what == "addr":
            s = slots.Slot(s.name, s.fqdn, s.weight, s.admin, s.operational, value)
        elif what == "weight":
            s = slots.Slot(s.name, s.fqdn, int(value), s.admin, s.operational, s.addr)
        else:
            admin = {
                "maint": s.admin | 0x01,
                "ready": s.admin & ~0x19,
                "drain": (s.admin & ~0x01) | 0x08,
            }[value]
            s = slots.Slot(s.name, s.fqdn, s.weight, admin, s.operational, s.addr)
        by_name[s.name] = s
    return list(by_name.values())


class FakeProcess:
    """A service's HAProxy as ``runtime.apply_routes`` speaks to it: its slots' state and the
    commands it was sent (applied, as HAProxy keeps them)."""

    HEADER = (
        "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
        "srv_iweight srv_fqdn srv_port"
    )

    def __init__(self) -> None:
        self.slots = {APP: fresh(4), APP + slots.MATCH_SUFFIX: fresh(2)}
        self.sent: list[str] = []
        self.releases: dict[str, str] = {}

    def resolve(self, ips: dict[str, list[str]]) -> None:
        """HAProxy's resolver: each slot waiting for its name takes one of its addresses."""
        for ss in self.slots.values():
            for i, s in enumerate(ss):
                if s.admin & 0x20 and ips.get(s.fqdn):
                    addr = ips[s.fqdn].pop(0)
                    ss[i] = slots.Slot(s.name, s.fqdn, s.weight, s.admin & ~0x20, 2, addr)

    def send(self, command: str, timeout: float = 5.0) -> str:
        self.sent.append(command)
        if command == "show servers state":
            rows = "".join(
                f"3 {b} 1 {s.name} {s.addr or '-'} {s.operational} {s.admin} {s.weight} 1 "
                f"{s.fqdn or slots.PLACEHOLDER} 8000\n"
                for b, ss in self.slots.items()
                for s in ss
            )
            return f"1\n{self.HEADER}\n{rows}\n"
        if command.startswith("show map /run/app.releases"):
            return "".join(f"0x1 {k} {v}\n" for k, v in self.releases.items()) + "\n"
        if command.startswith("set map /run/app.releases"):
            self.releases[command.split()[3]] = command.split()[4]
        if command.startswith("set server "):
            backend = command.split()[2].partition("/")[0]
            self.slots[backend] = apply(self.slots[backend], [command])
        return "\n"
