"""Apply a plan through the ports; whatever stops it, undo what was done.

An exception in a step, SIGINT, SIGTERM or a lost lock lease (``Stop``, raised in the main
thread by ``signals.stoppable``) ends the run: the undo of every step done, the failing one
included, runs in reverse order while further signals are held back, and the outcome says what
stopped it, where, and what was undone. Steps after the commit point (``after_commit``) only
warn: a failure there, or a signal (which ends the run, the release live), is a warning.
``apply`` never raises; the caller records the outcome, then raises ``outcome.error``.

A run that lost the deploy lock has its route writes refused (``FencedOut``), its undo's
included: the undo stops at the first one refused. What is left is as consistent as the routes
that send traffic to it (nothing they route to is removed), and it is the lock's next holder's
to read as facts: the next deploy or rollback clears it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.errors import FencedOut, LabError, ReleaseError, RunStopped, Stop, disk_full_hint
from lab.progress import Progress
from lab.release import failpoints, records, signals
from lab.release.model import Plan, Step
from lab.release.ports import ReleasePorts


@dataclass(frozen=True)
class Outcome:
    result: str  # succeeded, failed or interrupted
    stage: str | None = None  # the key of the step it stopped at
    error: LabError | None = None
    undone: tuple[str, ...] = ()
    undo_errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    skipped: tuple[str, ...] = field(default_factory=tuple)

    @property
    def reason(self) -> str:
        return str(self.error).splitlines()[0] if self.error else ""


def apply(plan: Plan, ports: ReleasePorts, progress: Progress) -> Outcome:
    """Run ``plan``'s steps in order; see the module's docstring."""
    progress.plan(plan.keys)
    done: list[Step] = []
    warnings: list[str] = []
    skipped: list[str] = []
    with signals.deferred(progress.say):  # once out of ``stoppable``, signals are noted only
        return _apply(plan, ports, progress, done, warnings, skipped)


def _apply(
    plan: Plan,
    ports: ReleasePorts,
    progress: Progress,
    done: list[Step],
    warnings: list[str],
    skipped: list[str],
) -> Outcome:
    running: Step | None = None
    try:
        with signals.stoppable():
            skip_to = ""
            for step in plan.steps:
                if skip_to and step.key != skip_to:
                    skipped.append(step.key)
                    progress.record(step.title, "skipped", 0.0, "promoted by hand", key=step.key)
                    continue
                skip_to, running = "", step
                try:
                    skip_to = _run(step, ports, progress)
                except Exception as exc:
                    if not step.after_commit:
                        raise
                    warnings.append(f"{step.key}: {exc}".splitlines()[0])
                done.append(step)
                running = None
    except Stop as stop:
        if running is not None and running in done:  # it had ended when the signal came
            running = None
        finished = len(done) + len(skipped) == len(plan.steps) and running is None
        if finished or any(s.after_commit for s in [*done, *([running] if running else [])]):
            # every step had ended, or the release is live: a signal ends the run, undoes nothing
            where = running.key if running else done[-1].key
            warnings.append(f"{where}: interrupted by {stop.signal}; the release is live")
            return Outcome("succeeded", warnings=tuple(warnings), skipped=tuple(skipped))
        stage = running.key if running else (done[-1].key if done else "start")
        undone, errors = _undo(done + ([running] if running else []), ports, progress)
        note = _undo_note(errors)
        err = RunStopped(stop.signal, stage, undone, note)
        err.service, err.release = plan.service, plan.release
        return Outcome("interrupted", stage, err, tuple(undone), tuple(errors), tuple(warnings))
    except Exception as exc:
        assert running is not None
        undone, errors = _undo([*done, running], ports, progress)
        return Outcome(
            "failed",
            running.key,
            _as_release_error(exc, plan, running, undone, errors),
            tuple(undone),
            tuple(errors),
            tuple(warnings),
        )
    return Outcome("succeeded", warnings=tuple(warnings), skipped=tuple(skipped))


def _run(step: Step, ports: ReleasePorts, progress: Progress) -> str:
    skip_to = ""
    with progress.stage(step.title, step.key) as st:
        failpoints.hit(step.key)
        details, changed = [], False
        for action in step.do:
            try:
                result = action.run(ports)
            except LabError as exc:  # the figures a failure was decided on stay in the record
                for name, value in getattr(exc, "figures", {}).items():
                    st.figure(name, value)
                for name, text in getattr(exc, "notes", {}).items():
                    st.note(name, text)
                raise
            details.append(result.detail)
            changed = changed or result.changed
            for name, value in result.figures.items():
                st.figure(name, value)
            for name, text in result.notes.items():
                st.note(name, text)
            skip_to = skip_to or result.skip_to
        detail = "; ".join(d for d in details if d)
        st.changed(detail) if changed else st.unchanged(detail)
    return skip_to


def _undo(
    steps: list[Step], ports: ReleasePorts, progress: Progress
) -> tuple[list[str], list[str]]:
    """Undo ``steps`` in reverse order; further signals wait until it is done. A failed undo
    does not stop the others, except a write refused by the run's fence: the routes keep
    what this run wrote, so nothing they may send traffic to is removed after it."""
    undone: list[str] = []
    errors: list[str] = []
    todo = [s for s in reversed(steps) if s.undo and not s.after_commit]
    with signals.deferred(progress.say):
        for i, step in enumerate(todo):
            try:
                with progress.stage(f"undo: {step.title}", f"undo-{step.key}") as st:
                    st.changed("; ".join(a.run(ports).detail for a in step.undo))
                undone.append(step.key)
            except FencedOut as exc:
                left = ", ".join(s.key for s in todo[i:])
                errors.append(
                    f"{step.key}: {exc}".splitlines()[0]
                    + f" The undo stopped there; not undone: {left}."
                )
                break
            except Exception as exc:  # an undo that fails must not stop the others
                errors.append(f"{step.key}: {exc}".splitlines()[0])
    return undone, errors


def _undo_note(errors: list[str]) -> str:
    if not errors:
        return ""
    return (
        " Some undo failed (" + "; ".join(errors) + "). Next step: 'invoke releases' and "
        "'invoke lab.status' show what is left; run the deploy or rollback again."
    )


def _as_release_error(
    exc: Exception, plan: Plan, step: Step, undone: list[str], errors: list[str]
) -> LabError:
    """The error a failed run raises: a ``LabError`` as it is (with where it stopped), anything
    else wrapped with its type; and what the undo did."""
    what = ", ".join(undone) if undone else ("nothing" if errors else "nothing to undo")
    serving = f" Every request is back on {plan.previous}." if plan.previous and undone else ""
    tail = f"\nUndone: {what}.{serving}{_undo_note(errors)}{disk_full_hint(exc)}"
    if "start" in undone:  # the candidate ran: what it said is in the log store
        tail += f"\nIts output: {records.logs_command(plan.service, plan.release)}"
    if isinstance(exc, LabError):
        if isinstance(exc, ReleaseError):
            exc.stage = exc.stage or step.key
            exc.service, exc.release = exc.service or plan.service, exc.release or plan.release
        exc.args = (f"{exc}\nFailed at step '{step.key}' ({step.title}).{tail}",)
        return exc
    err = ReleaseError(
        f"'{step.title}' failed: {type(exc).__name__}: {exc}{tail}",
        plan.service,
        plan.release,
        step.key,
    )
    err.__cause__ = exc
    return err
