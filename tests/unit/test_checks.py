"""Static checks of a committed service folder (pure)."""

from __future__ import annotations

import pytest

from lab.build import checks


def test_good_files_have_no_problems() -> None:
    files = {
        "s/a.py": b"x = 1\n",
        "s/service.toml": b'name = "s"\n',
        "s/data.json": b"{}",
        "s/Dockerfile": b"# comment\nARG BASE\nFROM ${BASE}\n",
        "s/logo.png": b"\x89PNG\xff",
        "s/README": b"anything",
    }
    assert checks.problems(files) == []


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"s/a.py": b"def f(:\n"}, "s/a.py:1: "),
        ({"s/b.py": b"x = 1\nif x\n"}, "s/b.py:2: "),
        ({"s/service.toml": b"name = \n"}, "s/service.toml:1: "),
        ({"s/x.json": b"{"}, "s/x.json:1: "),
        ({"s/Dockerfile": b"RUN true\n"}, "must be FROM"),
        ({"s/Dockerfile.test": b"\n# only a comment\n"}, "empty Dockerfile"),
        ({"s/a.py": b"\xff\xfe"}, "not UTF-8"),
    ],
)
def test_each_problem_names_file_and_line(files: dict[str, bytes], expected: str) -> None:
    found = checks.problems(files)
    assert len(found) == 1 and expected in found[0]


def test_the_error_lists_problems_and_says_nothing_was_built() -> None:
    err = checks.CheckError("services/app", "abc", [f"f{i}.py:1: bad" for i in range(12)])
    text = str(err)
    assert "f0.py:1: bad" in text and "and 2 more" in text and "Nothing was built" in text
