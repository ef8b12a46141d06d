"""One exception tree: every exception class of the lab is defined in ``lab/errors.py`` and drawn,
under its parent and with the attributes it keeps, in that module's docstring."""

from __future__ import annotations

import builtins
import importlib
import inspect
import pkgutil
import re
from dataclasses import dataclass

import pytest

import lab
from lab import errors

# a tree line: "    ├── Name    what it is (``attr``)"; the root has no branch, a root that is not
# an Exception names its base: "    Stop (BaseException)    ..."
_ENTRY = re.compile(
    r"^ {4}(?P<indent>(?:[│ ] {3})*)(?P<branch>[├└]── )?(?P<name>[A-Z]\w*)"
    r"(?: \((?P<base>\w+)\))? {2,}\S"
)
_ATTRIBUTE = re.compile(r"``(\w+)``")


@dataclass(frozen=True)
class Drawn:
    name: str
    parent: str  # the class it is drawn under, or the base a root names ("Exception" if none)
    attributes: tuple[str, ...]  # the ``names`` on its line and the lines continuing it


def drawn_tree(doc: str) -> list[Drawn]:
    """The classes drawn in ``doc``'s tree, in order (pure)."""
    found: list[Drawn] = []
    path: list[str] = []  # the names drawn above, by depth
    name, parent, text = "", "", ""
    for line in doc.splitlines():
        entry = _ENTRY.match(line)
        if entry is None:
            if name and line.strip():
                text += line  # a continuation line: more about the class above
                continue
            if name:
                found.append(Drawn(name, parent, tuple(_ATTRIBUTE.findall(text))))
            name = ""
            continue
        if name:
            found.append(Drawn(name, parent, tuple(_ATTRIBUTE.findall(text))))
        depth = len(entry["indent"]) // 4 + (1 if entry["branch"] else 0)
        path = [*path[:depth], entry["name"]]
        name, text = entry["name"], line
        parent = path[depth - 1] if depth else (entry["base"] or "Exception")
    if name:
        found.append(Drawn(name, parent, tuple(_ATTRIBUTE.findall(text))))
    return found


def lab_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class reachable in a module of ``lab``, by where it is defined."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(lab.__path__, "lab."):
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.split(".")[0] == "lab":
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_the_tree_is_read_with_parents_and_attributes() -> None:
    doc = """Title.

    Root                 the root (``a``)
    ├── Child            one (``b``,
    │                    ``c``)
    └── Other            two
        └── Grand        three (``d``)

    Alone (BaseException)    apart
                             on two lines (``e``)

The end, with ``f``.
"""
    assert drawn_tree(doc) == [
        Drawn("Root", "Exception", ("a",)),
        Drawn("Child", "Root", ("b", "c")),
        Drawn("Other", "Root", ()),
        Drawn("Grand", "Other", ("d",)),
        Drawn("Alone", "BaseException", ("e",)),
    ]


def test_every_exception_of_the_lab_is_defined_in_lab_errors() -> None:
    found = lab_exceptions()
    elsewhere = sorted(where for where, cls in found.items() if cls.__module__ != "lab.errors")
    assert elsewhere == [], f"define these in lab/errors.py (re-export them at home): {elsewhere}"
    assert errors.LabError in found.values() and errors.Stop in found.values()


def test_every_error_is_drawn_once_under_its_parent() -> None:
    tree = drawn_tree(errors.__doc__ or "")
    names = [d.name for d in tree]
    assert len(names) == len(set(names)), f"drawn twice: {names}"
    defined = {cls.__name__ for cls in lab_exceptions().values()}
    assert set(names) == defined
    for d in tree:
        cls = getattr(errors, d.name)
        base = getattr(errors, d.parent, None) or getattr(builtins, d.parent)
        assert cls.__bases__ == (base,), f"{d.name} is drawn under {d.parent}"


def test_the_attributes_drawn_are_the_ones_an_error_keeps() -> None:
    for d in drawn_tree(errors.__doc__ or ""):
        cls = getattr(errors, d.name)
        source = "".join(inspect.getsource(c) for c in cls.__mro__ if c.__module__ == "lab.errors")
        missing = [a for a in d.attributes if not re.search(rf"\bself\.{a}\b", source)]
        assert missing == [], f"{d.name} is drawn with {missing}, which it does not keep"


@pytest.mark.parametrize(
    ("home", "name"),
    [
        ("lab.release.lock", "LockHeld"),
        ("lab.release.devloop", "PushError"),
        ("lab.stack.project", "StackError"),
        ("lab.build.checks", "CheckError"),
        ("lab.proof.load", "LoadError"),
        ("lab.ports.proxy", "ProxyError"),
        ("lab.ports.etcd", "EtcdError"),
    ],
)
def test_an_error_is_still_importable_from_the_module_that_raises_it(home: str, name: str) -> None:
    cls = getattr(importlib.import_module(home), name)
    assert cls is getattr(errors, name) and issubclass(cls, errors.LabError)


def test_a_full_disk_is_named_with_what_to_do_and_nothing_else_is() -> None:
    import errno

    from lab.errors import disk_full_hint

    here = disk_full_hint(OSError(errno.ENOSPC, "No space left on device", "/x/build-app.log"))
    assert "is full writing /x/build-app.log" in here and "free space" in here
    engine = disk_full_hint(
        RuntimeError("failed to copy: write /var/lib/docker/x: no space left on device")
    )
    assert "engine's disk is full" in engine and "docker builder prune" in engine
    assert disk_full_hint(RuntimeError(f"build failed: no space left on device{engine}")) == ""
    assert disk_full_hint(OSError(errno.EACCES, "Permission denied", "/x")) == ""
    assert disk_full_hint(ValueError("bad value")) == ""
