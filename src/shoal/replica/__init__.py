"""One consensus group's runtime, pure: engine + state machine + membership + waiters."""

from .errors import NodeError
from .membership import Members, bootstrap, encode_context, parse_context, spec_id
from .replica import BUGS, Applied, Done, Replica, ReplicaConfig

__all__ = ["BUGS", "Applied", "Done", "Members", "NodeError", "Replica", "ReplicaConfig",
           "bootstrap", "encode_context", "parse_context", "spec_id"]
