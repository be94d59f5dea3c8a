"""Histories and checkers: is what a key-value store did linearizable?"""

from .history import Event, HistoryError, dump_history, load_history
from .linearizability import CheckResult, check_history

__all__ = ["CheckResult", "Event", "HistoryError", "check_history", "dump_history", "load_history"]
