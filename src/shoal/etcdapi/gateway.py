"""etcd's JSON gateway for KV, Lease and Watch (and the rest of the unary calls): `POST
/v3/kv/range` with a JSON body, bytes as base64, int64 as strings, field names as in the proto
(what etcd's grpc-gateway accepts and returns). The token goes in the `Authorization` header.

`/v3/watch` and `/v3/lease/keepalive` stream newline-delimited `{"result": ...}` objects, as
etcd's gateway does; the watch stream takes one create request in the body.

Beside the gateway, what etcd serves on its client port over HTTP: `GET /version`
(`{"etcdserver": "3.5.0", "etcdcluster": "3.5.0"}`), `GET /health` (`{"health": "true",
"reason": ""}`, or 503 with "false" and etcd's reason) and `GET /metrics` (Prometheus text: the
node's `shoal_*` figures and the `etcd_*` gauges dashboards for etcd read)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import json_format
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from ..kv.errors import KVError
from ..server.health import unhealthy_reasons
from ..server.http import NodeCollector
from ..server.node import NodeError
from . import errors as E
from .api import VERSION, Call, EtcdAPI
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


# etcd's /health answers healthy when its probe read is refused only for want of credentials
AUTH_REFUSALS = {E.USER_EMPTY.message, E.PERMISSION_DENIED.message}


class _EtcdCollector:
    """The etcd server gauges monitoring for etcd reads, from the node at scrape time."""

    def __init__(self, api: EtcdAPI):
        self.api = api

    def collect(self) -> Any:
        node = self.api.node
        st = node.status()
        gauges = {
            "etcd_server_has_leader": ("Whether or not a leader exists. 1 is existence, 0 is not.",
                                       int(bool(st["leader"]))),
            "etcd_server_is_leader": ("Whether or not this member is a leader. 1 if is, 0 otherwise.",
                                      int(st["leader"] == node.id)),
            "etcd_server_is_learner": ("Whether or not this member is a learner. 1 if is, 0 otherwise.",
                                       int(node.id in st["learners"])),
            "etcd_server_proposals_committed_total": (
                "The total number of consensus proposals committed.", st["commit"]),
            "etcd_server_proposals_applied_total": (
                "The total number of consensus proposals applied.", st["applied"]),
            "etcd_mvcc_db_total_size_in_bytes": (
                "Total size of the underlying database physically allocated in bytes.", st["db_size"]),
            "etcd_debugging_mvcc_current_revision": ("The current revision of store.", st["revision"]),
            "etcd_server_quota_backend_bytes": ("Current backend storage quota size in bytes.",
                                                node.kv.limits.quota_bytes),
        }
        for name, (doc, value) in gauges.items():
            fam = GaugeMetricFamily(name, doc)
            fam.add_metric([], value)
            yield fam
        version = GaugeMetricFamily("etcd_server_version", "Which version is running. 1 for "
                                    "'server_version' label with current version.",
                                    labels=["server_version"])
        version.add_metric([VERSION], 1)
        yield version


def make_gateway(api: EtcdAPI, max_request_bytes: int) -> web.Application:
    app = web.Application(client_max_size=max_request_bytes + 512 * 1024)
    registry = CollectorRegistry()
    registry.register(NodeCollector(api.node))  # type: ignore[arg-type]
    registry.register(_EtcdCollector(api))  # type: ignore[arg-type]

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

    async def version(_: web.Request) -> web.Response:
        return web.json_response({"etcdserver": VERSION, "etcdcluster": VERSION})

    async def health(request: web.Request) -> web.Response:
        reasons = unhealthy_reasons(api.node.status())
        reason = "; ".join("RAFT NO LEADER" if r == "no leader" else r for r in reasons)
        if not reason:  # as etcd: a read through consensus (serializable=true: a local one)
            probe = P.RangeRequest(key=b"health", keys_only=True, limit=1,
                                   serializable=request.query.get("serializable") == "true")
            try:
                await api.Range(probe, Call())
            except Exception as exc:  # noqa: BLE001 - any failure is the reason
                err = _as_etcd(exc)
                if err.message not in AUTH_REFUSALS:
                    reason = f"QGET ERROR:{err.message}"
        return web.json_response({"health": "false" if reason else "true", "reason": reason},
                                 status=503 if reason else 200)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/version", version)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    for path, (name, cls) in UNARY.items():
        app.router.add_post(path, unary(name, cls))
    app.router.add_post("/v3/watch", watch)
    app.router.add_post("/v3/lease/keepalive", keepalive)
    return app
