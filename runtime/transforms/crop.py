"""Keep the events inside a box and move them to the box's origin (as tonic does)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from spikecast.converters.errors import ParameterError
from spikecast.runtime.transforms._check import require_events, require_int


def crop(events: np.ndarray, *, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """Events with x0 <= x < x0 + width and y0 <= y < y0 + height, coordinates
    shifted so the box's corner becomes (0, 0). Returns a new array."""
    require_events(events)
    x0 = require_int("x0", x0, low=0, high=0xFFFF)
    y0 = require_int("y0", y0, low=0, high=0xFFFF)
    width = require_int("width", width, low=1)
    height = require_int("height", height, low=1)
    x = events["x"].astype(np.int64)
    y = events["y"].astype(np.int64)
    keep = (x >= x0) & (x < x0 + width) & (y >= y0) & (y < y0 + height)
    out = events[keep]  # boolean indexing copies
    out["x"] -= x0
    out["y"] -= y0
    return out


@dataclass(frozen=True)
class Crop:
    """Crop to the box whose top-left corner is (x0, y0); output is width x height."""

    x0: int
    y0: int
    width: int
    height: int

    def __post_init__(self) -> None:
        require_int("x0", self.x0, low=0, high=0xFFFF)
        require_int("y0", self.y0, low=0, high=0xFFFF)
        require_int("width", self.width, low=1, high=0xFFFF)
        require_int("height", self.height, low=1, high=0xFFFF)

    @property
    def output_size(self) -> tuple[int, int]:
        return self.width, self.height

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return crop(events, x0=self.x0, y0=self.y0, width=self.width, height=self.height)


@dataclass(frozen=True)
class CenterCrop:
    """Crop a (width, height) box from the middle of a sensor of ``sensor_size``.

    An odd margin leaves the extra pixel on the right/bottom, as tonic does.
    """

    sensor_size: tuple[int, int]
    size: tuple[int, int]

    def __post_init__(self) -> None:
        for name, (w, h) in (("sensor_size", self.sensor_size), ("size", self.size)):
            require_int(f"{name} width", w, low=1, high=0xFFFF)
            require_int(f"{name} height", h, low=1, high=0xFFFF)
        if self.size[0] > self.sensor_size[0] or self.size[1] > self.sensor_size[1]:
            raise ParameterError(f"crop size {self.size} exceeds sensor size {self.sensor_size}")

    @property
    def box(self) -> Crop:
        (sw, sh), (w, h) = self.sensor_size, self.size
        return Crop((sw - w) // 2, (sh - h) // 2, w, h)

    @property
    def output_size(self) -> tuple[int, int]:
        return self.size

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return self.box(events)
