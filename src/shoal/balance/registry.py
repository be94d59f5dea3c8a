"""Pickers by name."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from .base import Backend, Picker
from .bounded import BoundedLoadPicker
from .ewma import PeakEwmaPicker
from .iphash import IpHashPicker
from .jump import JumpPicker
from .least import LeastConnectionsPicker, LeastRequestPicker
from .maglev import MaglevPicker
from .random_ import RandomPicker, WeightedRandomPicker
from .rendezvous import RendezvousPicker
from .ring import RingHashPicker
from .round_robin import RoundRobinPicker, SmoothWeightedRoundRobinPicker
from .shortest import ShortestResponsePicker

PICKERS: dict[str, type[Picker]] = {
    cls.name: cls
    for cls in (
        RandomPicker,
        WeightedRandomPicker,
        RoundRobinPicker,
        SmoothWeightedRoundRobinPicker,
        LeastConnectionsPicker,
        LeastRequestPicker,
        PeakEwmaPicker,
        ShortestResponsePicker,
        IpHashPicker,
        RingHashPicker,
        MaglevPicker,
        RendezvousPicker,
        JumpPicker,
        BoundedLoadPicker,
    )
}


def options(name: str) -> list[str]:
    """The keyword options picker `name` accepts."""
    params = inspect.signature(PICKERS[name]).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def make_picker(name: str, backends: Sequence[Backend], **opts: Any) -> Picker:
    """A picker by registry name, e.g. make_picker("least-request", backends, rng=Random(1))."""
    cls = PICKERS.get(name)
    if cls is None:
        raise ValueError(f"unknown picker {name!r}; valid names: {', '.join(PICKERS)}")
    try:
        inspect.signature(cls).bind(backends, **opts)
    except TypeError as e:
        raise ValueError(f"{name}: {e}; its options are: {', '.join(options(name))}") from None
    return cls(backends, **opts)
