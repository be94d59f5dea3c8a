"""The `shoal` command: one module per command group, merged into one typer `app` here.

| module        | commands                                            |
|---------------|-----------------------------------------------------|
| check.py      | check                                               |
| sim.py        | sim                                                 |
| dashboard.py  | dashboard                                           |
| demo.py       | demo                                                |
| bench.py      | bench, lb-report                                    |
| torture.py    | torture                                             |
| node.py       | node                                                |
| cluster.py    | cluster up / stop / start / kill / restart, status  |
| kv.py         | put, get, del, watch, txn                           |
| recipes.py    | lock, elect                                         |
| lease.py      | lease grant / revoke / keep-alive / ttl / list      |
| member.py     | member list / add / remove / promote                |
| group.py      | group create / remove / list                        |
| shard.py      | shard list / split / resume / autosplit             |
| snapshot.py   | snapshot save / status / restore                    |
| governance.py | service register / list / watch, gateway            |
| app.py        | app run / deploy / status (+ proto, manifests)      |
| certs.py      | certs                                               |

common.py holds what they share (`--endpoints`, `-o`, one-line failures, running a client);
docs/cli.md describes the conventions and every JSON shape. Each
module imports only typer when it loads and the rest inside its commands, so `shoal --help`
does not load the client, the store or the server."""

from __future__ import annotations

import typer

from . import app as app_cmd
from . import (
    bench,
    cap,
    certs,
    check,
    cluster,
    dashboard,
    demo,
    failover,
    governance,
    group,
    kv,
    lease,
    member,
    node,
    recipes,
    shard,
    sim,
    snapshot,
    torture,
)

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Shoal: consensus you can see and verify.")
for room in (check, sim, dashboard, demo, bench, cap, torture, node, cluster, kv, recipes, lease, member,
             group, shard, snapshot, governance, certs, failover, app_cmd):
    app.add_typer(room.app)  # no name: each group's commands sit at the top level

__all__ = ["app"]

if __name__ == "__main__":
    app()
