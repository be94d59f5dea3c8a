"""Real node processes restarted after what broke them once."""

from __future__ import annotations

import time
from pathlib import Path

from shoal.client.sync import SyncClient
from shoal.local.cluster import LocalProcessCluster


def test_a_leader_killed_after_compacting_the_current_revision_rejoins(tmp_path: Path) -> None:
    """Regression: `put`, `compaction R` at the current revision, kill -9 of the leader, a put
    on the new leader, and a restart of the old one with its command line: the restarted node
    replayed the writes and the compaction in one batch, its Ready loop died on an assertion,
    and it sat there as a silent follower with no voters and no leader."""
    with LocalProcessCluster(3, tmp_path, node_args=["--tick-ms", "20"]) as c:
        lead = c.start()
        with SyncClient(c.endpoints, timeout=20) as cl:
            cl.put(b"a", b"1")
            rev = cl.put(b"x", b"1").header.revision
            cl.compact(rev)
            c.kill(lead)
            cl.put(b"b", b"2")
            c.start_node(lead)
            deadline = time.monotonic() + 20
            st = None
            while time.monotonic() < deadline:
                st = c.status(lead)
                if st and st["leader"] and st["voters"] and st["applied"] >= st["commit"] > 0 \
                        and st["revision"] == 4:
                    break
                time.sleep(0.05)
            assert st is not None, f"node {lead} does not answer; log: {c.log_path(lead).read_text()[-2000:]}"
            assert st["leader"] != 0 and st["voters"] == [1, 2, 3], st
            assert st["revision"] == 4 and st.get("failed") is None, st
            assert cl.get(b"b").kvs[0].value == b"2"
