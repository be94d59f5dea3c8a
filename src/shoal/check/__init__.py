"""Histories and checkers: is what a key-value store did linearizable? Which isolation
anomalies did its transactions show (elle.py)?"""

from .elle import CONSISTENCY_MODELS, TxnCheckResult, check_txn_history
from .history import Event, HistoryError, dump_history, load_history
from .linearizability import CheckResult, check_history
from .txn_anomalies import Anomaly
from .txn_history import MODELS as TXN_MODELS
from .txn_history import MicroOp, Txn, TxnEvent, dump_txn_history, load_txn_history

__all__ = [
    "CONSISTENCY_MODELS",
    "TXN_MODELS",
    "Anomaly",
    "CheckResult",
    "Event",
    "HistoryError",
    "MicroOp",
    "Txn",
    "TxnCheckResult",
    "TxnEvent",
    "check_history",
    "check_txn_history",
    "dump_history",
    "dump_txn_history",
    "load_history",
    "load_txn_history",
]
