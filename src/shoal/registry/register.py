"""Holding a registration: a lease, the instance key attached to it, and a keep-alive.

The key lives exactly as long as the lease. A process that dies stops refreshing it and the
store deletes the key after the TTL; a graceful shutdown revokes the lease, which deletes the
key at once. If the lease is lost anyway (a long pause outlived the TTL), the keep-alive
re-registers under a fresh lease instead of limping on unregistered."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..client import Client, ClientError
from ..kv.errors import KVError
from .instance import Instance

log = logging.getLogger(__name__)
MIN_TTL = 2  # seconds: a refresh every ttl/3 must fit comfortably in it


class Registration:
    """`async with Registration(client, instance, ttl=10):` keeps `instance` registered."""

    def __init__(self, client: Client, instance: Instance, ttl: int = 10):
        if ttl < MIN_TTL:
            raise ValueError(f"ttl must be >= {MIN_TTL} s, got {ttl}")
        self.client, self.instance, self.ttl = client, instance, ttl
        self.lease_id = 0
        self.registrations = 0  # how many times the key was (re)written; 1 in a calm life
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Registration:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        await self._register()
        self._task = asyncio.create_task(self._keep_alive())

    async def _register(self) -> None:
        self.lease_id = (await self.client.lease_grant(self.ttl)).id
        await self.client.put(self.instance.key, self.instance.to_json(), lease=self.lease_id)
        self.registrations += 1

    async def _keep_alive(self) -> None:
        period = self.ttl / 3
        while True:
            await asyncio.sleep(period)
            try:
                resp = await self.client.lease_keepalive(self.lease_id)
                if resp.ttl <= 0:
                    raise KVError("lease expired")
            except (ClientError, KVError) as exc:
                # Lost (expired or unknown): register again. Unreachable: try again soon.
                log.warning("registration %s: keep-alive failed (%s); re-registering",
                            self.instance.key.decode(), exc)
                with contextlib.suppress(ClientError, KVError):
                    await self._register()

    async def stop(self) -> None:
        """Deregister: revoke the lease, which deletes the key now rather than after the TTL."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.lease_id:
            with contextlib.suppress(ClientError, KVError):
                await self.client.lease_revoke(self.lease_id)
            self.lease_id = 0
