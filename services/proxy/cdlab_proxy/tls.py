"""The control plane's mutual TLS, as the supervisor speaks it: to etcd as a client, on the
Runtime API as a server that answers only clients with a certificate of the same CA.

A folder (``CDLAB_PROXY_TLS_DIR``) holds ``ca.pem`` (the control plane's CA), ``cert.pem`` and
``key.pem`` (the supervisor's client certificate) and ``runtime-cert.pem``/``runtime-key.pem``
(the Runtime API's server certificate). Without a folder (a test's own proxy) both speak plain.
"""

from __future__ import annotations

import os
import ssl


def client(folder: str) -> ssl.SSLContext | None:
    """The context for etcd: its server certificate checked against the CA, ours presented."""
    if not folder:
        return None
    ctx = ssl.create_default_context(cafile=os.path.join(folder, "ca.pem"))
    ctx.load_cert_chain(os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem"))
    return ctx


def server(folder: str) -> ssl.SSLContext | None:
    """The Runtime API's context: a client certificate of the CA is required."""
    if not folder:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(os.path.join(folder, "ca.pem"))
    ctx.load_cert_chain(
        os.path.join(folder, "runtime-cert.pem"), os.path.join(folder, "runtime-key.pem")
    )
    return ctx
