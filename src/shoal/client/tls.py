"""TLS for Shoal's client port, client side: the cluster's CA is the only trust anchor, and a
certificate, when given, identifies the client (its common name is its user, as in etcd)."""

from __future__ import annotations

import ssl
from pathlib import Path


def client_context(ca: str | Path, cert: str | Path | None = None,
                   key: str | Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key is not None else None)
    return ctx
