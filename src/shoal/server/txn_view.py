"""Transactions recently aborted, as this node saw them: what the dashboard lists beside the
intents each group holds.

A transaction aborts because a shard refused to prepare it (a key it read was written since,
or another transaction's intent holds a key) or because its coordinator went silent and its
record was presumed abandoned. Both pass through a group leader's `Node.write` as the
participant's answer, so the leader notes them there, with the reasons the store gave; nothing
is written anywhere for it. Bounded: the last MAX_ABORTS, each with at most MAX_REASONS."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from ..kv.requests import (
    RecordStatus,
    TxnPrepareRequest,
    TxnPrepareResponse,
    TxnRecordAction,
    TxnRecordRequest,
    TxnRecordResponse,
)

MAX_ABORTS = 50
MAX_REASONS = 5


class RecentAborts:
    def __init__(self) -> None:
        self.aborts: deque[dict[str, Any]] = deque(maxlen=MAX_ABORTS)

    def note(self, group: int, request: object, response: object) -> None:
        """Keep `response` if it aborts a transaction (any other passes at the cost of two
        isinstance checks)."""
        if isinstance(response, TxnPrepareResponse):
            if response.prepared or not isinstance(request, TxnPrepareRequest):
                return
            reasons = [{"key": c.key.decode("utf-8", errors="backslashreplace")[:200],
                        "reason": c.reason,
                        "holder": c.holder.hex() if c.holder else None}
                       for c in response.conflicts[:MAX_REASONS]]
            self._add(group, request.txn, "refused to prepare" if not request.one_phase
                      else "refused its one-phase commit", reasons)
        elif isinstance(response, TxnRecordResponse) and isinstance(request, TxnRecordRequest):
            if (request.action == TxnRecordAction.ABORT_ABANDONED
                    and response.status == RecordStatus.ABORTED):
                self._add(group, request.txn, "presumed abandoned: its coordinator's lease "
                          "ended before it decided", [])

    def _add(self, group: int, txn: bytes, what: str, reasons: list[dict[str, Any]]) -> None:
        self.aborts.append({"at": round(time.time(), 3), "group": group, "txn": txn.hex(),
                            "what": what, "reasons": reasons})

    def as_list(self) -> list[dict[str, Any]]:
        return list(self.aborts)
