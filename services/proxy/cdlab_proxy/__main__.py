"""``python3 -m cdlab_proxy``: the proxy's container process (see the package's docstring)."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable

from . import config, document, tls
from .etcd import Etcd
from .metrics import EdgeMetrics
from .serve import start
from .supervisor import Supervisor, log

RESYNC = 5.0  # seconds between full passes (what a missed event left); sooner after a death


def _forever(name: str, step: Callable[[], None]) -> None:
    """Run ``step`` again and again; etcd restarting or a busy HAProxy never ends the loop."""
    said = ""
    while True:
        try:
            step()
            said = ""
        except Exception as exc:
            msg = f"{name}: {type(exc).__name__}: {exc}; retrying"
            if msg != said:
                log(msg)
                said = msg
            time.sleep(0.5)


def main() -> int:
    settings = config.from_env(os.environ)
    # a restarted container still has the files of the processes of its previous run
    shutil.rmtree(settings.run_dir, ignore_errors=True)
    os.makedirs(settings.run_dir, exist_ok=True)
    etcd = Etcd(settings.etcd_host, settings.etcd_port, context=tls.client(settings.tls_dir))
    sup = Supervisor(settings, etcd)
    # listening for the request lines before the first HAProxy sends one
    EdgeMetrics(
        settings.edge_listen,
        settings.carbon,
        settings.log_store,
        lambda: {n: p for n, p in list(sup.processes.items()) if p.alive},
        lambda service: config.release_map(settings, service),
        log,
        host=os.environ.get("CDLAB_HOST", "prod"),
    ).start()
    start(
        sup,
        settings.listen,
        settings.runtime_port,
        settings.web_port,
        settings.runtime_listen,
        tls.server(settings.tls_dir),
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, f: stop.set())

    def frontends() -> None:
        sup.reconcile()
        etcd.watch(document.FRONTENDS_PREFIX, lambda keys: sup.reconcile())

    def watching(prefix: str, changed: Callable[[list[str] | None], None]) -> Callable[[], None]:
        """A pass of every service's routes, then ``changed`` at each change under ``prefix``;
        not before the first full pass has started the processes and applied their routes."""

        def step() -> None:
            if sup.ready:
                sup.reconcile_routes()
                etcd.watch(prefix, changed)
            else:
                time.sleep(0.1)

        return step

    routes = watching(document.ROUTES_PREFIX, sup.reconcile_routes)
    # a node's addresses drained or back: every service's slots there
    drained = watching(document.DRAINED_PREFIX, lambda keys: sup.reconcile_routes())

    def resync() -> None:
        sup.wait(RESYNC)
        sup.reconcile()

    steps = (("frontends", frontends), ("routes", routes), ("drained", drained), ("resync", resync))
    for name, step in steps:
        threading.Thread(target=_forever, args=(name, step), daemon=True, name=name).start()
    log(
        f"Runtime API on {settings.runtime_listen or settings.listen}:{settings.runtime_port}"
        f" ({'mutual TLS' if settings.tls_dir else 'plain'}), health on "
        f"{settings.listen}:{settings.web_port}, etcd at {settings.etcd_host}:{settings.etcd_port}"
    )
    while not stop.wait(1):
        pass
    log("stopping: every HAProxy finishes its requests")
    sup.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
