"""`shoal certs`: a CA, node certificates bound to node ids, client certificates (net/pki.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import fail

app = typer.Typer()


def _node_spec(spec: str, default_hosts: list[str]) -> tuple[int, list[str]]:
    ident, sep, hosts = spec.partition("=")
    if not ident.isdigit() or int(ident) <= 0:
        raise fail(f"--node {spec!r}: expected ID or ID=HOST[,HOST...] with ID a positive "
                   "integer", 2)
    named = [h.strip() for h in hosts.split(",") if h.strip()] if sep else []
    return int(ident), named or default_hosts


@app.command("certs")
def certs(
    dir: Path = typer.Argument(..., metavar="DIR",
                               help="where to write the files (created if missing)"),
    node: list[str] = typer.Option(
        [], "--node", help="a node certificate: ID, or ID=HOST,HOST to name its own hosts"),
    host: list[str] = typer.Option(
        [], "--host", help="a DNS name or IP every node certificate names unless its --node "
        "names its own (default: 127.0.0.1 and localhost)"),
    client: list[str] = typer.Option(
        [], "--client", help="a client certificate with this user name as its CN"),
    days: int = typer.Option(365, "--days", help="how long the new certificates are valid"),
    ca_name: str = typer.Option("shoal cluster CA", "--ca-name"),
) -> None:
    """Write a cluster CA (or reuse DIR/ca.crt and DIR/ca.key), node certificates and client
    certificates.

    A node certificate carries the URI SAN urn:shoal:node:ID, which peers check against the
    node id a connection claims, so a certificate works for its own node only, and a client
    certificate, which has none, never works as a node's. Files: ca.crt, ca.key,
    node-ID.crt/.key, client-USER.crt/.key; keys are readable by their owner alone. Existing
    certificates are never overwritten."""
    from ..net.pki import Authority

    hosts = host or ["127.0.0.1", "localhost"]
    nodes = dict(_node_spec(spec, hosts) for spec in node)
    for user in client:
        if not user or "/" in user or user.startswith("."):
            raise fail(f"--client {user!r}: a user name is also a file name here", 2)
    if days <= 0:
        raise fail(f"--days must be positive, not {days}", 2)
    leaves = [f"node-{i}" for i in nodes] + [f"client-{u}" for u in client]
    taken = [p for stem in leaves for p in (dir / f"{stem}.crt", dir / f"{stem}.key")
             if p.exists()]
    if taken:
        raise fail(f"{taken[0]} exists; not overwriting it (remove it to issue a new one)", 2)
    ca_cert, ca_key = dir / "ca.crt", dir / "ca.key"
    dir.mkdir(parents=True, exist_ok=True)
    if ca_cert.exists() or ca_key.exists():
        try:
            ca = Authority.load(ca_cert, ca_key)
        except (OSError, ValueError) as exc:
            raise fail(f"cannot reuse the CA in {dir}: {exc}", 2) from None
        typer.echo(f"reusing the CA {ca_cert}")
    else:
        ca = Authority.create(ca_name, days)
        ca.pem.write(ca_cert, ca_key)
        typer.echo(f"wrote the CA {ca_cert} (keep {ca_key} private: it admits new nodes)")
    for i, names in nodes.items():
        crt, key = dir / f"node-{i}.crt", dir / f"node-{i}.key"
        ca.node(i, names, days).write(crt, key)
        typer.echo(f"node {i} ({', '.join(names)}): --tls-cert {crt} --tls-key {key} "
                   f"--tls-ca {ca_cert}")
    for user in client:
        crt, key = dir / f"client-{user}.crt", dir / f"client-{user}.key"
        ca.client(user, days).write(crt, key)
        typer.echo(f"client {user}: {crt}, {key}")
