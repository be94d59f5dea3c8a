"""The node as the etcd API sees it: writes that reach the leader from any member, reads,
watches, and response headers.

A Shoal node accepts proposals only as leader (`Node.write` raises NodeError("not_leader")
with the leader's client endpoint). etcd members forward writes to their leader; so does this
layer, over Shoal's own client protocol to the leader's client port, one hop, no replay: a
forwarded write whose answer is lost is reported as a timeout, never re-sent. Requests that
certainly did nothing (no leader yet, leader moved) are retried until the deadline."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..client.aio import Client
from ..client.errors import ClientError, Unavailable
from ..kv.errors import KVError
from ..kv.requests import (
    Command,
    LeaseLeasesRequest,
    LeaseTimeToLiveRequest,
    RangeRequest,
    Request,
    decode_response,
    encode_command,
    validate,
)
from ..server.node import Node, NodeError
from . import errors as E
from .pb import rpc_pb2

log = logging.getLogger("shoal.etcdapi")

RETRY_DELAY = 0.05
_NOTHING_HAPPENED = ("not_leader", "no_leader")


class Backend:
    def __init__(self, node: Node, timeout: float = 5.0):
        self.node, self.timeout = node, timeout
        self._clients: dict[str, Client] = {}

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            await c.close()

    # ------------------------------------------------------------------ headers
    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        node = self.node
        return rpc_pb2.ResponseHeader(
            cluster_id=node.cluster_id, member_id=node.id,
            revision=node.kv.revision if revision is None else revision,
            raft_term=node.core.term)

    # ------------------------------------------------------------------ kv
    async def write(self, request: Request, *, internal: bool = False) -> Any:
        """Propose `request` on the leader, wherever it is, and return its kv Response.
        `internal`: a change to the auth state's reserved key, which the leader's client port
        accepts only from root (or while auth is off)."""
        try:
            validate(request, self.node.kv.limits)  # what decoding would check, without decoding
        except KVError as exc:
            raise E.from_exception(exc) from None
        cmd, data = Command(request), encode_command(request)
        return await self._retrying(
            lambda: self.node.write(data, self.timeout, decoded=cmd),
            lambda ep: self._forward_kv(ep, data, "auth_kv" if internal else "kv"))

    async def read(self, request: RangeRequest | LeaseTimeToLiveRequest | LeaseLeasesRequest,
                   serializable: bool = False) -> Any:
        # A lease's remaining time is the leader's to tell (only its clock stamps leases):
        # a member that does not lead asks the leader, as etcd's do. Every other read is local.
        forward = ((lambda ep: self._forward_kv(ep, encode_command(request)))
                   if isinstance(request, LeaseTimeToLiveRequest) else None)
        return await self._retrying(lambda: self.node.read(request, serializable, self.timeout),
                                    forward)

    async def barrier(self) -> None:
        await self._retrying(lambda: self.node.read_barrier(self.timeout), None)

    async def leader_call(self, local: Any, op: str, body: Any) -> Any:
        """Run `local()` if we lead, else send `op` on the client protocol to the leader."""
        return await self._retrying(local, lambda ep: self._forward(ep, op, body))

    async def _retrying(self, local: Any, forward: Any) -> Any:
        loop = asyncio.get_running_loop()
        end = loop.time() + self.timeout
        while True:
            try:
                return await local()
            except NodeError as exc:
                if exc.code not in _NOTHING_HAPPENED:
                    raise E.from_exception(exc) from None
                endpoint = exc.details.get("endpoint")
                if exc.code == "not_leader" and endpoint and forward is not None:
                    try:
                        return await forward(endpoint)
                    except _Retry:
                        pass
                if loop.time() + RETRY_DELAY >= end:
                    raise E.from_exception(exc) from None
            except KVError as exc:
                raise E.from_exception(exc) from None
            await asyncio.sleep(RETRY_DELAY)

    async def _forward_kv(self, endpoint: str, data: bytes, op: str = "kv") -> Any:
        return decode_response(await self._forward(endpoint, op, {"cmd": data}))

    async def _forward(self, endpoint: str, op: str, body: Any) -> Any:
        from .auth import caller_token  # (auth imports this module)

        client = self._clients.get(endpoint)
        if client is None:
            files = self.node.cfg.tls()  # the node's own certificate, to its peer's client port
            tls = files.client_context() if files else None
            client = self._clients[endpoint] = Client([endpoint], timeout=self.timeout, tls=tls)
        try:
            # the leader checks the request again, as the caller: with the caller's token
            return await client.call(op, body, leader=False, retry=False, token=caller_token.get())
        except KVError as exc:
            raise E.from_exception(exc) from None
        except Unavailable as exc:
            if str(exc).startswith("cannot connect"):
                raise _Retry() from None  # nothing was sent
            raise E.TIMEOUT from None  # sent, unanswered: the outcome is unknown
        except ClientError as exc:
            if exc.code in _NOTHING_HAPPENED:
                raise _Retry() from None
            raise E.from_client_error(exc.code, str(exc)) from None


class _Retry(Exception):
    """The forwarded request certainly did nothing; try again."""
