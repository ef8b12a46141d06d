"""The exception tree of cdlab.

    LabError                      root: everything the lab raises on purpose
    ├── ConfigError               bad input: a config or topology value (``field``, ``value``)
    │   └── UnknownKey            a key the file does not define (``known``, ``nearest``)
    ├── PreflightError            the workstation is missing something (``what``, ``fix``)
    ├── CommandError              a subprocess failed (``argv``, ``returncode``, ``output``)
    ├── VagrantError              a Vagrant action failed (``action``, ``host``, ``output``)
    ├── EngineError               a host's Docker engine did not answer (``host``, ``last_error``)
    ├── SwarmError                a step making prod's nodes one swarm failed (``action``,
    │                             ``host``, ``detail``)
    ├── ImageBuildError           an image build failed (``image``, ``build_log``)
    ├── CheckError                a service folder failed its static checks (``folder``,
    │                             ``release``, ``found``)
    ├── RegistryError             the lab registry refused or did not answer (``url``, ``status``)
    ├── EtcdError                 the route store refused or did not answer (``action``, ``url``,
    │                             ``detail``)
    ├── ProxyError                the proxy did not answer, or not as awaited in time (``action``,
    │                             ``backend``, ``host``, ``detail``, ``timeout``)
    ├── OwnershipError            the lab's hosts belong to another checkout (``owner``)
    ├── StackError                prod's stack could not be read or made healthy (``action``,
    │                             ``services``, ``detail``, ``output``)
    ├── LoadError                 load could not be sent or read back (``action``, ``detail``,
    │                             ``log``)
    ├── LockHeld                  another deploy holds the deploy lock (``holder``, ``raw``,
    │                             ``ttl``)
    ├── FencedOut                 a run's write refused: the lock it took is no longer its own
    │                             (``action``, ``key``, ``lock_key``, ``revision``, ``found``)
    ├── PushError                 ``invoke dev.push`` failed (``action``, ``returncode``,
    │                             ``release``, ``output``)
    ├── LessonError               a lesson's step did not see what the lesson is about
    └── ReleaseError              a release run failed (``service``, ``release``, ``stage``)
        ├── CanaryAborted         the judge (or a person) aborted a canary (``weight``, ``reason``)
        ├── BakeFailed            the new release failed its bake window (``reason``)
        ├── SchemaRefused         a migration a scratch copy showed would break the live
        │                         release, refused before prod's database changed (``notes``)
        ├── MigrationFailed       a migration failed, on a scratch copy or on prod's database
        └── RunStopped            a run stopped by a signal or a lost lease (``signal``), after
                                  its undo: what was undone is in ``undone``

    Stop (BaseException)          raised in the main thread by SIGINT, SIGTERM or a lost lease
                                  while a release run applies its plan; never caught as an error

Every exception class of the lab is defined here and drawn above (``tests/unit/test_errors.py``
checks both); a module that raises one may import it for its callers (``lock.LockHeld``).
The library raises; only ``tasks.py`` presents. Every message says what was attempted, on what,
the evidence, and the next step when one is known.
"""

from __future__ import annotations

import errno
import json
import socket
from collections.abc import Sequence
from typing import Protocol

NO_SPACE = "no space left on device"


def disk_full_hint(exc: BaseException) -> str:
    """What to do when ``exc`` says a disk is full ("" when it does not): an ``OSError``
    (ENOSPC) of a write here, or an engine's error text (a build step, a layer); "" as well
    when ``exc`` already carries the hint (an error passed up and presented again)."""
    if "free space" in str(exc):
        return ""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = f" writing {exc.filename}" if exc.filename else ""
        return (
            f"\nThe disk of {socket.gethostname()} is full{where}: free space there (`df -h`, "
            "then remove old logs, work folders or images) and run again (`invoke deploy "
            "--ref COMMIT`; a push of a commit cd already has starts nothing)."
        )
    if NO_SPACE in str(exc).lower():
        return (
            "\nA Docker engine's disk is full (it said so above): free space on that host "
            "(`invoke lab.shell cd` for a build, `prod` for a pull or a container; then "
            "`docker builder prune` and `docker image prune`) and run again (`invoke deploy "
            "--ref COMMIT`)."
        )
    return ""


