"""The key-value commands: `put`, `get`, `del`, `watch` and `txn` (etcdctl's forms)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import typer

from .common import (
    ENDPOINTS,
    Output,
    emit_json,
    fail,
    interruptible,
    kv_json,
    output_option,
    print_kvs,
    print_table,
    range_json,
    run_client,
    text,
)

if TYPE_CHECKING:
    from ..client import Client
    from ..kv.requests import Compare, Op

app = typer.Typer()


@app.command()
def put(key: str, value: str, lease: int = typer.Option(0, "--lease", help="attach to lease ID"),
        endpoints: str = ENDPOINTS, output: Output = output_option(Output.simple)) -> None:
    """Write VALUE under KEY (prints OK, or the revision it made, once the cluster has
    committed it)."""
    async def body(client: Client) -> None:
        k, sharded = key.encode(), client.sharded()
        resp = await sharded.router.on_key(k, lambda c: sharded.resolving(
            lambda: c.put(k, value.encode(), lease=lease)))
        if output is Output.json:
            emit_json({"revision": resp.header.revision})
        elif output is Output.table:
            print_table(["revision"], [[str(resp.header.revision)]], right=("revision",))
        else:
            typer.echo("OK")

    run_client(endpoints, body)


@app.command()
def get(
    key: str,
    prefix: bool = typer.Option(False, "--prefix", help="every key starting with KEY"),
    rev: int = typer.Option(0, "--rev", help="read at this past revision"),
    limit: int = typer.Option(0, "--limit", help="at most this many keys"),
    serializable: bool = typer.Option(False, "--serializable",
                                      help="answer from the node's local state (may be stale)"),
    keys_only: bool = typer.Option(False, "--keys-only"),
    count_only: bool = typer.Option(False, "--count-only"),
    endpoints: str = ENDPOINTS,
    output: Output = output_option(Output.simple),
) -> None:
    """Read KEY (a linearizable read unless --serializable): key and value on two lines, a
    table, or JSON with each key's revisions and lease."""
    async def body(client: Client) -> None:
        from ..kv.keyvalue import prefix_end
        from ..kv.requests import RangeResponse

        k = key.encode()
        parts = await client.sharded().on_range(
            k, prefix_end(k) if prefix else b"", lambda c, lo, hi: c.get(
                lo, range_end=hi, revision=rev, limit=limit, serializable=serializable,
                keys_only=keys_only, count_only=count_only))
        kvs = tuple(kv for p in parts for kv in p.kvs)  # (shard by shard, in key order)
        resp = RangeResponse(parts[-1].header, kvs[:limit] if limit else kvs,
                             any(p.more for p in parts) or bool(limit and len(kvs) > limit),
                             sum(p.count for p in parts))
        if output is Output.json:
            emit_json(range_json(resp, keys_only))
        elif count_only:
            typer.echo(str(resp.count))
        elif output is Output.table:
            _kv_table(resp, keys_only)
        else:
            print_kvs(resp, keys_only)

    run_client(endpoints, body)


def _kv_table(resp: Any, keys_only: bool) -> None:
    columns = ["key", *([] if keys_only else ["value"]), "create rev", "mod rev", "version",
               "lease"]
    print_table(columns, [[text(kv.key), *([] if keys_only else [text(kv.value)]),
                           str(kv.create_revision), str(kv.mod_revision), str(kv.version),
                           str(kv.lease) if kv.lease else ""] for kv in resp.kvs],
                right=("create rev", "mod rev", "version"))


@app.command("del")
def delete(key: str, prefix: bool = typer.Option(False, "--prefix"),
           endpoints: str = ENDPOINTS, output: Output = output_option(Output.simple)) -> None:
    """Delete KEY (or every key with that prefix); prints how many were deleted."""
    async def body(client: Client) -> None:
        from ..kv.keyvalue import prefix_end

        k = key.encode()
        parts = await client.sharded().on_range(
            k, prefix_end(k) if prefix else b"", lambda c, lo, hi: c.delete(lo, range_end=hi))
        deleted = sum(p.deleted for p in parts)
        if output is Output.json:
            emit_json({"revision": parts[-1].header.revision, "deleted": deleted})
        else:
            typer.echo(str(deleted))

    run_client(endpoints, body)


