"""The node runtime: drives a consensus core with real storage, a real network and timers."""
