"""Event transforms: frozen dataclasses over pure functions, one operation per module.

Every function returns a new array (``time_window`` a view) and never mutates its
input; the dataclasses only hold parameters, checked when they are built.
"""

from __future__ import annotations

from spikecast.runtime.transforms.bin import Bin, bin_events
from spikecast.runtime.transforms.crop import CenterCrop, Crop, crop
from spikecast.runtime.transforms.downsample import Downsample, downsample, downsampled_size
from spikecast.runtime.transforms.merge_polarity import MergePolarity, merge_polarity
from spikecast.runtime.transforms.time_window import TimeWindow, time_window

__all__ = [
    "Bin",
    "CenterCrop",
    "Crop",
    "Downsample",
    "MergePolarity",
    "TimeWindow",
    "bin_events",
    "crop",
    "downsample",
    "downsampled_size",
    "merge_polarity",
    "time_window",
]