@app.command()
def watch(
    key: str,
    prefix: bool = typer.Option(False, "--prefix"),
    rev: int = typer.Option(0, "--rev", help="start from this revision (replays history)"),
    prev_kv: bool = typer.Option(False, "--prev-kv", help="also print the previous value"),
    endpoints: str = ENDPOINTS,
    output: Output = output_option(Output.simple),
) -> None:
    """Print changes to KEY as they happen (PUT key value / DELETE key) until Ctrl-C.

    With -o json, one JSON object per event and line (JSON lines)."""
    if output is Output.table:
        raise fail("watch prints -o simple or -o json: a stream has no table", 2)

    async def body(client: Client) -> None:
        async def stream() -> None:
            async for resp in client.watch(key.encode(), prefix=prefix, start_revision=rev,
                                           prev_kv=prev_kv):
                for ev in resp.events:
                    if output is Output.json:
                        emit_json(_event_json(ev, prev_kv))
                    else:
                        typer.echo(_event_line(ev, prev_kv))
                        sys.stdout.flush()

        await interruptible(stream())

    run_client(endpoints, body)


def _event_line(ev: Any, prev_kv: bool) -> str:
    from ..kv.keyvalue import EventType

    line = (f"PUT {text(ev.kv.key)} {text(ev.kv.value)}" if ev.type == EventType.PUT
            else f"DELETE {text(ev.kv.key)}")
    line += f"  (rev {ev.kv.mod_revision})"
    if prev_kv and ev.prev_kv is not None:
        line += f"  was {text(ev.prev_kv.value)}"
    return line


def _event_json(ev: Any, prev_kv: bool) -> dict[str, Any]:
    from ..kv.keyvalue import EventType

    out: dict[str, Any] = {"type": "PUT" if ev.type == EventType.PUT else "DELETE",
                           **kv_json(ev.kv)}
    if ev.type != EventType.PUT:
        del out["value"]  # a tombstone has none
    if prev_kv:
        out["prev_kv"] = kv_json(ev.prev_kv) if ev.prev_kv is not None else None
    return out


TXN_HELP = """Run a transaction read from stdin (etcdctl's form).

Compares, a blank line, the operations to run if every compare holds, a blank line, the
operations to run otherwise. Keys may live in different shards: such a txn runs as a
strictly serializable two-phase commit (single keys only; ranges stay within one shard).

\b
compare:    TARGET("KEY") OP OPERAND   TARGET: value version create mod lease
                                       OP: = != < >   OPERAND: "text" or a number
operation:  put KEY VALUE [--lease ID] | get KEY [--prefix] | del KEY [--prefix]

\b
Example (compare-and-swap):
  printf 'value("k") = "v1"\\n\\nput k v2\\n\\nget k\\n' | shoal txn

Prints SUCCESS or FAILURE, then each operation's result (-o json: one object)."""


@app.command(help=TXN_HELP)
def txn(endpoints: str = ENDPOINTS, output: Output = output_option(Output.simple)) -> None:
    if output is Output.table:
        raise fail("txn prints -o simple or -o json", 2)
    try:
        compares, success, failure = parse_txn(_txn_sections())
    except ValueError as exc:
        raise fail(f"txn: {exc}") from None

    async def body(client: Client) -> None:
        from ..txn.etcd_txn import etcd_txn

        resp = await etcd_txn(client.sharded(), compares, success, failure)
        if output is Output.json:
            emit_json(_op_json(resp))
            return
        typer.echo("SUCCESS" if resp.succeeded else "FAILURE")
        for r in resp.responses:
            _print_op_response(r)

    run_client(endpoints, body)


def _txn_sections() -> Iterator[list[str]]:
    """The three blank-line-separated sections of stdin, prompting when it is a terminal."""
    prompts = ("compares:", "success requests (put, get, del):", "failure requests (put, get, del):")
    for prompt in prompts:
        if sys.stdin.isatty():
            typer.echo(prompt, err=True)
        lines = []
        for line in sys.stdin:
            if not line.strip():
                break
            lines.append(line.strip())
        yield lines


