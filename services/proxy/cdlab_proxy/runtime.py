"""Speaking to the services' HAProxy processes through their Runtime APIs: a service's routes
applied to its own process, and the router's commands answered."""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping

from . import router, slots
from .haproxy import Process

QUIET = ("IP changed", "no need to change")  # answers that only confirm what was asked


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


def apply_routes(
    proc: Process,
    name: str,
    wanted: slots.Wanted,
    map_path: str,
    lookup: Callable[[list[str]], dict[str, str]],
    say: Callable[[str], None],
) -> int:
    """Make ``name``'s process serve ``wanted``: only the commands that differ; how many."""
    match = name + slots.MATCH_SUFFIX
    state = proc.send("show servers state")
    to_map = slots.map_plan(
        map_path, slots.parse_map(proc.send(f"show map {map_path}")), wanted.patterns
    )
    desired = {name: wanted.servers, match: wanted.matched}
    found = {b: slots.parse_servers_state(state, b) for b in desired}
    # only a release taking a slot, or coming back from maintenance, needs its address:
    # no DNS lookups when in shape
    known = lookup(
        [
            d.host
            for b, ds in desired.items()
            for d in ds
            if d.host not in {s.fqdn for s in found[b] if not s.in_maintenance}
        ]
    )
    to_pool = [c for b, ds in desired.items() for c in slots.plan(b, found[b], ds, known)]
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
                f"{d.release}={d.weight}{' drain' if d.drain else ''}" for d in wanted.servers
            )
            + "".join(f"; matched requests -> {d.release}" for d in wanted.matched)
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
