"""Launchers: Shoal on this one machine.

- cluster.py: `LocalProcessCluster`, real `shoal node` processes with their data dirs and logs
  under one root (what `shoal cluster up`, `shoal demo`, the torture test and the benchmarks
  run), and `free_ports`.
- demo.py: `shoal demo`, a 3-node cluster that loses its leader to kill -9 under load.

Nothing here is imported by `import shoal`; import the module you need."""