def parse_txn(sections: Iterator[list[str]]) -> tuple[list[Compare], list[Op], list[Op]]:
    compare_lines, success_lines, failure_lines = (next(sections, []) for _ in range(3))
    return ([parse_compare(line) for line in compare_lines],
            [parse_op(line) for line in success_lines], [parse_op(line) for line in failure_lines])


_COMPARE = r'^(value|version|create|mod|lease)\("([^"]*)"\)\s*(!=|=|<|>)\s*(.+)$'


def parse_compare(line: str) -> Compare:
    import re
    import shlex

    from ..kv.requests import Compare, CompareResult, CompareTarget

    m = re.match(_COMPARE, line)
    if not m:
        raise ValueError(f'bad compare {line!r}: expected TARGET("KEY") OP OPERAND, '
                         'e.g. value("k") = "v"')
    target, key, op, raw = m.groups()
    words = shlex.split(raw)
    if len(words) != 1:
        raise ValueError(f"bad compare {line!r}: one operand expected, got {raw!r}")
    operand: int | bytes = words[0].encode()
    if target != "value":
        if not words[0].isdigit():
            raise ValueError(f"bad compare {line!r}: {target} compares with a number")
        operand = int(words[0])
    targets = {"value": CompareTarget.VALUE, "version": CompareTarget.VERSION,
               "create": CompareTarget.CREATE, "mod": CompareTarget.MOD,
               "lease": CompareTarget.LEASE}
    results = {"=": CompareResult.EQUAL, "!=": CompareResult.NOT_EQUAL, "<": CompareResult.LESS,
               ">": CompareResult.GREATER}
    return Compare(key.encode(), targets[target], results[op], operand)


def parse_op(line: str) -> Op:
    import shlex

    from ..kv.keyvalue import prefix_end
    from ..kv.requests import DeleteRangeRequest, PutRequest, RangeRequest

    verb, *words = shlex.split(line)
    flags = [w for w in words if w.startswith("--")]
    args = [w for w in words if not w.startswith("--")]
    usage = (f"bad operation {line!r}: expected put KEY VALUE [--lease=ID], "
             "get KEY [--prefix] or del KEY [--prefix]")
    if verb == "put" and len(args) == 2:
        lease = 0
        for flag in flags:
            name, _, number = flag.partition("=")
            if name != "--lease" or not number.isdigit():
                raise ValueError(usage)
            lease = int(number)
        return PutRequest(args[0].encode(), args[1].encode(), lease=lease)
    if verb in ("get", "del", "delete") and len(args) == 1 and set(flags) <= {"--prefix"}:
        key = args[0].encode()
        end = prefix_end(key) if flags else b""
        return RangeRequest(key, end) if verb == "get" else DeleteRangeRequest(key, end)
    raise ValueError(usage)


def _op_json(r: Any) -> dict[str, Any]:
    """One operation's result in a txn's JSON; a txn's own is the outermost."""
    from ..kv.requests import DeleteRangeResponse, PutResponse, RangeResponse

    if isinstance(r, PutResponse):
        return {"op": "put", "revision": r.header.revision}
    if isinstance(r, RangeResponse):
        return {"op": "get", **range_json(r)}
    if isinstance(r, DeleteRangeResponse):
        return {"op": "del", "revision": r.header.revision, "deleted": r.deleted}
    return {"op": "txn", "succeeded": r.succeeded, "revision": r.header.revision,
            "responses": [_op_json(x) for x in r.responses]}


def _print_op_response(r: Any) -> None:
    from ..kv.requests import DeleteRangeResponse, PutResponse, RangeResponse, TxnResponse

    if isinstance(r, PutResponse):
        typer.echo("OK")
    elif isinstance(r, RangeResponse):
        print_kvs(r)
    elif isinstance(r, DeleteRangeResponse):
        typer.echo(str(r.deleted))
    elif isinstance(r, TxnResponse):
        typer.echo("SUCCESS" if r.succeeded else "FAILURE")
