"""Transactions across shards (two-phase commit over consensus groups) and, for state kept
outside the store, TCC and sagas."""
