"""Lessons for a class: narrated steps on the real lab, a check of the goal, a solve.

A lesson is data: steps (what is done, why it matters, what to look at now) and a check that
reads the lab (records, the registry, the proxy) and names what is still missing. ``run`` does
the steps, narrating each, and whatever stops it puts back what it changed (its ``undo``
actions, newest first), then says the measured outcome and what it left changed on purpose.

    lesson = catalog.get("first-deploy")
    outcome = lessons.run(lesson, lab, say=print)        # --step: wait=input
    lessons.check(lesson, lab)                           # [] when the goal is reached

``solve`` is ``run`` without pauses: for who is stuck, it does what the student should have.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lab.errors import ConfigError, RunStopped, Stop
from lab.ports.lab import Lab
from lab.release import signals


@dataclass
class Ctx:
    """What a running lesson's steps share: the lab, the narration, what they measured, what
    to put back (``undo``: run newest first when the lesson ends, however it ends) and what
    the lesson leaves changed on purpose (``changed``)."""

    lab: Lab
    say: Callable[[str], None]
    measured: dict[str, str] = field(default_factory=dict)
    undo: list[tuple[str, Callable[[], str]]] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)  # what a step found, for the next


@dataclass(frozen=True)
class Step:
    title: str  # what is done
    why: str  # why it matters
    look: str  # what to look at now: a URL, a graph, a command
    do: Callable[[Ctx], str]  # does it; one line of what it saw or measured


@dataclass(frozen=True)
class Lesson:
    name: str
    title: str
    goal: str  # what ``check`` verifies, as a student reads it
    steps: tuple[Step, ...]
    check: Callable[[Lab], list[str]]  # what is missing; [] when the goal is reached


@dataclass(frozen=True)
class Outcome:
    lesson: str
    seconds: float
    measured: dict[str, str]
    changed: tuple[str, ...]
    put_back: tuple[str, ...]


def find(lessons: tuple[Lesson, ...], name: str) -> Lesson:
    for lesson in lessons:
        if lesson.name == name:
            return lesson
    raise ConfigError("lesson", name, "one of: " + ", ".join(x.name for x in lessons))


def run(
    lesson: Lesson, lab: Lab, say: Callable[[str], None], wait: Callable[[], object] | None = None
) -> Outcome:
    """Do the lesson's steps, narrated; ``wait`` (``--step``) is called after each. What the
    steps asked to put back is put back whatever ends the run (an error, Ctrl-C), and said."""
    ctx = Ctx(lab, say)
    started = time.monotonic()
    total = len(lesson.steps)
    say(f"lesson {lesson.name}: {lesson.title}")
    say(f"goal: {lesson.goal}")
    put_back: list[str] = []
    stopped: Stop | None = None
    at = ""
    try:
        with signals.stoppable():  # SIGINT, SIGTERM, SIGHUP: Stop, then the put-backs
            for n, step in enumerate(lesson.steps, 1):
                at = step.title
                say(f"\n[{n}/{total}] {step.title}")
                say(f"    why: {step.why}")
                t0 = time.monotonic()
                seen = step.do(ctx)
                say(f"    done in {time.monotonic() - t0:.1f} s: {seen}")
                say(f"    look: {step.look}")
                if wait is not None and n < total:
                    wait()
    except Stop as stop:
        stopped = stop
    finally:
        with signals.deferred(say):  # a second Ctrl-C waits: everything is put back
            while ctx.undo:
                what, action = ctx.undo.pop()
                try:
                    put_back.append(f"{what}: {action()}")
                except Exception as exc:  # say it and go on: the rest is still put back
                    put_back.append(f"{what}: could not ({exc}); do it by hand")
            for line in put_back:
                say(f"put back: {line}")
    if stopped is not None:
        raise RunStopped(stopped.signal, at, put_back)
    outcome = Outcome(
        lesson.name,
        time.monotonic() - started,
        dict(ctx.measured),
        tuple(ctx.changed),
        tuple(put_back),
    )
    say(f"\noutcome of {lesson.name} ({outcome.seconds:.0f} s):")
    for key, value in outcome.measured.items():
        say(f"    {key}: {value}")
    if outcome.changed:
        say("left changed on purpose: " + "; ".join(outcome.changed))
    else:
        say("the lab is as the lesson found it")
    return outcome


def check(lesson: Lesson, lab: Lab) -> list[str]:
    """What is still missing for ``lesson``'s goal ([]: reached)."""
    return lesson.check(lab)


def render_check(lesson: Lesson, missing: list[str]) -> str:
    if not missing:
        return f"{lesson.name}: yes, the goal is reached ({lesson.goal})"
    return f"{lesson.name}: no, not yet ({lesson.goal}); missing:\n" + "\n".join(
        f"  - {m}" for m in missing
    )
