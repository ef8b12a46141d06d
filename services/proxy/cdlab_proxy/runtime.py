"""Speaking to the services' HAProxy processes through their Runtime APIs: a service's routes
applied to its own process, and the router's commands answered."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Collection, Mapping, Sequence

from . import edge, router, slots
from .document import fqdn
from .haproxy import Process

_NAMED = re.compile(r"^set server (\S+) fqdn (\S+)$")

QUIET = ("IP changed", "no need to change")  # answers that only confirm what was asked


Lookup = Callable[[list[str]], Mapping[str, tuple[str, ...]]]


def resolve(names: list[str]) -> dict[str, tuple[str, ...]]:
    """Every IPv4 address of each of the releases' names on the stack network (Docker's DNS:
    a container's name, one; ``tasks.<service>``, each healthy replica's); a name that does not
    resolve yet is left to HAProxy's resolvers."""
    out = {}
    for name in names:
        try:
            out[name] = tuple(socket.gethostbyname_ex(name)[2])
        except OSError:
            continue
    return out


def parse_release_map(text: str) -> dict[str, str]:
    """``<backend>/<server>`` -> release from a ``show map`` answer of the slot map."""
    return {w[1]: w[2] for w in (line.split() for line in text.splitlines()) if len(w) >= 3}


def with_releases(
    release_map: str,
    found: Mapping[str, Sequence[slots.Slot]],
    present: Mapping[str, str],
    hosts: Mapping[str, Mapping[str, str]],
    pool: Sequence[str],
) -> list[str]:
    """``pool`` with the slot map kept in step (pure): a slot's entry is set right after the
    slot is given a release's name, while it is still in maintenance, so its first answer
    already carries the right X-Release; entries of slots that keep their release are put
    right first (a process started from another's state, a map changed by hand). ``hosts``:
    backend -> slot name (``document.fqdn``) -> release."""
    entries = edge.release_keys(((b, s.name, s.fqdn) for b, ss in found.items() for s in ss), hosts)
    fix = [f"set map {release_map} {k} {v}" for k, v in entries.items() if present.get(k) != v]
    out = []
    for cmd in pool:
        out.append(cmd)
        named = _NAMED.match(cmd)
        if named:
            slot, host = named.groups()
            release = hosts.get(slot.partition("/")[0], {}).get(host)
            if release:
                out.append(f"set map {release_map} {slot} {release}")
    return fix + out


def apply_routes(
    proc: Process,
    name: str,
    wanted: slots.Wanted,
    map_path: str,
    lookup: Lookup,
    say: Callable[[str], None],
    release_map: str = "",
    drained: Collection[str] = (),
) -> int:
    """Make ``name``'s process serve ``wanted``: only the commands that differ; how many.
    ``release_map``: the slot map (slot -> release) to keep in step ("": none); ``drained``:
    addresses whose slots drain (``document.Drained``)."""
    match = name + slots.MATCH_SUFFIX
    state = proc.send("show servers state")
    to_map = slots.map_plan(
        map_path, slots.parse_map(proc.send(f"show map {map_path}")), wanted.patterns
    )
    desired = {name: wanted.servers, match: wanted.matched}
    found = {b: slots.parse_servers_state(state, b) for b in desired}
    # only a release short of serving slots at distinct addresses needs its addresses: no DNS
    # lookups when in shape
    known = lookup([fqdn(d) for b, ds in desired.items() for d in ds if slots.short(found[b], d)])
    to_pool = [c for b, ds in desired.items() for c in slots.plan(b, found[b], ds, known, drained)]
    if release_map:
        hosts = {b: {fqdn(d): d.release for d in ds} for b, ds in desired.items()}
        present = parse_release_map(proc.send(f"show map {release_map}"))
        to_pool = with_releases(release_map, found, present, hosts, to_pool)
    # a rule goes in after its backend has the candidate, and out before it leaves
    cmds = to_pool + to_map if wanted.patterns else to_map + to_pool
    for cmd in cmds:
        answer = proc.send(cmd).strip()
        if answer and not answer.startswith(QUIET) and "changed its FQDN" not in answer:
            say(f"{name}: {cmd!r}: {answer}")
    if cmds:
        say(
            f"{name}: applied {len(cmds)} change(s) -> "
            + ", ".join(
                f"{d.release}={d.weight}{' drain' if d.drain else ''}"
                + (f" x{d.replicas}" if d.replicas else "")
                for d in wanted.servers
            )
            + "".join(f"; matched requests -> {d.release}" for d in wanted.matched)
            + (f"; drained: {', '.join(sorted(drained))}" if drained else "")
        )
    return len(cmds)


def answer(
    line: str,
    procs: Mapping[str, Process],
    maps: Mapping[str, str],
    status: Callable[[], str],
) -> str:
    """The router's answer to ``line``: each command sent to the process(es) it concerns
    (``procs``: the running ones by service; ``maps``: their map files), ``show cdlab`` from
    ``status``."""
    owned = router.owners(maps)
    out = []
    for command in router.split(line):
        route = router.dispatch(command, owned, sorted(procs))
        if route.status:
            out.append(status())
        elif not route.services:
            out.append(route.answer)
        else:
            answers = [ask(procs[s], command) for s in route.services]
            out.append(answers[0] if len(answers) == 1 else router.merge(answers))
    return "".join(out)


def ask(proc: Process, command: str) -> str:
    """One command's answer, or what went wrong in HAProxy's way (text ending in a blank line)."""
    try:
        return proc.send(command)
    except OSError as exc:
        return (
            f"cdlab-proxy: the HAProxy of '{proc.frontend.name}' (pid {proc.pid}) did not answer "
            f"'{command}': {exc}\n\n"
        )
