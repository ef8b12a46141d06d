"""cdlab's log store: every release's output and the proxy's request log, kept by release.

Docker's ``syslog`` logging driver on each host sends a container's lines as UDP datagrams
(``syslog``: exactly what it sends, parsed) with the tag ``<service>/<release>/<container>``;
the proxy's supervisor sends its request lines in batches, many to a datagram (``proxy``),
each filed as if tagged ``<service>/<release>/proxy``.
The receiver (``serve``, UDP 5514) files each line under its service and release (``store``:
one JSON object a line, a file per release, bounded, kept after the release is gone); the
reader (``query``) prints a service's lines in time order and follows new ones. ``check``
probes the receiver for the container's healthcheck. Standard library only.

    modules: config, syslog, proxy, store, query, serve, __main__
"""
