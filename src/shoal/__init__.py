"""Shoal: from one process to a fault-tolerant distributed system."""

__version__ = "0.1.0"
