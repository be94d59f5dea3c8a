"""Where a service keeps its coordination state in Shoal's store, and fenced writes.

    /shoal/failover/<service>/primary       the primary's key, attached to its lease; its
                                            create_revision is the fencing token
    /shoal/failover/<service>/term          no lease; rewritten in the promotion transaction,
                                            so its mod_revision is the last token promoted
    /shoal/failover/<service>/syncset       no lease; msgpack {token, mode, members}: whom the
                                            primary with `token` waits for (fenced writes)
    /shoal/failover/<service>/members/<id>  each member's key, attached to its own lease:
                                            msgpack {id, addr, role, token, applied,
                                            last_token, retired, mode}
    /shoal/failover/<service>/beacon        the primary's periodic fenced write

The primary's key is created in a transaction, so its create_revision is the store's revision
at that moment: strictly increasing from one primary to the next, like the Election recipe's
revision (shoal.client.recipes). A primary passes it on every replication message and every
write it makes elsewhere. `fenced_put` is that write for Shoal's own store: a transaction that
puts the value only while the primary's key still has that create_revision, so a paused or
partitioned primary whose lease ended writes nothing, however late its request arrives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..kv import prefix_end
from ..kv.requests import Compare, CompareResult, CompareTarget, PutRequest, RangeRequest

if TYPE_CHECKING:
    from ..client import Client
    from ..kv.requests import PutResponse, RangeResponse

ROOT = b"/shoal/failover/"


def _check_service(service: str) -> bytes:
    if not service or len(service) > 128 or "/" in service or not service.isprintable():
        raise ValueError(f"service name {service!r}: 1 to 128 printable characters, no '/'")
    return service.encode()


@dataclass(frozen=True, slots=True)
class Keys:
    """The keys of one service."""

    service: str

    @property
    def prefix(self) -> bytes:
        return ROOT + _check_service(self.service) + b"/"

    @property
    def primary(self) -> bytes:
        return self.prefix + b"primary"

    @property
    def term(self) -> bytes:
        return self.prefix + b"term"

    @property
    def syncset(self) -> bytes:
        return self.prefix + b"syncset"

    @property
    def beacon(self) -> bytes:
        return self.prefix + b"beacon"

    @property
    def members(self) -> bytes:
        return self.prefix + b"members/"

    def member(self, member_id: int) -> bytes:
        return self.members + f"{member_id:08d}".encode()

    @property
    def members_end(self) -> bytes:
        return prefix_end(self.members)


@dataclass(frozen=True, slots=True)
class Token:
    """A primary's fencing token: the create_revision of `service`'s primary key."""

    service: str
    revision: int

    @property
    def key(self) -> bytes:
        return Keys(self.service).primary


class FencedOut(Exception):
    """A write carried a fencing token that is no longer current: a newer primary exists (or
    none does). `current` is the token now in force, 0 if no primary holds the key."""

    def __init__(self, token: Token, current: int, what: str):
        now = f"token {current} is" if current else "no primary is"
        super().__init__(f"{what} refused: token {token.revision} of service "
                         f"{token.service!r} is not current ({now})")
        self.token, self.current = token, current


def still_current(token: Token) -> Compare:
    """The comparison that holds while `token` is the service's current fencing token."""
    return Compare(token.key, CompareTarget.CREATE, CompareResult.EQUAL, token.revision)


async def fenced_put(client: Client, key: bytes, value: bytes, token: Token, *,
                     lease: int = 0, timeout: float | None = None) -> PutResponse:
    """Put `key`=`value` in Shoal's store only if `token` is still the current primary's:
    one transaction comparing the primary key's create_revision. FencedOut if not."""
    resp = await client.txn([still_current(token)], [PutRequest(key, value, lease=lease)],
                            [RangeRequest(token.key)], timeout=timeout)
    if not resp.succeeded:
        found: RangeResponse = resp.responses[0]  # type: ignore[assignment]
        raise FencedOut(token, found.kvs[0].create_revision if found.kvs else 0,
                        f"fenced put of {key.decode(errors='replace')}")
    put: PutResponse = resp.responses[0]  # type: ignore[assignment]
    return put
