"""The production entry point: ``gunicorn app.wsgi:application``."""

import sys

from app.metrics import Recorder, carbon_sender, safe
from app.settings import Settings
from app.store import open_store
from app.web import App


def build(settings: Settings) -> App:
    recorder = None
    if settings.carbon_host:
        instance = f"{settings.hostname}-{__import__('os').getpid()}"
        prefix = ".".join(["cdlab", safe(settings.service), safe(settings.release), safe(instance)])
        recorder = Recorder(prefix, carbon_sender(settings.carbon_host, settings.carbon_port))
    return App(settings, open_store(settings.database_url), recorder)


class _Lazy:
    """Builds the app in each worker after gunicorn forks (pools and threads are per process)."""

    def __init__(self) -> None:
        self.app: App | None = None

    def __call__(self, environ, start_response):  # type: ignore[no-untyped-def]
        if self.app is None:
            self.app = build(Settings.from_env())
        return self.app(environ, start_response)

    def warm(self) -> bool:
        """Build the app and open its database pool now, before the worker takes requests
        (gunicorn's ``post_worker_init``): a cold worker's first requests would otherwise wait
        for its connections, and a canary's judge reads that as the release being slow.
        A database that does not answer yet is not fatal: the first request tries again."""
        try:
            if self.app is None:
                self.app = build(Settings.from_env())
            self.app.store.ping()
            return True
        except Exception as exc:  # logged; the first request tries again
            print(f"warm-up: the database did not answer yet: {exc}", file=sys.stderr)
            return False


application = _Lazy()
