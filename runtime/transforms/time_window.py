"""Slice events to the half-open sensor-time window [t0_us, t1_us)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from spikecast.converters.errors import ParameterError
from spikecast.runtime.transforms._check import require_events, require_int


def time_window(events: np.ndarray, *, t0_us: int, t1_us: int) -> np.ndarray:
    """Events with t0_us <= t < t1_us.

    ``events`` must be sorted by t, as every reader and packet decoder
    guarantees; the slice is found by binary search and is a view, not a copy.
    """
    require_events(events)
    t0_us = require_int("t0_us", t0_us, low=-(2**63))
    t1_us = require_int("t1_us", t1_us, low=-(2**63))
    if t1_us < t0_us:
        raise ParameterError(f"t1_us ({t1_us}) is before t0_us ({t0_us})")
    t = events["t"]
    lo, hi = np.searchsorted(t, [t0_us, t1_us], side="left")
    return events[int(lo) : int(hi)]


@dataclass(frozen=True)
class TimeWindow:
    """Keep events in [t0_us, t1_us)."""

    t0_us: int
    t1_us: int

    def __post_init__(self) -> None:
        if self.t1_us < self.t0_us:
            raise ParameterError(f"t1_us ({self.t1_us}) is before t0_us ({self.t0_us})")

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return time_window(events, t0_us=self.t0_us, t1_us=self.t1_us)
