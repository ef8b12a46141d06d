"""Static checks of a service folder as committed: the pipeline's first stage after checkout,
before anything is built (pure: file name -> content in, problems out)."""

from __future__ import annotations

import json
import tomllib

from lab.errors import CheckError as CheckError  # its home before lab.errors held every error

_DOCKERFILE_FIRST = ("FROM", "ARG")


def problems(files: dict[str, bytes]) -> list[str]:
    """``path:line: what`` for each file that cannot be what its name says."""
    out = []
    for path, data in sorted(files.items()):
        name = path.rsplit("/", 1)[-1]
        try:
            text = data.decode()
        except UnicodeDecodeError:
            if name.endswith((".py", ".toml", ".json")) or name.startswith("Dockerfile"):
                out.append(f"{path}:1: not UTF-8 text")
            continue
        if name.endswith(".py"):
            try:
                compile(text, path, "exec", dont_inherit=True)
            except SyntaxError as exc:
                out.append(f"{path}:{exc.lineno or 1}: {exc.msg}")
        elif name.endswith(".toml"):
            try:
                tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                out.append(f"{path}:{getattr(exc, 'lineno', 1)}: {exc}")
        elif name.endswith(".json"):
            try:
                json.loads(text)
            except ValueError as exc:
                out.append(f"{path}:{getattr(exc, 'lineno', 1)}: {exc}")
        elif name.startswith("Dockerfile"):
            out += _dockerfile(path, text)
    return out


def _dockerfile(path: str, text: str) -> list[str]:
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        word = stripped.split()[0].upper()
        if word not in _DOCKERFILE_FIRST:
            return [f"{path}:{number}: the first instruction must be FROM (or ARG), not {word}"]
        return []
    return [f"{path}:1: empty Dockerfile"]
