"""Deterministic simulation: one seed reproduces a whole run of a cluster under faults."""

from .world import SimConfig, Violation, World

__all__ = ["SimConfig", "Violation", "World"]
