# gunicorn settings for the demo service (a production server; never a development one).
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_WORKERS", "2"))
threads = int(os.environ.get("WEB_THREADS", "8"))
keepalive = 30  # the proxy keeps connections open to us
graceful_timeout = 20  # on SIGTERM: stop accepting, finish in-flight requests, then exit
timeout = 30
worker_tmp_dir = "/dev/shm"  # the root filesystem is read-only
accesslog = None  # the app writes one key=value line per request itself
errorlog = "-"
loglevel = "info"


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    """Each worker warm (app built, database pool open) before it takes a request."""
    warm = getattr(worker.wsgi, "warm", None)
    if warm is not None:
        warm()


def on_starting(server):  # type: ignore[no-untyped-def]
    """A CDLAB_MISBEHAVE (a test hook, app/misbehave.py) that is not understood stops the
    server before any worker starts, instead of failing each request."""
    from app.misbehave import parse

    parse(os.environ.get("CDLAB_MISBEHAVE", ""))
