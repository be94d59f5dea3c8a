"""Clients for a Shoal cluster: asyncio (`Client`) and blocking (`SyncClient`), and the
recipes built only on the key-value API and leases (`Lock`, `Election`)."""

from .aio import Client
from .errors import ClientError, PermissionDenied, Unavailable
from .recipes import Election, Lock
from .sync import SyncClient

__all__ = ["Client", "ClientError", "Election", "Lock", "PermissionDenied", "SyncClient", "Unavailable"]
