"""Self-contained mode: with no BASE_URL, start this release of the service here (one gunicorn
worker, the in-memory store) and test it, as the source material's test container does."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVICE_DIR = Path(os.environ.get("SERVICE_DIR", "/srv/app"))
PORT = 18000


@pytest.fixture(scope="session", autouse=True)
def self_contained() -> Iterator[None]:
    if os.environ.get("BASE_URL"):
        yield
        return
    env = dict(
        os.environ,
        DATABASE_URL="memory://",
        PORT=str(PORT),
        WEB_WORKERS="1",
        RELEASE=os.environ.get("RELEASE", "self-contained"),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "app.wsgi:application"],
        cwd=SERVICE_DIR,
        env=env,
    )
    url = f"http://127.0.0.1:{PORT}"
    deadline, last = time.monotonic() + 20, "not started"
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            break
        except OSError as exc:
            last = str(exc)
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.exit(f"the self-contained service did not start: {last}", returncode=3)
    import tests.api.test_api as api

    api.BASE_URL = url
    yield
    proc.terminate()
    proc.wait(timeout=25)
