"""A cluster's certificates: one CA, node certificates that name their node, client
certificates that name their user. What `shoal certs` writes and what the tests use.

- **The CA** signs everything else; every node trusts it alone (tls.py).
- **A node certificate** carries the URI SAN `urn:shoal:node:<id>` (tls.py checks it at the
  peer handshake) plus DNS and IP SANs for the hosts it is reached at (checked as hostnames
  by peers and clients). It is both a server and a client certificate: a node accepts peers
  and clients with it and dials its peers with it.
- **A client certificate** has CN = the user name, for clients of the client and etcd ports,
  and no node SAN, so it can never pass for a node.

Keys are ECDSA P-256. Needs the `cryptography` package.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .tls import node_uri

DEFAULT_DAYS = 365


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_private(path: Path, data: bytes) -> None:
    """Write a key readable by its owner alone, from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, both PEM."""

    cert: bytes
    key: bytes

    def write(self, cert_file: Path, key_file: Path) -> None:
        cert_file.write_bytes(self.cert)
        write_private(key_file, self.key)


@dataclass(frozen=True)
class Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @staticmethod
    def create(name: str, days: int = DEFAULT_DAYS) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            _builder(_name(name), _name(name), key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return Authority(cert, key)

    @staticmethod
    def load(cert_file: Path, key_file: Path) -> Authority:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_file}: not an EC private key")
        return Authority(cert, key)

    @property
    def pem(self) -> Issued:
        return Issued(self.cert.public_bytes(serialization.Encoding.PEM), _key_pem(self.key))

    def node(self, node_id: int, hosts: Iterable[str] = ("127.0.0.1", "localhost"),
             days: int = DEFAULT_DAYS) -> Issued:
        """Node `node_id`'s certificate: its node SAN, the hosts' SANs, server and client."""
        sans = [x509.UniformResourceIdentifier(node_uri(node_id)), *map(_san, hosts)]
        return self._issue(f"shoal node {node_id}", sans, days,
                           [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])

    def client(self, user: str, days: int = DEFAULT_DAYS) -> Issued:
        """A client certificate for `user` (its CN): client auth only, no node SAN."""
        if not user:
            raise ValueError("a client certificate needs a user name")
        return self._issue(user, [], days, [ExtendedKeyUsageOID.CLIENT_AUTH])

    def _issue(self, cn: str, sans: list[x509.GeneralName], days: int,
               usages: list[x509.ObjectIdentifier]) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (
            _builder(_name(cn), self.cert.subject, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
        )
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             days: int) -> x509.CertificateBuilder:
    if days <= 0:
        raise ValueError(f"a certificate must be valid for at least one day, not {days}")
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
        .public_key(public_key).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # a peer's clock may lag
        .not_valid_after(now + datetime.timedelta(days=days))
    )
