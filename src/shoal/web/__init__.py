"""Seeing the cluster: the live dashboard and the simulator's timelines.

| module        | what                                                                   |
|---------------|------------------------------------------------------------------------|
| events.py     | pure: what changed between two views of the cluster (the event list)   |
| feed.py       | views taken at a steady pace, streamed to viewers as server-sent events |
| dashboard.py  | the page's routes, served by every node and by `shoal dashboard`       |
| aggregator.py | `shoal dashboard`: every node's /status polled into one view           |
| timeline.py   | `shoal sim --timeline`: one self-contained page replaying a run        |
| assets/       | the hand-written JavaScript and CSS the pages ship (no CDN, no build)  |
"""
