"""cdlab's proxy: one HAProxy per service, routes from etcd applied through the Runtime API.

The lab writes two documents per service to etcd (``document``): its FRONTEND
(``/cdlab/frontends/<service>``: public port, service port, health path, maxconn, try timeout)
and its ROUTES (``/cdlab/routes/<service>``: releases, weights, drain, an A/B match). The
supervisor runs one HAProxy process per frontend document (``fleet``: start, replace, stop;
``config``: each one's static configuration, never reloaded) and makes each process's server
slots serve its routes (``slots``: commands on its admin socket; a release of K replicas takes K
slots). Adding a service starts its process and touches no other; a killed and restarted proxy
comes back with every frontend, release and weight. While a DRAINED-addresses document exists
(``/cdlab/drained/<key>``), the slots at its addresses drain in every service.

Port 9999 is the Runtime API for all of them (``router``: a command goes to the process owning
the backend it names; a ``show`` naming none is answered by all, merged); port 8404 answers
``/healthz``. On prod, etcd and the Runtime API speak mutual TLS with the control plane's
certificates (``tls``), and the router listens on the stack's control network only. Standard
library only: the lab's side imports ``document`` and the parsers.

    modules: document, slots, config, fleet, router, haproxy, runtime, etcd, tls, supervisor,
    serve, __main__
"""
