"""Mutual TLS between peers: each side proves itself with a certificate signed by the
cluster's CA, and each side checks the other's against that CA only (not the system store:
a certificate any public CA signed must not admit a stranger into the cluster).

A certificate from the cluster's CA is not enough to be a peer: it must also name the node it
belongs to, and that node must be the one on the other end. The convention is one URI
subjectAltName `urn:shoal:node:<id>`, the node id in decimal (`urn:shoal:node:2`); `shoal
certs` writes it. The acceptor checks it against the node id the peer's handshake claims, the
dialer against the node it meant to dial. A certificate naming no node (a client's, say an
etcd client certificate from the same CA) or several nodes is no peer's, and is refused.
Hostname checking is separate and unchanged: with `check_hostname` the dialed host must be
among the server certificate's DNS or IP SANs as well.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.consensus.messages import NodeId, RemoteProtocolError

NODE_URI_PREFIX = "urn:shoal:node:"


def node_uri(node_id: NodeId) -> str:
    """The URI SAN that makes a certificate node `node_id`'s."""
    if type(node_id) is not int or node_id <= 0:
        raise ValueError(f"node ids start at 1, got {node_id!r}")
    return f"{NODE_URI_PREFIX}{node_id}"


def certificate_node_ids(peercert: dict[str, Any]) -> list[NodeId]:
    """The node ids a certificate names, from `SSLSocket.getpeercert()`. A SAN with our prefix
    but no plain decimal id after it counts as -1: a malformed claim must not be ignored."""
    ids = []
    for kind, value in peercert.get("subjectAltName", ()):
        if kind == "URI" and value.startswith(NODE_URI_PREFIX):
            digits = value[len(NODE_URI_PREFIX):]
            ok = digits.isascii() and digits.isdigit() and not digits.startswith("0")
            ids.append(int(digits) if ok else -1)
    return ids


def check_peer_certificate(peercert: dict[str, Any] | None, node_id: NodeId, role: str) -> None:
    """Refuse, with RemoteProtocolError, a verified peer certificate that is not exactly node
    `node_id`'s. `role` says whose id that is, for the message ("claims", "was dialed as")."""
    ids = certificate_node_ids(peercert or {})
    if len(ids) == 1 and ids[0] == node_id:
        return
    if not ids:
        raise RemoteProtocolError(
            f"the peer {role} node {node_id}, but its certificate names no node (no "
            f"{NODE_URI_PREFIX}<id> subjectAltName): not a node certificate, perhaps a client's"
        )
    named = ", ".join(str(i) if i > 0 else "(malformed)" for i in ids)
    raise RemoteProtocolError(
        f"the peer {role} node {node_id}, but its certificate is for node {named}"
    )


@dataclass(frozen=True, slots=True)
class TLSConfig:
    cert_file: str | Path  # this node's certificate (PEM), presented to both sides
    key_file: str | Path
    ca_file: str | Path  # the cluster CA that every peer certificate must chain to
    check_hostname: bool = True  # the dialed host must be in the peer certificate's SANs

    def server_context(self, require_client_cert: bool = True) -> ssl.SSLContext:
        """For peers, mutual TLS. For a node's client and HTTP ports, `require_client_cert`
        False: a client may come with a certificate (which then names its user) or without."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca_file))
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        ctx.check_hostname = self.check_hostname
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx
