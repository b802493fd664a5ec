"""Spatial downsampling: integer division of coordinates by a factor."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from spikecast.runtime.transforms._check import require_events, require_int


def downsample(events: np.ndarray, *, factor: int) -> np.ndarray:
    """Events with x // factor, y // factor (a new array; times and polarity kept).

    Several events may land on one output pixel; they all stay, so counts add up.
    """
    require_events(events)
    factor = require_int("factor", factor, low=1)
    out = events.copy()
    out["x"] //= factor
    out["y"] //= factor
    return out


def downsampled_size(width: int, height: int, factor: int) -> tuple[int, int]:
    """Sensor size after ``downsample``: ceil(width / factor) x ceil(height / factor)."""
    factor = require_int("factor", factor, low=1)
    return -(-width // factor), -(-height // factor)


@dataclass(frozen=True)
class Downsample:
    """Divide coordinates by ``factor``; ``output_size`` maps the sensor size."""

    factor: int

    def __post_init__(self) -> None:
        require_int("factor", self.factor, low=1)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        return downsampled_size(width, height, self.factor)

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return downsample(events, factor=self.factor)
