"""Integration tests against a running release: BASE_URL, and EXPECT_RELEASE if set.
Run by cdlab in the release's own image before any user reaches it. Exit 0 when all pass."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request


def get(base: str, path: str) -> tuple[int, dict[str, str], str]:
    try:
        with urllib.request.urlopen(base + path, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def main() -> int:
    base, expect = os.environ["BASE_URL"].rstrip("/"), os.environ.get("EXPECT_RELEASE", "")
    checks = []
    status, headers, _ = get(base, "/ready")
    checks.append(("ready answers 200", status == 200))
    status, headers, body = get(base, "/version")
    doc = json.loads(body) if status == 200 else {}
    checks.append(("version answers 200", status == 200))
    if expect:
        checks.append((f"release is {expect}", doc.get("release") == expect))
        checks.append(("X-Release header", headers.get("X-Release") == expect))
    status, _, body = get(base, "/")
    checks.append(("a quote is served", status == 200 and bool(json.loads(body).get("quote"))))
    status, _, _ = get(base, "/no-such-path")
    checks.append(("unknown paths are 404", status == 404))
    for name, ok in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    passed = sum(ok for _, ok in checks)
    print(f"{passed} passed, {len(checks) - passed} failed")
    return 0 if passed == len(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
