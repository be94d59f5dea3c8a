"""Pure load-balancing pickers: no I/O, no clock, randomness injected. See docs/balance.md."""

from .base import Backend, Picker, Request
from .hashing import key_hash
from .registry import PICKERS, make_picker, options

__all__ = ["PICKERS", "Backend", "Picker", "Request", "key_hash", "make_picker", "options"]
