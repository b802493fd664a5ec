"""Merge ON and OFF events into one polarity (0), for single-channel networks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from spikecast.runtime.transforms._check import require_events


def merge_polarity(events: np.ndarray) -> np.ndarray:
    """A copy of ``events`` with every polarity set to 0."""
    out = require_events(events).copy()
    out["p"] = 0
    return out


@dataclass(frozen=True)
class MergePolarity:
    """Set every polarity to 0."""

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return merge_polarity(events)
