"""Integration tests of a running pypiserver at ``BASE_URL``, through its own pages only.

Run from the integration-test image (Dockerfile.test) against a candidate before any user reaches
it. Standard library only. They deliberately stay off the pages that list file hashes
(``/packages/``, ``/simple/<project>/``): README.md says why.
"""

from __future__ import annotations

import io
import json
import os
import re
import unittest
import urllib.error
import urllib.parse
import urllib.request
import zipfile

BASE_URL = os.environ.get("BASE_URL", "http://127.0.0.1:8080").rstrip("/")
PROJECT = "pypiserver"  # the wheel baked into the image's package directory


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a 3xx is an answer to check, not one to follow


_opener = urllib.request.build_opener(_NoRedirect)


def request(path: str, data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request to BASE_URL, redirects not followed."""
    try:
        with _opener.open(urllib.request.Request(BASE_URL + path, data=data), timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def found(pattern: bytes, page: bytes) -> str:
    """The first group of ``pattern`` in ``page``; fails, quoting the page, when absent."""
    match = re.search(pattern, page)
    if match is None:
        raise AssertionError(f"{pattern!r} not on the page: {page[:300]!r}")
    return match.group(1).decode()


class Index(unittest.TestCase):
    def test_health_answers_ok(self) -> None:
        status, _, body = request("/health")
        self.assertEqual((status, body), (200, b"Ok"))

    def test_welcome_page_counts_the_baked_package(self) -> None:
        status, _, body = request("/")
        self.assertEqual(status, 200)
        self.assertGreaterEqual(int(found(rb"serving (\d+) packages", body)), 1)

    def test_simple_index_lists_the_project(self) -> None:
        status, _, body = request("/simple/")
        self.assertEqual(status, 200)
        self.assertIn(f'<a href="{PROJECT}/">{PROJECT}</a>'.encode(), body)

    def test_served_release_is_the_one_the_server_runs(self) -> None:
        _, _, welcome = request("/")
        running = found(rb"running version ([\w.]+) of", welcome)
        status, _, body = request(f"/{PROJECT}/json")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["info"]["version"], running)

    def test_the_wheel_downloads_whole(self) -> None:
        status, _, body = request(f"/{PROJECT}/json")
        self.assertEqual(status, 200)
        doc = json.loads(body)
        url = doc["releases"][doc["info"]["version"]][0]["url"]
        status, _, wheel = request(urllib.parse.urlsplit(url).path)
        self.assertEqual(status, 200)
        with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
            self.assertIsNone(archive.testzip())
            self.assertIn(f"{PROJECT}/__init__.py", archive.namelist())

    def test_pep503_redirect_to_the_canonical_path(self) -> None:
        status, headers, _ = request("/simple")
        self.assertEqual(status, 301)
        self.assertEqual(urllib.parse.urlsplit(headers["Location"]).path, "/simple/")

    def test_unknown_project_is_404_not_a_redirect_to_pypi(self) -> None:
        status, _, _ = request("/simple/no-such-project-cdlab/")
        self.assertEqual(status, 404)

    def test_anonymous_upload_is_refused(self) -> None:
        status, _, _ = request("/", data=b":action=file_upload")
        self.assertEqual(status, 401)


if __name__ == "__main__":
    unittest.main(verbosity=2)
