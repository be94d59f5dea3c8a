"""Clients for a Shoal cluster: asyncio (`Client`) and blocking (`SyncClient`), the recipes
built only on the key-value API and leases (`Lock`, `Election`, and their blocking versions),
and what calls take and answer: requests and comparisons for transactions (with builders in
shoal.client.txn), responses, watch events and errors. A guide: docs/client.md."""

from ..kv.errors import ErrCompacted, ErrLeaseNotFound, KVError
from ..kv.keyvalue import Event, EventType, KeyValue
from ..kv.requests import (
    CompactionResponse,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    LeaseGrantResponse,
    LeaseKeepAliveResponse,
    LeaseLeasesResponse,
    LeaseRevokeResponse,
    LeaseTimeToLiveResponse,
    Op,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    ResponseHeader,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
)
from ..kv.watch import WatchResponse
from . import txn
from .aio import Client
from .errors import ClientError, PermissionDenied, Unavailable, WatchCanceled
from .recipes import Election, Lock
from .sync import KeepAlive, SyncClient, SyncElection, SyncLock

__all__ = [
    "Client", "ClientError", "CompactionResponse", "Compare", "CompareResult", "CompareTarget",
    "DeleteRangeRequest", "DeleteRangeResponse", "Election", "ErrCompacted", "ErrLeaseNotFound",
    "Event", "EventType", "KVError", "KeepAlive", "KeyValue", "LeaseGrantResponse",
    "LeaseKeepAliveResponse", "LeaseLeasesResponse", "LeaseRevokeResponse",
    "LeaseTimeToLiveResponse", "Lock", "Op", "PermissionDenied", "PutRequest", "PutResponse",
    "RangeRequest", "RangeResponse", "ResponseHeader", "SortOrder", "SortTarget", "SyncClient",
    "SyncElection", "SyncLock", "TxnRequest", "TxnResponse", "Unavailable", "WatchCanceled",
    "WatchResponse", "txn",
]
