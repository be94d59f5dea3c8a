"""The log torture's progress per phase, on a made-up timeline: what it counts under faults and
after the healing, and the longest stretch without progress, as the run's JSON and its last
line show them."""

from __future__ import annotations

from shoal.torture.log import LogWorkload, progress_line


def _workload() -> LogWorkload:
    w = LogWorkload(["127.0.0.1:1"], 1, 1, 1, 0)
    w.started, w.healed, w.stopped = 100.0, 110.0, 114.0
    t = w.seen.times
    t["acked"] += [(101.0, 1), (102.0, 1), (109.0, 1), (111.0, 1)]
    t["consumed"] += [(103.0, 200), (112.0, 50), (113.0, 50)]
    t["commits"] += [(103.5, 1), (112.5, 1)]
    return w


def test_progress_is_counted_per_phase_with_its_longest_stall() -> None:
    p = _workload().phases()
    faults, healed = p["faults"], p["healed"]
    assert faults["seconds"] == 10.0 and healed["seconds"] == 4.0
    assert (faults["acked"], faults["consumed"], faults["commits"]) == (3, 200, 1)
    assert (healed["acked"], healed["consumed"], healed["commits"]) == (1, 100, 1)
    assert faults["consumed_per_s"] == 20.0 and healed["consumed_per_s"] == 25.0
    assert faults["acked_longest_gap_s"] == 7.0  # from 102 to 109
    assert faults["consumed_longest_gap_s"] == 7.0  # from 103 to the healing at 110
    assert faults["readings"] == 0 and faults["readings_longest_gap_s"] == 10.0  # none at all
    assert healed["commits_longest_gap_s"] == 2.5  # from the healing at 110 to 112.5


def test_a_group_stalled_under_faults_shows_in_the_progress_line() -> None:
    w = _workload()
    w.seen.times["consumed"] = [(c, n) for c, n in w.seen.times["consumed"] if c >= w.healed]
    line = progress_line(w.phases())
    assert line.startswith("faults (10 s): acknowledged 3 (0/s, longest stall 7.0 s), "
                           "consumed 0 (0/s, longest stall 10.0 s), commits 1, offsets read 0;")
    assert "; healed (4 s): acknowledged 1" in line
