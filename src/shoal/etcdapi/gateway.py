"""etcd's JSON gateway for KV, Lease and Watch (and the rest of the unary calls): `POST
/v3/kv/range` with a JSON body, bytes as base64, int64 as strings, field names as in the proto
(what etcd's grpc-gateway accepts and returns). The token goes in the `Authorization` header.

`/v3/watch` and `/v3/lease/keepalive` stream newline-delimited `{"result": ...}` objects, as
etcd's gateway does; the watch stream takes one create request in the body."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import json_format

from ..kv.errors import KVError
from ..server.node import NodeError
from . import errors as E
from .api import Call, EtcdAPI
from .pb import rpc_pb2, v3election_pb2, v3lock_pb2

P = rpc_pb2
UNARY: dict[str, tuple[str, Any]] = {
    "/v3/kv/range": ("Range", P.RangeRequest),
    "/v3/kv/put": ("Put", P.PutRequest),
    "/v3/kv/deleterange": ("DeleteRange", P.DeleteRangeRequest),
    "/v3/kv/txn": ("Txn", P.TxnRequest),
    "/v3/kv/compaction": ("Compact", P.CompactionRequest),
    "/v3/lease/grant": ("LeaseGrant", P.LeaseGrantRequest),
    "/v3/lease/revoke": ("LeaseRevoke", P.LeaseRevokeRequest),
    "/v3/kv/lease/revoke": ("LeaseRevoke", P.LeaseRevokeRequest),
    "/v3/lease/timetolive": ("LeaseTimeToLive", P.LeaseTimeToLiveRequest),
    "/v3/kv/lease/timetolive": ("LeaseTimeToLive", P.LeaseTimeToLiveRequest),
    "/v3/lease/leases": ("LeaseLeases", P.LeaseLeasesRequest),
    "/v3/kv/lease/leases": ("LeaseLeases", P.LeaseLeasesRequest),
    "/v3/cluster/member/list": ("MemberList", P.MemberListRequest),
    "/v3/maintenance/status": ("Status", P.StatusRequest),
    "/v3/maintenance/alarm": ("Alarm", P.AlarmRequest),
    "/v3/maintenance/hashkv": ("HashKV", P.HashKVRequest),
    "/v3/auth/authenticate": ("Authenticate", P.AuthenticateRequest),
    "/v3/auth/status": ("AuthStatus", P.AuthStatusRequest),
    "/v3/lock/lock": ("Lock", v3lock_pb2.LockRequest),
    "/v3/lock/unlock": ("Unlock", v3lock_pb2.UnlockRequest),
    "/v3/election/leader": ("Leader", v3election_pb2.LeaderRequest),
}

# grpc-gateway's mapping of gRPC codes to HTTP statuses
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.UNIMPLEMENTED: 501,
}


def _to_json(msg: Any) -> dict[str, Any]:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def _error(err: E.EtcdError) -> web.Response:
    body = {"error": err.message, "code": err.code.value[0], "message": err.message}
    return web.json_response(body, status=HTTP_STATUS.get(err.code, 500))


def _as_etcd(exc: Exception) -> E.EtcdError:
    if isinstance(exc, E.EtcdError | KVError | NodeError):
        return E.from_exception(exc)
    return E.EtcdError(E.C.INTERNAL, f"etcdserver: internal error: {type(exc).__name__}")


def make_gateway(api: EtcdAPI, max_request_bytes: int) -> web.Application:
    app = web.Application(client_max_size=max_request_bytes + 512 * 1024)

    async def parse(request: web.Request, cls: Any) -> Any:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw.strip() else {}
            return json_format.ParseDict(body, cls(), ignore_unknown_fields=True)
        except (ValueError, json_format.ParseError) as exc:
            raise E.EtcdError(E.C.INVALID_ARGUMENT, f"etcdserver: malformed JSON request: {exc}") from None

    def call(request: web.Request) -> Call:
        return Call(request.headers.get("Authorization") or request.headers.get("token"))

    def unary(name: str, cls: Any) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                msg = await parse(request, cls)
                return web.json_response(_to_json(await getattr(api, name)(msg, call(request))))
            except Exception as exc:  # noqa: BLE001 - every failure becomes an etcd error
                return _error(_as_etcd(exc))
        return handle

    async def stream(request: web.Request, items: AsyncIterator[Any]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        try:
            async for item in items:
                await resp.write(json.dumps({"result": _to_json(item)}).encode() + b"\n")
        except Exception as exc:  # noqa: BLE001
            err = _as_etcd(exc)
            await resp.write(json.dumps({"error": {"grpc_code": err.code.value[0],
                                                   "message": err.message}}).encode() + b"\n")
        return resp

    async def watch(request: web.Request) -> web.StreamResponse:
        try:
            msg = await parse(request, P.WatchRequest)
        except E.EtcdError as err:
            return _error(err)

        async def one() -> AsyncIterator[Any]:
            yield msg
            # the request side stays open until the client goes away
            while request.transport is not None and not request.transport.is_closing():
                await asyncio.sleep(0.2)

        return await stream(request, api.Watch(one(), call(request)))

    async def keepalive(request: web.Request) -> web.StreamResponse:
        try:
            msg = await parse(request, P.LeaseKeepAliveRequest)
        except E.EtcdError as err:
            return _error(err)

        async def one() -> AsyncIterator[Any]:
            yield msg

        return await stream(request, api.LeaseKeepAlive(one(), call(request)))

    for path, (name, cls) in UNARY.items():
        app.router.add_post(path, unary(name, cls))
    app.router.add_post("/v3/watch", watch)
    app.router.add_post("/v3/lease/keepalive", keepalive)
    return app
