"""``python3 -m cdlab_logs serve|check|query``: the store's container process, its
healthcheck, and its reader (see the package's docstring)."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from . import config, query, serve
from .store import OTHER
from .syslog import SERVICE, safe_name

NO_LOGS = 3  # query's exit code when the store has nothing for the service (or release)


def _service(text: str) -> str:
    if text != OTHER and not re.fullmatch(SERVICE, text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a service name ([a-z][a-z0-9-]*)")
    return text


def _release(text: str) -> str:
    if safe_name(text) != text:  # what the store names files by: never a path
        raise argparse.ArgumentTypeError(f"{text!r} is not a release name ([0-9a-z.-]+)")
    return text


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a count of lines (0 or more)")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (more than 0)")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m cdlab_logs", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="receive syslog datagrams into the store")
    sub.add_parser("check", help="exit 0 when the receiver answers that it stores lines")
    q = sub.add_parser("query", help="print a service's lines in time order")
    q.add_argument("--service", required=True, type=_service)
    q.add_argument(
        "--release", type=_release, help="only this release (default: all, each line names it)"
    )
    q.add_argument("--since", type=_seconds, metavar="SECONDS", help="only the last SECONDS")
    q.add_argument("--lines", type=_count, metavar="N", help="only the last N lines")
    q.add_argument("--follow", action="store_true", help="then print new lines as they arrive")
    q.add_argument("--json", action="store_true", help="the stored JSON objects, one a line")
    q.add_argument(
        "--while-stdin-open",
        action="store_true",
        help="with --follow, stop when standard input closes (a remote reader went away)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = config.from_env(os.environ)
    except ValueError as exc:
        print(f"cdlab-logs: {exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        why = serve.check(settings.probe_address)
        print(why or "ok", file=sys.stderr if why else sys.stdout)
        return 1 if why else 0
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, f: stop.set())
    if args.command == "serve":
        serve.serve(settings, stop)
        return 0
    root = Path(settings.root)
    why = query.missing(root, args.service, args.release)
    if why:
        print(f"cdlab-logs: {why}", file=sys.stderr)
        return NO_LOGS
    q = query.Query(args.service, args.release, args.since, args.lines, args.json)
    stdin = sys.stdin.fileno() if args.while_stdin_open and sys.stdin else None
    try:
        query.run(root, q, sys.stdout, follow=args.follow, stop=stop, stdin_fd=stdin)
    except BrokenPipeError:  # the reader stopped reading (| head): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