def tail(text: str, lines: int = 15) -> str:
    """The last ``lines`` non-empty lines of ``text``, indented for an error message."""
    kept = [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join("    " + line for line in kept)


class LabError(Exception):
    """Root of every error cdlab raises on purpose."""


class ConfigError(LabError):
    def __init__(self, field: str, value: object, expected: str, source: str = "") -> None:
        self.field, self.value, self.expected, self.source = field, value, expected, source
        where = f" in {source}" if source else ""
        super().__init__(f"bad value for '{field}'{where}: {value!r}; expected {expected}")


class UnknownKey(ConfigError):
    """A key ``field`` (holding ``value``) that the file's table does not define: ``known``, the
    keys it does; ``nearest``, the one most like ``field`` ("" when none is)."""

    def __init__(
        self, field: str, value: object, known: Sequence[str], source: str = "", nearest: str = ""
    ) -> None:
        self.known, self.nearest = tuple(known), nearest
        keys = ", ".join(self.known)
        super().__init__(field, value, f"one of the known keys: {keys}", source)
        where = f" in {source}" if source else ""
        guess = f" did you mean '{nearest}'?" if nearest else ""
        self.args = (f"unknown key '{field}'{where} (value {value!r}):{guess} Known keys: {keys}",)


class PreflightError(LabError):
    def __init__(self, what: str, fix: str, evidence: str = "") -> None:
        self.what, self.fix, self.evidence = what, fix, evidence
        body = f"{what}\n{tail(evidence)}" if evidence else what
        super().__init__(f"{body}\nNext step: {fix}")


class CommandError(LabError):
    def __init__(self, argv: Sequence[str], returncode: int, output: str, hint: str = "") -> None:
        self.argv, self.returncode, self.output = list(argv), returncode, output
        msg = f"command failed (exit {returncode}): {' '.join(self.argv)}\n{tail(output)}"
        super().__init__(msg + (f"\nNext step: {hint}" if hint else ""))


class VagrantError(LabError):
    def __init__(self, action: str, host: str | None, output: str, hint: str = "") -> None:
        self.action, self.host, self.output = action, host, output
        on = f" on host '{host}'" if host else ""
        msg = f"vagrant {action}{on} failed:\n{tail(output)}"
        super().__init__(msg + (f"\nNext step: {hint}" if hint else ""))


class EngineError(LabError):
    def __init__(self, host: str, url: str, last_error: str, hint: str = "", log: str = "") -> None:
        self.host, self.url, self.last_error, self.log = host, url, last_error, log
        msg = f"the Docker engine of '{host}' at {url} did not answer: {last_error}"
        if log:
            msg += f"\nlast lines of the host's log:\n{tail(log)}"
        super().__init__(msg + (f"\nNext step: {hint}" if hint else ""))


class SwarmError(LabError):
    """``action`` (init, join, leave, remove, wait) on prod node ``host`` failed: ``detail``."""

    def __init__(self, action: str, host: str, detail: str, why: str = "", hint: str = "") -> None:
        self.action, self.host, self.detail = action, host, detail
        super().__init__(
            f"could not {action} on {host}{f' ({why})' if why else ''}: {detail}\n"
            "Next step: "
            + (hint or "'invoke lab.status' shows each node; 'invoke lab.up' tries again.")
        )


class ImageBuildError(LabError):
    def __init__(self, image: str, build_log: str, reason: str = "") -> None:
        self.image, self.build_log = image, build_log
        why = f": {reason}" if reason else ""
        super().__init__(f"could not build image '{image}'{why}\n{tail(build_log, 25)}")


class CheckError(LabError):
    """The static checks of ``folder`` at commit ``release`` found problems (``found``:
    ``path:line: what`` each); nothing was built."""

    def __init__(self, folder: str, release: str, found: list[str]) -> None:
        self.folder, self.release, self.found = folder, release, found
        more = f"\n  ... and {len(found) - 10} more" if len(found) > 10 else ""
        super().__init__(
            f"static checks of {folder} at {release} failed:\n  "
            + "\n  ".join(found[:10])
            + more
            + "\nNothing was built; the live release keeps serving. Fix it and commit again."
        )


class RegistryError(LabError):
    def __init__(self, action: str, url: str, detail: str, status: int | None = None) -> None:
        self.action, self.url, self.status, self.detail = action, url, status, detail
        code = f" HTTP {status}" if status is not None else ""
        super().__init__(
            f"could not {action} at {url}:{code} {detail}\n"
            "Next step: run 'invoke lab.status' to check the registry host."
        )


class EtcdError(LabError):
    """The route store (etcd's JSON gateway on prod) refused ``action`` or did not answer."""

    def __init__(self, action: str, url: str, detail: str) -> None:
        self.action, self.url, self.detail = action, url, detail
        super().__init__(
            f"could not {action} in etcd at {url}: {detail}\n"
            "Next step: run 'invoke lab.status'; 'invoke lab.up' restarts the stack."
        )


class ProxyError(LabError):
    """The proxy did not ``action`` (answer a command, or reach a state before ``timeout``).
    ``url``: its Runtime API when the command went unanswered; ``backend`` and ``host``: the
    slot it was about ("" when none); ``detail``: the evidence (the socket's error, or the last
    state seen while waiting); ``hint``: the next step."""

    def __init__(
        self,
        action: str,
        detail: str,
        *,
        url: str = "",
        backend: str = "",
        host: str = "",
        timeout: float | None = None,
        hint: str = "",
    ) -> None:
        self.action, self.detail, self.url = action, detail, url
        self.backend, self.host, self.timeout, self.hint = backend, host, timeout, hint
        at = f" at {url}" if url else ""
        if timeout is None:
            evidence = f" ({detail})"
        else:
            evidence = f" within {timeout:.0f} s (last: {detail})"
        msg = f"the proxy{at} did not {action}{evidence}"
        super().__init__(msg + (f". {hint}" if hint else ""))


class OwnershipError(LabError):
    def __init__(self, host: str, owner: str, here: str) -> None:
        self.host, self.owner = host, owner
        super().__init__(
            f"the lab host '{host}' belongs to the cdlab checkout at {owner}, not to {here}.\n"
            f"Next step: run 'invoke lab.destroy' in {owner} (or remove that checkout), "
            "then run 'invoke lab.up' here again; or run 'invoke lab.up --take-over' here to "
            "remove that lab's hosts and volumes and build this one (its images are kept)."
        )


class StackError(LabError):
    """Could not ``action`` on prod's stack: ``services``, the Compose services at fault (empty
    when none is known); ``detail``, the evidence; ``output``, what Compose or the failing
    containers' logs said; ``hint``, the next step."""

    def __init__(
        self,
        action: str,
        detail: str,
        *,
        services: Sequence[str] = (),
        output: str = "",
        hint: str = "",
    ) -> None:
        self.action, self.detail, self.services = action, detail, tuple(services)
        self.output, self.hint = output, hint
        msg = f"could not {action}: {detail}" + (f"\n{output.rstrip()}" if output else "")
        super().__init__(msg + (f"\nNext step: {hint}" if hint else ""))


class LoadError(LabError):
    """Could not ``action`` (send load, read back what it wrote): ``detail``, the evidence;
    ``log``, the end of locust's log when it is the evidence; ``hint``, the next step."""

    def __init__(self, action: str, detail: str, *, log: str = "", hint: str = "") -> None:
        self.action, self.detail, self.log, self.hint = action, detail, log, hint
        msg = f"could not {action}: {detail}" + (f"\n{log.rstrip()}" if log else "")
        super().__init__(msg + (f"\nNext step: {hint}" if hint else ""))


class LockHolder(Protocol):
    """Who holds the deploy lock: ``lab.release.lock.Holder``, described by its fields here so
    that this module imports nothing of the lab."""

    @property
    def who(self) -> str: ...
    @property
    def pid(self) -> int: ...
    @property
    def since(self) -> str: ...  # ISO time
    @property
    def what(self) -> str: ...  # e.g. "deploy app 3f9c2e1a0b1c"


class LockHeld(LabError):
    """Another deploy holds the lock: ``holder`` as its record says (None when it cannot be
    read: then ``raw`` is shown); ``ttl``, the seconds a crashed holder's lease lasts."""

    def __init__(self, holder: LockHolder | None, raw: bytes, ttl: int) -> None:
        self.holder, self.raw, self.ttl = holder, raw, ttl
        who = (
            f"{holder.who} (pid {holder.pid}) since {holder.since}: {holder.what}"
            if holder
            else raw.decode(errors="replace")[:200]
        )
        super().__init__(
            f"another deploy holds the lock: {who}.\nNext step: wait for it to "
            f"finish; a crashed run's lock expires within {ttl} s, or run "
            "'invoke lock.release' if you are sure no deploy is running."
        )


class FencedOut(LabError):
    """A run's ``action`` on ``key`` refused by its fence: the lock ``lock_key`` no longer holds
    what this run created at ``revision`` (its lease expired, 'invoke lock.release' removed it,
    or another run took it since: ``found``, the lock's value now, None when it is gone).
    Nothing was written."""

    def __init__(
        self, action: str, key: str, lock_key: str, revision: int, found: bytes | None
    ) -> None:
        self.action, self.key, self.lock_key = action, key, lock_key
        self.revision, self.found = revision, found
        if found is None:
            now = (
                "the lock is gone: its lease expired (no renewal reached etcd in time) or "
                "'invoke lock.release' removed it"
            )
        else:
            now = f"another run holds it now: {_holder_text(found)}"
        super().__init__(
            f"could not {action}: this run no longer holds the lock it took ({lock_key}, "
            f"created at revision {revision}); {now}. The write was refused: nothing was "
            f"written to {key}.\nNext step: 'invoke lock.status' shows who holds the lock and "
            "'invoke releases' what is live; once the lock is free, run the deploy or rollback "
            "again (it clears what this run left)."
        )


def _holder_text(raw: bytes) -> str:
    """A lock's stored holder (``lab.release.lock.Holder`` as JSON) for a message; the raw
    value when it is not one."""
    try:
        doc = json.loads(raw)
        return f"{doc['who']} (pid {doc['pid']}) since {doc['since']}: {doc['what']}"
    except (ValueError, KeyError, TypeError):
        return raw.decode(errors="replace")[:200]


class LessonError(LabError):
    """A lesson's step did not see what the lesson is about (the lab misbehaved, or the
    student's lab is not where the lesson starts); the message says what and what to do."""


class PushError(LabError):
    """Could not ``action`` from the dev clone (``invoke dev.push``): ``returncode`` of the
    command when it failed, ``release`` the commit pushed when known, ``detail`` the evidence,
    ``output`` what the command said when it was not streamed to the terminal already."""

    def __init__(
        self,
        action: str,
        detail: str,
        *,
        returncode: int | None = None,
        release: str = "",
        output: str = "",
        hint: str = "",
    ) -> None:
        self.action, self.detail, self.returncode = action, detail, returncode
        self.release, self.output, self.hint = release, output, hint
        code = f" (exit {returncode})" if returncode is not None else ""
        msg = f"could not {action}{code}: {detail}" + (f"\n{tail(output, 25)}" if output else "")
        super().__init__(msg + (f"\nNext step: {hint}" if hint else ""))


class ReleaseError(LabError):
    """A release run failed; ``stage`` is the key of the step it failed at, when known."""

    def __init__(self, message: str, service: str = "", release: str = "", stage: str = "") -> None:
        self.service, self.release, self.stage = service, release, stage
        self.notes: dict[str, str] = {}  # named facts for the run's record (e.g. the schema)
        super().__init__(message)


class MigrationFailed(ReleaseError):
    """A migration failed: on a scratch copy of the database (prod's untouched), or on prod's
    (transactional: its version as before)."""


class SchemaRefused(ReleaseError):
    """A migration that a scratch copy showed would break the release that must keep working
    (the live one), refused before prod's database changed; ``notes``: the schema facts."""

    def __init__(
        self, message: str, service: str, release: str, notes: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, service, release, "schema-check")
        self.notes = dict(notes or {})


class CanaryAborted(ReleaseError):
    def __init__(
        self,
        service: str,
        release: str,
        weight: int,
        reason: str,
        figures: dict[str, float] | None = None,
    ) -> None:
        self.weight, self.reason = weight, reason
        self.figures = dict(figures or {})  # what the judge read (kept in the step's record)
        super().__init__(
            f"canary of {service}-{release} aborted at {weight}%: {reason}",
            service,
            release,
            f"canary-{weight}",
        )


class BakeFailed(ReleaseError):
    def __init__(self, service: str, release: str, reason: str, seconds: float) -> None:
        self.reason, self.seconds = reason, seconds
        super().__init__(
            f"{service}-{release} failed its bake window after {seconds:.1f} s: {reason}",
            service,
            release,
            "bake",
        )


class Stop(BaseException):
    """SIGINT, SIGTERM or a lost lock lease while a release run applies its plan."""

    def __init__(self, signal: str) -> None:
        self.signal = signal
        super().__init__(signal)


class RunStopped(ReleaseError):
    """A run stopped by ``Stop``, raised once what it had done is undone."""

    def __init__(self, signal: str, stage: str, undone: list[str], note: str = "") -> None:
        self.signal, self.undone = signal, undone
        what = ", ".join(undone) if undone else "nothing (no step had changed prod)"
        super().__init__(
            f"interrupted by {signal} during '{stage}'; undone: {what}.{note}", stage=stage
        )
