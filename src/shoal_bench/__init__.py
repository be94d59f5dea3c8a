"""Benchmarks behind `shoal bench` and `make bench`: each figure is a median of repeats, and
comparisons run the reference system on the same machine in the same run.

A package of its own beside `shoal`, installed by the same pyproject: `import shoal` never
loads it, and `shoal bench` imports it when it runs. It holds the harnesses (core.py, kv.py,
loadgen.py, shoal_driver.py, etcd.py, gateway.py) and debian.py, the installer of the
reference tools (etcd, etcdctl, HAProxy, wrk) that the benchmarks and the etcd tests use."""
