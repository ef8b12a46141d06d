"""The production entry point: ``gunicorn app.wsgi:application``."""

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


application = _Lazy()
