"""Mutual TLS between peers: each side proves itself with a certificate signed by the
cluster's CA, and each side checks the other's against that CA only (not the system store:
a certificate any public CA signed must not admit a stranger into the cluster)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class TLSConfig:
    cert_file: str | Path  # this node's certificate (PEM), presented to both sides
    key_file: str | Path
    ca_file: str | Path  # the cluster CA that every peer certificate must chain to
    check_hostname: bool = True  # the dialed host must be in the peer certificate's SANs

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca_file))
        ctx.verify_mode = ssl.CERT_REQUIRED  # the "mutual" in mutual TLS
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        ctx.check_hostname = self.check_hostname
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx
