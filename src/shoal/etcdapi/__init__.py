"""etcd v3 API compatibility: etcd's gRPC services (KV, Watch, Lease, Cluster, Maintenance,
Auth, Lock, Election) and its JSON gateway, served from a Shoal node. See docs/etcd-compat.md."""

from .api import Call, EtcdAPI
from .server import EtcdServer, TLSFiles

__all__ = ["Call", "EtcdAPI", "EtcdServer", "TLSFiles"]
