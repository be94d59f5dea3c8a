"""Real-process fault testing: a cluster of node processes, a workload that records a
history, a nemesis that kills, pauses, restarts and partitions, and the checker's verdict."""
