"""Range shards, each a consensus group: the shard map (map.py), routing by key (router.py),
and splits (split.py)."""
